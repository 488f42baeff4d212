"""The iteration-level fast path: ask a whole iteration/generation, evaluate block deltas, tell it at once.

It must give the same iterates as the per-candidate path for the same seed, keep
Nevergrad's counters, survive NaN and dump/load, mix with ``ask``/``tell``, and be
refused (or skipped) where it does not apply.
"""

import pickle
import warnings

import nevergrad as ng
import numpy as np
import pytest
import torch

import nevergrad_zonp
from nevergrad_zonp import ModelAdapter, ZerothOrder, minimize_vectorized, uses_fast_path
from nevergrad_zonp.adapters import MiniBatches
from nevergrad_zonp.optimizers import IterationRequest, cma_es

from support import classification_data, make_hardware, small_classifier

ZO_NAMES = ["ZONP", "ZOI", "ZOco"]
NES_NAMES = ["SNES", "XNES"]
BUDGETS = (1, 5, 10, 11, 12, 100, 101, 1000)


def square(values):
    """Losses of a list of vectors on a quadratic centred at 0.5."""
    return [float(np.sum((np.asarray(x) - 0.5) ** 2)) for x in values]


def classifier_adapter(seed: int = 0) -> ModelAdapter:
    return ModelAdapter(small_classifier(seed), classification_data(), output="categorical", batch_size=20, seed=seed)


#: The CMA-ES presets (not registered: built by ``cma_es``), full and separable.
CMA_PRESETS = {"CMA-full": cma_es(5, sigma0=0.3), "CMA-diagonal": cma_es(5, sigma0=0.3, diagonal=True)}


def run(name: str, objective, budget: int, fast: bool, dimension: int = 4, seed: int = 0, **settings):
    if settings:
        configured = ZerothOrder(**settings)
    elif name in CMA_PRESETS:
        configured = CMA_PRESETS[name]
    else:
        configured = ng.optimizers.registry[name]
    parametrization = objective.parametrization if hasattr(objective, "parametrization") else dimension
    optimizer = configured(parametrization=parametrization, budget=budget)
    optimizer.parametrization.random_state.seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        recommendation = minimize_vectorized(optimizer, objective, fast_path=fast)
    return optimizer, recommendation.value


@pytest.mark.parametrize("name", ZO_NAMES + NES_NAMES + list(CMA_PRESETS))
@pytest.mark.parametrize("budget", BUDGETS)
def test_same_iterates_and_counters_on_both_paths_for_a_plain_objective(name, budget):
    slow, expected = run(name, square, budget, fast=False)
    fast, value = run(name, square, budget, fast=True)
    np.testing.assert_array_equal(value, expected)
    assert fast.num_ask == slow.num_ask == budget
    assert fast.num_tell == slow.num_tell == budget
    assert np.all(np.isfinite(value))


@pytest.mark.parametrize("sampler", ["natural", "isotropic", "coordinate"])
def test_same_iterates_on_both_paths_for_a_model_adapter_with_fisher(sampler):
    settings = dict(sampler=sampler, num_directions=6, lr=0.05, max_block_size=40, fisher_period=5)
    slow_adapter, fast_adapter = classifier_adapter(), classifier_adapter()
    slow, expected = run("", slow_adapter, 400, fast=False, **settings)
    fast, value = run("", fast_adapter, 400, fast=True, **settings)
    np.testing.assert_allclose(value, expected, rtol=0, atol=1e-12)
    assert fast_adapter.queries == slow_adapter.queries == 400
    assert fast.num_fisher_queries == slow.num_fisher_queries
    if sampler == "natural":
        assert fast.num_fisher_queries > 0 and fast.num_blocks_with_fisher == slow.num_blocks_with_fisher
    assert fast.num_ask == slow.num_ask and fast.num_tell == slow.num_tell


@pytest.mark.parametrize("name", NES_NAMES + list(CMA_PRESETS))
def test_same_generations_on_both_paths_for_a_model_adapter(name):
    slow_adapter, fast_adapter = classifier_adapter(), classifier_adapter()
    _, expected = run(name, slow_adapter, 300, fast=False)
    _, value = run(name, fast_adapter, 300, fast=True)
    np.testing.assert_allclose(value, expected, rtol=0, atol=1e-12)
    assert fast_adapter.queries == slow_adapter.queries == 300


def test_block_losses_equal_the_losses_of_the_full_vectors():
    for adapter in (classifier_adapter(), make_hardware()[0]):
        rng = np.random.default_rng(0)
        theta = adapter.theta0 + 0.1 * rng.standard_normal(adapter.dimension)
        start, width = 2, min(5, adapter.dimension - 2)
        deltas = 0.01 * rng.standard_normal((4, width))
        full = np.repeat(theta[None], 4, axis=0)
        full[:, start : start + width] += deltas
        before = adapter.queries
        losses = adapter.block_losses(theta, start, deltas, key=3)
        assert adapter.queries == before + 4
        np.testing.assert_allclose(losses, adapter.loss_batch(list(full), key=3), rtol=1e-6)


def test_block_losses_name_bad_shapes():
    adapter = classifier_adapter()
    with pytest.raises(ValueError, match="outside"):
        adapter.block_losses(adapter.theta0, adapter.dimension - 1, np.zeros((2, 3)), key=0)
    with pytest.raises(ValueError, match="shape"):
        adapter.block_losses(adapter.theta0, 0, np.zeros((2, 3, 1)), key=0)
    with pytest.raises(ValueError, match="expected"):
        adapter.block_losses(np.zeros(3), 0, np.zeros((2, 1)), key=0)


def test_the_request_describes_the_iteration():
    optimizer = ZerothOrder(num_directions=5, max_block_size=3, sampler="isotropic")(parametrization=ng.p.Array(init=np.arange(7.0)), budget=100)
    request = optimizer.ask_iteration()
    assert isinstance(request, IterationRequest)
    assert request.size == 6 and optimizer.num_ask == 6 and optimizer.num_tell == 0
    np.testing.assert_array_equal(request.theta, np.arange(7.0))  # the value, not the standardized data
    np.testing.assert_array_equal(request.deltas[0], 0.0)
    assert np.all(np.linalg.norm(request.deltas[1:], axis=1) > 0)
    assert len(request.values()) == 6
    optimizer.tell_iteration(request, square(request.values()))
    assert optimizer.num_tell == 6 and optimizer.num_steps == 1


def test_paths_can_be_mixed_and_give_the_same_iterates():
    def mixed(fast_every: int) -> np.ndarray:
        optimizer = ng.optimizers.registry["ZOI"](parametrization=5, budget=300)
        optimizer.parametrization.random_state.seed(3)
        for iteration in range(25):
            if fast_every and iteration % fast_every == 0:
                request = optimizer.ask_iteration()
                optimizer.tell_iteration(request, square(request.values()))
            else:
                candidates = [optimizer.ask() for _ in range(optimizer.iteration_size)]
                for candidate, loss in zip(candidates, square([c.value for c in candidates])):
                    optimizer.tell(candidate, loss)
        assert optimizer.num_ask == optimizer.num_tell == 25 * 11
        return optimizer.provide_recommendation().value

    reference = mixed(0)
    np.testing.assert_array_equal(mixed(2), reference)
    np.testing.assert_array_equal(mixed(1), reference)


def test_a_partly_asked_iteration_must_be_finished_first():
    optimizer = ng.optimizers.registry["ZONP"](parametrization=4, budget=100)
    candidate = optimizer.ask()
    with pytest.raises(RuntimeError, match="partly asked"):
        optimizer.ask_iteration()
    rest = [optimizer.ask() for _ in range(optimizer.asks_left_in_iteration)]
    request = optimizer.ask_iteration()  # allowed: the open iteration is fully asked (told later)
    for item in [candidate, *rest]:
        optimizer.tell(item, square([item.value])[0])
    optimizer.tell_iteration(request, square(request.values()))
    assert optimizer.num_ask == optimizer.num_tell == 22


def test_bad_tells_are_refused_without_corrupting_the_state():
    optimizer = ng.optimizers.registry["ZOI"](parametrization=4, budget=100)
    request = optimizer.ask_iteration()
    with pytest.raises(ValueError, match="shape"):
        optimizer.tell_iteration(request, [1.0, 2.0])
    assert optimizer.num_tell == 0
    optimizer.tell_iteration(request, square(request.values()))
    with pytest.raises(ValueError, match="not an open iteration"):
        optimizer.tell_iteration(request, square(request.values()))
    assert optimizer.num_tell == 11 and optimizer.num_steps == 1
    nes = ng.optimizers.registry["SNES"](parametrization=4, budget=100)
    generation = nes.ask_iteration()
    assert nes.ask_iteration() is generation and nes.num_ask == generation.size  # the open one, not a second
    with pytest.raises(ValueError, match="shape"):
        nes.tell_iteration(generation, [0.0])
    nes.tell_iteration(generation, square(generation.values()))
    with pytest.raises(ValueError, match="not the open generation"):
        nes.tell_iteration(generation, square(generation.values()))
    cma = CMA_PRESETS["CMA-diagonal"](parametrization=4, budget=100)
    generation = cma.ask_iteration()
    assert cma.ask_iteration() is generation and cma.num_ask == generation.size
    with pytest.raises(ValueError, match="shape"):
        cma.tell_iteration(generation, [0.0])
    assert cma.num_tell == 0 and cma._es.countiter == 0
    cma.tell_iteration(generation, square(generation.values()))
    assert cma.num_tell == 6 and cma._es.countiter == 1
    with pytest.raises(ValueError, match="not the open generation"):
        cma.tell_iteration(generation, square(generation.values()))


def nan_cliff(values):
    """NaN beyond 0.3 in the first coordinate: the optimizer must come back from it."""
    return [float("nan") if x[0] > 0.3 else float(np.sum((np.asarray(x) - 1.0) ** 2)) for x in values]


@pytest.mark.parametrize("name", ZO_NAMES + NES_NAMES + list(CMA_PRESETS))
def test_nan_losses_on_the_fast_path_are_handled_as_on_the_per_candidate_path(name):
    _, expected = run(name, nan_cliff, 600, fast=False, dimension=3)
    fast, value = run(name, nan_cliff, 600, fast=True, dimension=3)
    np.testing.assert_array_equal(value, expected)
    assert np.all(np.isfinite(value)) and value[0] <= 0.3
    if name in ZO_NAMES:
        assert fast.num_recoveries > 0


@pytest.mark.parametrize("bad", [float("inf"), -float("inf"), 5e20, 1e30, -1e30])
@pytest.mark.parametrize("name", ZO_NAMES)
def test_infinite_clipped_and_huge_losses_on_the_fast_path_are_handled_as_on_the_per_candidate_path(name, bad):
    # tell_iteration checks the common case (all finite, below the clipping value) in two
    # reductions and only then looks at each loss: every kind of value must take the path
    # the per-candidate tell takes (left out when non-finite or clipped, kept when finite).
    def cliff(values):
        return [bad if x[0] > 0.3 else float(np.sum((np.asarray(x) - 1.0) ** 2)) for x in values]

    _, expected = run(name, cliff, 400, fast=False, dimension=3)
    _, value = run(name, cliff, 400, fast=True, dimension=3)
    np.testing.assert_array_equal(value, expected)


def test_dump_and_load_with_an_iteration_out():
    def finish(optimizer, request):
        optimizer.tell_iteration(request, square(request.values()))
        for _ in range(5):
            request = optimizer.ask_iteration()
            optimizer.tell_iteration(request, square(request.values()))
        return optimizer.provide_recommendation().value

    for name in ("ZONP", "SNES", "CMA-diagonal"):
        configured = CMA_PRESETS[name] if name in CMA_PRESETS else ng.optimizers.registry[name]
        optimizer = configured(parametrization=4, budget=500)
        optimizer.parametrization.random_state.seed(1)
        for _ in range(3):
            request = optimizer.ask_iteration()
            optimizer.tell_iteration(request, square(request.values()))
        request = optimizer.ask_iteration()
        loaded = pickle.loads(pickle.dumps(optimizer))
        np.testing.assert_array_equal(finish(loaded, request), finish(optimizer, request))
        assert loaded.num_ask == optimizer.num_ask and loaded.num_tell == optimizer.num_tell


def test_the_fast_path_is_skipped_or_refused_where_it_does_not_apply():
    bounded = ng.optimizers.registry["ZOI"](parametrization=ng.p.Array(shape=(3,)).set_bounds(-1, 1), budget=50)
    assert not bounded.supports_iterations
    assert not uses_fast_path(bounded, square)
    with pytest.raises(TypeError, match="plain ng.p.Array"):
        bounded.ask_iteration()
    with pytest.raises(ValueError, match="fast_path=True"):
        minimize_vectorized(bounded, square, fast_path=True)
    assert np.all(np.isfinite(minimize_vectorized(bounded, square).value))  # per-candidate path
    watched = ng.optimizers.registry["ZOI"](parametrization=3, budget=50)
    told = []
    watched.register_callback("tell", lambda optimizer, candidate, loss: told.append(loss))
    assert not uses_fast_path(watched, square)
    minimize_vectorized(watched, square)
    assert len(told) == 50  # the per-candidate path called the callback for every query
    cma = ng.optimizers.registry["CMA"](parametrization=3, budget=50)
    assert not uses_fast_path(cma, square)  # Nevergrad's selector, not our preset
    best = cma_es(4, recommendation="best")(parametrization=3, budget=50)
    assert not uses_fast_path(best, square)  # recommends the archive's best: needs every candidate told
    assert uses_fast_path(CMA_PRESETS["CMA-full"](parametrization=3, budget=50), square)


def test_the_harness_callback_sees_requests_and_the_adapter_counts_every_query():
    adapter = classifier_adapter()
    optimizer = ng.optimizers.registry["ZONP"](parametrization=adapter.parametrization, budget=250)
    seen = []
    minimize_vectorized(optimizer, adapter, callback=lambda opt, request, losses: seen.append((request.size, len(losses))))
    assert uses_fast_path(optimizer, adapter)
    assert all(size == count for size, count in seen)
    assert adapter.queries == 250 == sum(size for size, _ in seen) + optimizer.num_fisher_queries


def test_torch_model_trained_on_the_fast_path_lowers_its_loss():
    torch.manual_seed(0)
    adapter = classifier_adapter(seed=2)
    optimizer = nevergrad_zonp.ZONP(parametrization=adapter.parametrization, budget=3000)
    before = adapter.evaluate()["loss"]
    recommendation = minimize_vectorized(optimizer, adapter)
    assert adapter.evaluate(recommendation)["loss"] < before


def test_the_image_tasks_loss_is_evaluated_for_all_settings_at_once_and_equals_the_loop():
    import torch.nn.functional as F

    adapter = ModelAdapter(small_classifier(0), classification_data(), output="categorical", loss=F.cross_entropy, batch_size=20)
    outputs = torch.randn(7, 20, 3, generator=torch.Generator().manual_seed(0))
    targets = torch.randint(0, 3, (20,), generator=torch.Generator().manual_seed(1))
    looped = np.array([float(F.cross_entropy(row, targets)) for row in outputs])
    np.testing.assert_allclose(adapter._losses(outputs, targets), looped, rtol=1e-6)


def _block_settings_seen(adapter: ModelAdapter, theta: np.ndarray, start: int, deltas: np.ndarray) -> dict:
    """The parameter tensors the fast path hands to the batched forward (the forward itself is skipped)."""
    seen = {}

    def record(params, in_dims, count, inputs):
        seen.update(params)
        return torch.zeros(count, len(inputs), 3)

    adapter._call = record
    adapter.block_losses(theta, start, deltas, key=0)
    return seen


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_block_settings_are_the_full_vectors_rounded_to_the_parameter_dtype(dtype):
    # Written straight in the parameter dtype, they must equal the float64 vectors converted
    # by torch, bit for bit: signed zeros, subnormals and float32 overflow to inf included.
    adapter = ModelAdapter(small_classifier().to(dtype), classification_data(), output="categorical", batch_size=20)
    rng = np.random.RandomState(0)
    theta = adapter.theta0 + rng.normal(size=adapter.dimension)
    theta[[0, 19, 21]] = -0.0
    theta[[1, 22]] = 1e-310
    theta[[2, 23]] = 1e39
    start, width = 17, 8  # the end of the first weight matrix and its bias
    deltas = 1e-3 * rng.normal(size=(4, width))
    deltas[0] = 0.0
    deltas[1, 5] = -theta[start + 5]  # an exact zero
    full = np.repeat(theta[None], len(deltas), axis=0)
    full[:, start : start + width] += deltas
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        seen = _block_settings_seen(adapter, theta, start, deltas)
    touched = set()
    for name, lo, hi, shape, param_dtype in adapter._segments():
        expected = torch.from_numpy(np.ascontiguousarray(full[:, lo:hi])).to(param_dtype).reshape(len(deltas), *shape)
        if lo >= start + width or hi <= start:
            expected = expected[0]  # shared by all settings
        else:
            touched.add(name)
        got = seen[name]
        assert got.dtype == dtype and got.shape == expected.shape
        assert got.contiguous().numpy().tobytes() == expected.contiguous().numpy().tobytes(), name
    assert touched == {"0.weight", "0.bias"}


def test_minibatches_gather_the_samples_of_their_key_as_indexing_does():
    inputs, targets = classification_data(25)
    for data in [(inputs, targets), ((inputs, inputs[:, :2].clone()), targets), (inputs.t().contiguous().t(), targets)]:
        batches = MiniBatches(data, batch_size=10, seed=4)
        for key in (0, 1, 5, 1, 4, 0, 7, 2):  # epochs 0, 0, 2, 0, 2, 0, 3, 1: back to earlier epochs too
            epoch, position = divmod(key, batches.batches_per_epoch)
            permutation = torch.randperm(25, generator=torch.Generator().manual_seed(4 * 1_000_003 + epoch))
            indices = permutation[position * 10 : (position + 1) * 10]
            got_inputs, got_targets = batches.batch(key)
            expected = data[0] if isinstance(data[0], tuple) else (data[0],)
            got = got_inputs if isinstance(got_inputs, tuple) else (got_inputs,)
            for tensor, source in zip(got, expected):
                assert torch.equal(tensor, source[indices]) and tensor.stride() == source[indices].stride()
            assert torch.equal(got_targets, targets[indices])
