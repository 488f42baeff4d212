"""Every optimizer we register or configure survives the loops Nevergrad users write.

Nevergrad's README ask/tell loop at any budget, NaN/inf regions (Nevergrad's
``buggy_function``), chips that return NaN after a bad step, and executors that ask
several iterations ahead and tell out of order.
"""

import collections
import concurrent.futures
import math
import warnings

import nevergrad as ng
import numpy as np
import pytest
import torch
from nevergrad.optimization.test_optimizerlib import buggy_function

import nevergrad_zonp
from nevergrad_zonp import HardwareAdapter
from nevergrad_zonp.optimizers import cma_es

from support import make_hardware

NAMES = list(nevergrad_zonp.NAMES)
BUDGETS = (1, 5, 10, 11, 12, 100, 101, 1000)
CONFIGURED = {name: ng.optimizers.registry[name] for name in NAMES}
CONFIGURED["CMA-ES(full)"] = cma_es(10)
CONFIGURED["CMA-ES(diagonal)"] = cma_es(10, diagonal=True)


def square(x: np.ndarray) -> float:
    return float(np.sum((np.asarray(x) - 0.5) ** 2))


@pytest.mark.parametrize("name", sorted(CONFIGURED))
@pytest.mark.parametrize("budget", BUDGETS)
def test_nevergrads_readme_loop_at_any_budget(name, budget):
    optimizer = CONFIGURED[name](parametrization=2, budget=budget)
    for _ in range(optimizer.budget):
        x = optimizer.ask()
        optimizer.tell(x, square(x.value))
    recommendation = optimizer.provide_recommendation()
    assert optimizer.num_ask == budget
    assert np.all(np.isfinite(recommendation.value))
    if budget >= 100:
        assert square(recommendation.value) < square(np.zeros(2))


@pytest.mark.parametrize("name", NAMES)
def test_asks_beyond_the_budget_keep_working(name):
    optimizer = ng.optimizers.registry[name](parametrization=3, budget=20)
    for _ in range(200):
        x = optimizer.ask()
        optimizer.tell(x, square(x.value))
    assert optimizer.num_ask == 200
    assert square(optimizer.provide_recommendation().value) < square(np.zeros(3))


@pytest.mark.parametrize("name", ["ZONP", "ZOI", "ZOco"])
def test_the_last_iteration_uses_what_is_left(name):
    optimizer = ng.optimizers.registry[name](parametrization=4, budget=25)  # Q + 1 = 11: 11 + 11 + 3
    for _ in range(25):
        x = optimizer.ask()
        optimizer.tell(x, square(x.value))
    assert optimizer.num_steps == 3 and optimizer.num_queries == 25
    with_one_left = ng.optimizers.registry[name](parametrization=4, budget=12)
    for _ in range(11):
        x = with_one_left.ask()
        with_one_left.tell(x, square(x.value))
    iterate = with_one_left._x.copy()
    last = with_one_left.ask()  # one query left: the iterate itself, harmless to evaluate
    np.testing.assert_array_equal(last.get_standardized_data(reference=with_one_left.parametrization), iterate)
    with_one_left.tell(last, square(last.value))
    np.testing.assert_array_equal(with_one_left.provide_recommendation().value, last.value)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("seed", range(5))
def test_buggy_function_recommendation_is_finite_and_good(name, seed):
    """Nevergrad's ``test_infnan`` criterion (budget 70, dimension 2), on fixed seeds."""
    param = ng.p.Array(shape=(2,))
    param.random_state.seed(seed)
    optimizer = ng.optimizers.registry[name](parametrization=param, budget=70)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        recommendation = optimizer.minimize(buggy_function)
    assert buggy_function(recommendation.value) < 2


@pytest.mark.parametrize("name", ["ZONP", "ZOI", "ZOco"])
def test_an_iterate_in_a_nan_region_is_left_for_the_last_finite_one(name):
    """A loss that is NaN beyond x > 1 (where the slope still points): the iterate comes back."""

    def cliff(x: np.ndarray) -> float:
        return float("nan") if np.any(x > 1.0) else float(np.sum((x - 3.0) ** 2))

    param = ng.p.Array(shape=(3,))
    param.random_state.seed(0)
    sampler = {"ZONP": "natural", "ZOI": "isotropic", "ZOco": "coordinate"}[name]
    optimizer = nevergrad_zonp.ZerothOrder(sampler=sampler, lr=0.3)(parametrization=param, budget=3000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        recommendation = optimizer.minimize(cliff)
    assert optimizer.num_recoveries > 0
    value = recommendation.value
    assert np.isfinite(cliff(value)) and np.all(value > 0.8)  # pressed against the cliff, on the safe side


class SaturatingChip:
    """A linear 'chip' whose detectors saturate: NaN outputs once any parameter leaves [-1.5, 1.5]."""

    def __init__(self) -> None:
        self.failed_settings = 0

    def __call__(self, thetas: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        out = torch.einsum("vcd,bd->vbc", thetas.reshape(len(thetas), 3, 8), inputs.double())
        broken = (thetas.abs() > 1.5).any(dim=1)
        self.failed_settings += int(broken.sum())
        out[broken] = float("nan")
        return out


def test_zonp_trains_a_chip_that_returns_nan_after_a_large_step():
    gen = torch.Generator().manual_seed(0)
    inputs = torch.randn(600, 8, generator=gen)
    true = torch.rand(3, 8, generator=gen) * 2.4 - 1.2  # inside the chip's range, some near its edge
    targets = inputs @ true.T
    chip = SaturatingChip()
    adapter = HardwareAdapter(chip, np.zeros(24), (inputs, targets), output="gaussian", batch_size=50)
    param = adapter.parametrization
    param.random_state.seed(0)
    optimizer = nevergrad_zonp.ZerothOrder(lr=0.5, fisher_period=20)(parametrization=param, budget=6000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        recommendation = optimizer.minimize(adapter)
    assert chip.failed_settings > 0 and optimizer.num_recoveries > 0
    assert optimizer.num_fisher_updates > 0 and optimizer.num_queries == adapter.queries == 6000
    start, final = adapter.evaluate()["loss"], adapter.evaluate(recommendation)["loss"]
    assert np.isfinite(final) and final < 0.1 * start


def test_thread_executor_asking_ahead_keeps_iterations_apart():
    """num_workers=4 < Q + 1: iterations overlap in flight; each still sees one mini-batch."""
    adapter, network = make_hardware()
    budget = 6 * 6 + 1  # six iterations of Q + 1 = 6 and the final iterate
    optimizer = nevergrad_zonp.ZerothOrder(sampler="isotropic", num_directions=5)(
        parametrization=adapter.parametrization, budget=budget, num_workers=4
    )
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as executor:
        optimizer.minimize(adapter, executor=executor)
    per_batch = collections.Counter(ids for _, ids in network.seen)
    # Whole iterations per batch (two iterations asked from one point before any step share
    # its batch: test_iterations_asked_ahead_from_one_point_share_its_mini_batch), plus the final iterate.
    assert sum(per_batch.values()) == budget
    assert sorted(count % 6 for count in per_batch.values()) == [0] * (len(per_batch) - 1) + [1]
    assert optimizer.num_steps == 6 and optimizer.num_queries == budget


def test_zonp_with_fisher_in_a_thread_executor_spends_exactly_the_budget():
    gen = torch.Generator().manual_seed(1)
    inputs = torch.randn(400, 8, generator=gen)
    targets = inputs @ torch.randn(8, 3, generator=gen)
    adapter = HardwareAdapter(
        lambda thetas, x: torch.einsum("vcd,bd->vbc", thetas.reshape(len(thetas), 3, 8), x.double()),
        np.zeros(24),
        (inputs, targets),
        output="gaussian",
        batch_size=40,
    )
    # Weights of order 1 and ~160 Adam steps: the network default (lr 0.02) would travel too little.
    optimizer = nevergrad_zonp.ZerothOrder(num_directions=5, fisher_period=7, lr=0.1)(
        parametrization=adapter.parametrization, budget=997, num_workers=4
    )
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as executor:
        recommendation = optimizer.minimize(adapter, executor=executor)
    assert optimizer.num_fisher_queries > 0
    assert optimizer.num_queries == adapter.queries == 997
    assert adapter.evaluate(recommendation)["loss"] < 0.5 * adapter.evaluate()["loss"]


@pytest.mark.parametrize("budget", [11, 100, 997])
def test_minimize_and_minimize_vectorized_spend_exactly_the_budget_with_fisher(budget):
    for vectorized in (False, True):
        adapter, _ = make_hardware()
        optimizer = nevergrad_zonp.ZerothOrder(num_directions=5, fisher_period=3)(
            parametrization=adapter.parametrization, budget=budget
        )
        if vectorized:
            nevergrad_zonp.minimize_vectorized(optimizer, adapter)
        else:
            optimizer.minimize(adapter)
        assert optimizer.num_queries == adapter.queries == budget
        if budget > 100:
            assert optimizer.num_fisher_queries > 0


def test_iterations_asked_ahead_from_one_point_share_its_mini_batch():
    """Two open iterations with the same base point: the adapter knows a point's batch by its value,
    so both must use one batch, or a base evaluated late would be scored on the other's batch."""
    adapter, _ = make_hardware()
    optimizer = nevergrad_zonp.ZerothOrder(sampler="isotropic", num_directions=2)(
        parametrization=adapter.parametrization, budget=60, num_workers=6
    )
    optimizer.attach(adapter)
    keys_by_iteration = collections.defaultdict(set)
    while optimizer.num_ask < 60:
        asked = [optimizer.ask() for _ in range(6)]  # two iterations, neither told yet
        iterations = [optimizer._pending[candidate.uid][0] for candidate in asked]
        for candidate, iteration in reversed(list(zip(asked, iterations))):  # evaluated lazily, last first
            keys_by_iteration[iteration].add(adapter.batch_key(candidate.value))
            optimizer.tell(candidate, adapter(candidate.value))
    assert len(keys_by_iteration) >= 20  # the budget's last queries make short iterations
    assert all(len(keys) == 1 for keys in keys_by_iteration.values())
    assert optimizer.num_steps >= 19


def sphere(x):
    return float(np.sum(x**2))


def test_a_dump_taken_inside_minimize_does_not_stop_asks_after_load(tmp_path):
    path = tmp_path / "opt.pkl"
    optimizer = ng.optimizers.registry["ZOI"](parametrization=3, budget=22)
    optimizer.register_callback("tell", ng.callbacks.OptimizerDump(path))
    optimizer.minimize(sphere)
    loaded = type(optimizer).load(path)
    for _ in range(15):  # beyond the budget, as ask/tell users may
        candidate = loaded.ask()
        loaded.tell(candidate, float(np.sum(candidate.value**2)))


def test_an_iteration_begun_before_a_recovery_is_not_asked_further():
    optimizer = ng.optimizers.registry["ZOI"](parametrization=2, budget=200, num_workers=22)
    first = [optimizer.ask() for _ in range(11)]
    second = [optimizer.ask() for _ in range(3)]  # the next iteration, partly asked
    for candidate in first:
        optimizer.tell(candidate, math.nan)  # a non-finite base loss: recovery
    assert optimizer.num_recoveries == 1
    third = optimizer.ask()  # a fresh iteration, not the rest of the stale one
    assert optimizer._pending[third.uid] == (2, 0)
    assert optimizer.asks_left_in_iteration == optimizer.iteration_size - 1  # of the fresh one
    for candidate in second:  # the stale iteration is finished by its 3 asked points and discarded
        optimizer.tell(candidate, 1.0)
    assert sorted(optimizer._iterations) == [2] and optimizer.num_steps == 0


def _below(x: np.ndarray) -> bool:
    return bool(x[0] <= 0.3)


@pytest.mark.parametrize("name", NAMES)
def test_constraints_are_refused_with_an_error_naming_them(name):
    constrained = ng.p.Array(shape=(2,))
    constrained.register_cheap_constraint(_below)
    with pytest.raises(ValueError, match="does not support constraints .*add a penalty"):
        ng.optimizers.registry[name](constrained, budget=50)
    nested = ng.p.Instrumentation(constrained, y=ng.p.Scalar())
    with pytest.raises(ValueError, match="registered on 0"):
        ng.optimizers.registry[name](nested, budget=50)
    later = ng.p.Array(shape=(2,))
    optimizer = ng.optimizers.registry[name](later, budget=50)
    later.register_cheap_constraint(_below)  # after construction: refused at the first ask
    with pytest.raises(ValueError, match="does not support constraints"):
        optimizer.ask()


@pytest.mark.parametrize("name", NAMES)
def test_finite_difference_optimizers_refuse_stochastic_and_accept_discrete_parametrizations_silently(name):
    choice = ng.p.Instrumentation(ng.p.Array(shape=(3,)), c=ng.p.Choice(["a", "b", "c"]))
    integer = ng.p.Scalar(lower=0, upper=10).set_integer_casting()
    if name not in ("SNES", "XNES"):  # sampling methods take Nevergrad's stochastic choices as they are
        with pytest.raises(ValueError, match=r"finite differences .*samples its value \(ng.p.Choice\)"):
            ng.optimizers.registry[name](choice, budget=50)
        choice = ng.p.Instrumentation(ng.p.Array(shape=(3,)), c=ng.p.Choice(["a", "b", "c"], deterministic=True))
    for parametrization in (choice, integer):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            optimizer = ng.optimizers.registry[name](parametrization, budget=20)
        optimizer.minimize(lambda *args, **kwargs: 0.0)


@pytest.mark.parametrize("name", [name for name in NAMES if name not in ("SNES", "XNES")])
@pytest.mark.parametrize("workers", [1, 11, 60])
def test_the_recommendation_sees_the_steps_of_iterations_asked_ahead_of_their_tells(name, workers):
    noisy = ng.p.Array(shape=(3,))
    noisy.function.deterministic = False  # the iterate is recommended (not the best base point seen)
    optimizer = ng.optimizers.registry[name](noisy, budget=60, num_workers=workers)
    optimizer.parametrization.random_state.seed(0)
    asked = collections.deque(optimizer.ask() for _ in range(workers))
    last_told = None
    while asked:
        candidate = asked.popleft()
        optimizer.tell(candidate, square(candidate.value))
        last_told = candidate.value
        if optimizer.num_ask < optimizer.budget:
            asked.append(optimizer.ask())
    recommendation = optimizer.provide_recommendation().value
    np.testing.assert_array_equal(recommendation, optimizer._x)  # every step taken is in it
    if workers == 1:  # sequential: the budget's last query was the final iterate alone, as before
        np.testing.assert_array_equal(recommendation, last_told)
    else:  # asked ahead: the final iterate was never queried, the anchor lags behind it
        assert not np.array_equal(recommendation, optimizer._recovery.anchor)


@pytest.mark.parametrize("workers", [1, 4])
def test_queries_asked_and_never_told_are_warned_of_and_a_nan_tell_keeps_the_run_moving(workers):
    from nevergrad_zonp.optimizers.zeroth_order import UntoldQueriesWarning

    def run(skip_tell):
        optimizer = ng.optimizers.registry["ZOI"](3, budget=400, num_workers=workers)
        optimizer.parametrization.random_state.seed(0)
        for step in range(optimizer.budget):
            candidate = optimizer.ask()
            if step % 7 == 6:  # an evaluation failed
                if skip_tell:
                    continue
                optimizer.tell(candidate, math.nan)
            else:
                optimizer.tell(candidate, square(candidate.value))
        return optimizer

    with pytest.warns(UntoldQueriesWarning, match="asked but never told"):
        skipped = run(skip_tell=True)
    assert skipped.num_steps == 0  # every iteration missed a tell
    with warnings.catch_warnings():
        warnings.simplefilter("error", UntoldQueriesWarning)
        told = run(skip_tell=False)
    assert told.num_steps > 20 and square(told.provide_recommendation().value) < square(np.zeros(3))


def test_queries_below_the_objectives_resolution_are_warned_of():
    from nevergrad_zonp.optimizers.zeroth_order import FlatQueriesWarning

    def quantized(x):  # a chip whose setting has a resolution of 0.1
        return float(np.sum((np.round(np.asarray(x) * 10) / 10 - 0.55) ** 2))

    with pytest.warns(FlatQueriesWarning, match="every query gave exactly the base loss: the displacement .*mu = 0.001"):
        ng.optimizers.registry["ZOI"](4, budget=200).minimize(quantized)
    # Seeded: whether every query of a float16 model rounds to its base loss depends on its
    # weights and data (3 of 8 seeds at the default mu; unseeded, the test failed or passed
    # with the torch random state the tests before it left).
    with torch.random.fork_rng():
        torch.manual_seed(2)
        half = torch.nn.Linear(6, 3).half()
        data = (torch.randn(40, 6).half(), torch.randint(0, 3, (40,)))
    adapter = nevergrad_zonp.ModelAdapter(half, data, output="categorical")
    optimizer = nevergrad_zonp.ZerothOrder(sampler="isotropic")(adapter.parametrization, 200)
    optimizer.parametrization.random_state.seed(0)
    with pytest.warns(FlatQueriesWarning):
        nevergrad_zonp.minimize_vectorized(optimizer, adapter)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FlatQueriesWarning)
        ng.optimizers.registry["ZOI"](4, budget=200).minimize(square)
        ng.optimizers.registry["ZOI"](4, budget=200).minimize(lambda x: quantized(np.asarray(x) * 1e4))  # resolved
