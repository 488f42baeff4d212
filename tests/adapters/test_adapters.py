"""Adapters: one mini-batch per ZO iteration on every evaluation path, counting, errors."""

import collections
import concurrent.futures
import types
import warnings

import nevergrad as ng
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import nevergrad_zonp
from nevergrad_zonp import HardwareAdapter, MiniBatches, ModelAdapter
from nevergrad_zonp.optimizers.zeroth_order import InvalidQueryWarning

from support import RecordingNetwork, classification_data, make_hardware, small_classifier

Q = 5


#: Six full iterations and the final query, which evaluates the last iterate alone.
BUDGET = 6 * (Q + 1) + 1


def assert_one_batch_per_iteration(network: RecordingNetwork, num_iterations: int, asked_ahead: bool = False) -> None:
    per_batch = collections.Counter(ids for _, ids in network.seen)
    if asked_ahead:
        # An iteration asked before the previous one was told starts from the same point and
        # shares its batch (the adapter finds a batch from a point's value): whole iterations per batch.
        assert sum(per_batch.values()) == num_iterations * (Q + 1) + 1
        assert sorted(count % (Q + 1) for count in per_batch.values()) == [0] * (len(per_batch) - 1) + [1]
        return
    assert len(per_batch) == num_iterations + 1  # 10 batches per epoch > iterations: all distinct
    assert sorted(per_batch.values()) == [1] + [Q + 1] * num_iterations


def zoi(adapter: HardwareAdapter, budget: int, num_workers: int = 1):
    return nevergrad_zonp.ZerothOrder(sampler="isotropic", num_directions=Q)(
        parametrization=adapter.parametrization, budget=budget, num_workers=num_workers
    )


def test_sequential_minimize_gives_each_iteration_one_batch():
    adapter, network = make_hardware()
    zoi(adapter, BUDGET).minimize(adapter)
    assert_one_batch_per_iteration(network, 6)


@pytest.mark.parametrize("batch_mode", [True, False])
def test_thread_executor_gives_each_iteration_one_batch(batch_mode):
    adapter, network = make_hardware()
    opt = zoi(adapter, BUDGET, num_workers=Q + 1)
    with concurrent.futures.ThreadPoolExecutor(max_workers=Q + 1) as executor:
        opt.minimize(adapter, executor=executor, batch_mode=batch_mode)
    assert_one_batch_per_iteration(network, 6, asked_ahead=not batch_mode)


def test_vectorized_path_evaluates_an_iteration_in_one_call_on_one_batch():
    adapter, network = make_hardware()
    calls = []
    original = network.__call__
    network_call = lambda thetas, inputs: calls.append(len(thetas)) or original(thetas, inputs)  # noqa: E731
    adapter._outputs_fn = network_call
    nevergrad_zonp.minimize_vectorized(zoi(adapter, BUDGET), adapter)
    assert calls == [Q + 1] * 6 + [1]
    assert_one_batch_per_iteration(network, 6)


def test_natural_perturbations_use_the_iterations_batch_for_the_jacobian():
    adapter, network = make_hardware()
    opt = nevergrad_zonp.ZerothOrder(num_directions=Q, fisher_period=2)(parametrization=adapter.parametrization, budget=120)
    nevergrad_zonp.minimize_vectorized(opt, adapter)
    per_batch = collections.Counter(ids for _, ids in network.seen)
    jacobian = 6 + 1
    full = [v for v in per_batch.values() if v in (Q + 1, Q + 1 + jacobian)]
    assert len(per_batch) - len(full) <= 2  # the shortened last iteration and the final iterate
    assert sum(per_batch.values()) == 120 == opt.num_queries
    assert opt.num_fisher_updates == sum(v == Q + 1 + jacobian for v in per_batch.values()) > 0


def test_counters_equal_the_queries_actually_made():
    adapter, network = make_hardware(batch_size=8)
    opt = nevergrad_zonp.ZerothOrder(num_directions=Q, fisher_period=3)(parametrization=adapter.parametrization, budget=200)
    nevergrad_zonp.minimize_vectorized(opt, adapter)
    assert adapter.queries == network.rows == opt.num_queries
    assert adapter.sample_forwards == 8 * network.rows
    before = adapter.queries
    adapter.evaluate(opt.recommend())  # reporting is not training cost
    assert adapter.queries == before
    adapter.reset_counters()
    assert adapter.queries == adapter.sample_forwards == 0


def test_unassigned_vectors_use_the_given_or_default_key():
    adapter, network = make_hardware()
    theta = np.ones(6)
    adapter.loss_batch([theta], key=3)
    adapter(theta)
    adapter.default_key = 3
    adapter(theta)
    ids = [seen for _, seen in network.seen]
    assert ids[0] == ids[2] != ids[1]


def test_bad_outputs_and_vectors_are_named():
    adapter, _ = make_hardware()
    with pytest.raises(ValueError, match=r"expected \(6,\)"):
        adapter(np.zeros(5))
    with pytest.raises(ValueError, match="outside"):
        adapter.block_outputs(np.zeros(6), 4, np.zeros((2, 3)), 0)
    bad = HardwareAdapter(lambda t, x: torch.zeros(len(t), 3), np.zeros(6), adapter.data, output="gaussian")
    with pytest.raises(ValueError, match=r"expected \(1, 80"):
        bad(np.zeros(6))
    with pytest.raises(ValueError, match="output model"):
        HardwareAdapter(lambda t, x: t, np.zeros(2), adapter.data, output="softmax")
    with pytest.raises(ValueError, match="NaN"):
        HardwareAdapter(lambda t, x: t, np.array([np.nan]), adapter.data, output="gaussian")


def test_nan_outputs_give_nan_losses_that_the_optimizer_survives():
    adapter, network = make_hardware()
    adapter._outputs_fn = lambda thetas, inputs: network(thetas, inputs) * (np.nan if np.random.rand() < 0.3 else 1.0)
    opt = ng.optimizers.registry["ZONP"](parametrization=adapter.parametrization, budget=300)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nevergrad_zonp.minimize_vectorized(opt, adapter)
    assert np.all(np.isfinite(opt.recommend().value))


# ----- ModelAdapter ------------------------------------------------------------------------
def test_model_adapter_flattens_in_named_order_and_loads_back():
    model = small_classifier()
    adapter = ModelAdapter(model, classification_data(), output="categorical")
    expected = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).double().numpy()
    np.testing.assert_array_equal(adapter.theta0, expected)
    adapter.load(adapter.theta0 + 1.0)
    np.testing.assert_allclose(torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy(), expected + 1, rtol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the device machine)")
def test_a_model_on_a_gpu_is_queried_there_with_the_cpus_losses():
    model, data = small_classifier(), classification_data()
    on_cpu = ModelAdapter(model, data, output="categorical", batch_size=None)
    on_gpu = ModelAdapter(_copy_to(model, "cuda"), data, output="categorical", batch_size=None)
    assert on_gpu.device.type == "cuda"
    np.testing.assert_array_equal(on_gpu.theta0, on_cpu.theta0)
    deltas = 0.1 * np.random.RandomState(0).normal(size=(4, 7))
    np.testing.assert_allclose(
        on_gpu.block_losses(on_gpu.theta0, 3, deltas, 0), on_cpu.block_losses(on_cpu.theta0, 3, deltas, 0), rtol=1e-4
    )


def _copy_to(model: torch.nn.Module, device: str) -> torch.nn.Module:
    import copy

    return copy.deepcopy(model).to(device)


def test_model_adapter_batched_outputs_equal_single_forwards():
    model = small_classifier()
    data = classification_data()
    adapter = ModelAdapter(model, data, output="categorical", batch_size=None)
    thetas = adapter.theta0[None] + 0.1 * np.random.RandomState(0).normal(size=(4, adapter.dimension))
    losses = adapter.loss_batch(list(thetas))
    for theta, loss in zip(thetas, losses):
        adapter.load(theta)
        with torch.no_grad():
            expected = torch.nn.functional.cross_entropy(model(data[0]), data[1])
        assert loss == pytest.approx(float(expected), rel=1e-5)


def test_single_setting_path_matches_the_batched_one_and_needs_no_vmap():
    adapter = ModelAdapter(small_classifier(), classification_data(), output="categorical", batch_size=None)
    thetas = adapter.theta0[None] + 0.1 * np.random.RandomState(2).normal(size=(3, adapter.dimension))
    batched = adapter.loss_batch(list(thetas))
    adapter._vmap_ok = False  # a single setting must not depend on vmap at all
    single = [adapter.loss_batch([theta])[0] for theta in thetas]
    np.testing.assert_allclose(single, batched, rtol=1e-6)
    assert adapter.queries == 6


def test_block_outputs_batch_only_the_touched_tensors_and_match_full_evaluation():
    model = small_classifier()
    adapter = ModelAdapter(model, classification_data(), output="categorical", batch_size=None)
    deltas = 0.05 * np.random.RandomState(1).normal(size=(3, 7))
    start = 18  # spans the end of the first weight matrix and its bias
    out = adapter.block_outputs(adapter.theta0, start, deltas, 0)
    thetas = np.repeat(adapter.theta0[None], 3, axis=0)
    thetas[:, start : start + 7] += deltas
    full = adapter._forward(torch.from_numpy(thetas), classification_data()[0]).numpy()
    np.testing.assert_allclose(out, full, rtol=1e-5, atol=1e-6)


def test_model_adapter_parameter_subset_keeps_the_rest_fixed():
    model = small_classifier()
    adapter = ModelAdapter(model, classification_data(), output="categorical", parameters=["2.weight", "2.bias"])
    assert adapter.dimension == 5 * 3 + 3
    frozen = model[0].weight.detach().clone()
    adapter.load(adapter.theta0 + 1)
    assert torch.equal(model[0].weight, frozen)
    with pytest.raises(ValueError, match="unknown parameter"):
        ModelAdapter(model, classification_data(), output="categorical", parameters=["3.weight"])


def test_model_that_cannot_vmap_falls_back_to_a_loop_with_a_warning():
    class ItemModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(1))

        def forward(self, x):
            return x[:, :3] * float(self.scale.item())  # .item() is not vmappable

    adapter = ModelAdapter(ItemModel(), classification_data(), output="categorical", batch_size=None)
    with pytest.warns(RuntimeWarning, match="vmap"):
        losses = adapter.loss_batch([np.array([1.0]), np.array([2.0])])
    assert losses[0] != losses[1]


def test_data_as_dataset_and_dataloader():
    inputs, targets = classification_data()
    for data in [TensorDataset(inputs, targets), DataLoader(TensorDataset(inputs, targets), batch_size=10)]:
        adapter = ModelAdapter(small_classifier(), data, output="categorical", batch_size=10)
        opt = ng.optimizers.registry["ZONP"](parametrization=adapter.parametrization, budget=200)
        nevergrad_zonp.minimize_vectorized(opt, adapter)
        assert adapter.sample_forwards == 10 * adapter.queries
        assert set(adapter.evaluate(opt.recommend())) == {"loss", "accuracy"}


def test_minibatches_are_a_function_of_the_key():
    inputs, targets = classification_data(25)
    batches = MiniBatches((inputs, targets), batch_size=10, seed=4)
    assert batches.batches_per_epoch == 2
    first = batches.batch(0)[1]
    batches.batch(5)
    assert torch.equal(batches.batch(0)[1], first)
    epoch0 = torch.cat([batches.batch(0)[0], batches.batch(1)[0]])
    assert len({tuple(row.tolist()) for row in epoch0}) == 20  # no sample twice within an epoch
    assert not torch.equal(batches.batch(2)[1], first)
    in_order = list(MiniBatches((inputs, targets), batch_size=10).in_order())
    assert [len(t) for _, t in in_order] == [10, 10, 5]


def test_minibatch_errors_are_named():
    inputs, targets = classification_data()
    with pytest.raises(ValueError, match="60 samples but targets hold 59"):
        MiniBatches((inputs, targets[:-1]))
    with pytest.raises(ValueError, match="empty"):
        MiniBatches((inputs[:0], targets[:0]))
    with pytest.raises(TypeError, match="DataLoader"):
        MiniBatches(np.zeros(3))
    loader = MiniBatches(DataLoader(TensorDataset(inputs, targets), batch_size=1))
    loader.batch(100)
    with pytest.raises(KeyError, match="no longer cached"):
        loader.batch(0)


def test_penalty_is_added_to_every_loss_and_not_counted():
    gen = torch.Generator().manual_seed(0)
    inputs = torch.cat([torch.arange(80.0)[:, None], torch.randn(80, 3, generator=gen)], dim=1)
    targets = torch.randn(80, 2, generator=gen)
    data = (inputs, targets)
    theta0 = np.linspace(-1.0, 1.0, 6)
    plain = HardwareAdapter(RecordingNetwork(), theta0, data, output="gaussian", batch_size=8)
    l1 = lambda thetas: 0.1 * thetas.abs().sum(dim=1)  # noqa: E731
    penalised = HardwareAdapter(RecordingNetwork(), theta0, data, output="gaussian", batch_size=8, penalty=l1)
    rng = np.random.default_rng(0)
    vectors = [theta0 + rng.normal(size=6) for _ in range(3)]
    expected = plain.loss_batch(vectors, key=2) + [0.1 * np.abs(v).sum() for v in vectors]
    np.testing.assert_allclose(penalised.loss_batch(vectors, key=2), expected, rtol=1e-12)
    deltas = rng.normal(size=(4, 3))
    block = plain.block_losses(theta0, 2, deltas, 1)
    moved = np.repeat(theta0[None], 4, axis=0)
    moved[:, 2:5] += deltas
    np.testing.assert_allclose(penalised.block_losses(theta0, 2, deltas, 1), block + 0.1 * np.abs(moved).sum(1), rtol=1e-12)
    assert penalised.queries == plain.queries == 7  # the penalty is no query
    assert penalised.evaluate()["loss"] == pytest.approx(plain.evaluate()["loss"] + 0.1 * np.abs(theta0).sum())
    # the Fisher sees outputs only: the penalty does not change them
    np.testing.assert_array_equal(penalised.block_outputs(theta0, 2, deltas, 1), plain.block_outputs(theta0, 2, deltas, 1))


def test_bad_penalties_are_named():
    data = (torch.randn(8, 4), torch.randn(8, 2))
    with pytest.raises(TypeError, match="penalty must be callable"):
        HardwareAdapter(RecordingNetwork(), np.zeros(6), data, output="gaussian", penalty=3.0)
    wrong = HardwareAdapter(RecordingNetwork(), np.zeros(6), data, output="gaussian", penalty=lambda t: t.sum())
    with pytest.raises(ValueError, match="penalty returned 1 values for 2 settings"):
        wrong.loss_batch([np.zeros(6), np.ones(6)])
    nan = HardwareAdapter(RecordingNetwork(), np.zeros(6), data, output="gaussian", penalty=lambda t: t[:, 0] / 0.0)
    assert np.isnan(nan.loss_batch([np.zeros(6)])[0])


def test_a_loss_with_a_per_setting_twin_is_evaluated_in_one_call_and_its_shape_is_checked():
    from nevergrad_zonp.tasks.equalization import equalization_task, mean_squared_error

    task = equalization_task(seed=0, n_train=300, n_test=20)
    adapter = ModelAdapter.from_task(task, on="chip", batch_size=100, seed=0)
    rng = np.random.RandomState(0)
    deltas = 0.05 * rng.normal(size=(11, 40))
    out, targets = adapter._block_query(adapter.theta0, 7, deltas, key=0)
    looped = np.array([float(mean_squared_error(row, targets)) for row in out])
    # the equalization task's batched twin gives the loop's values bit for bit (stored runs are unchanged)
    assert mean_squared_error.per_setting(out, targets).double().numpy().tobytes() == looped.tobytes()
    assert adapter._losses(out, targets).tobytes() == looped.tobytes()

    calls = []

    def loss(outputs, target):
        return ((outputs - target) ** 2).mean()

    def twin(outputs, target):
        calls.append(len(outputs))
        return ((outputs - target[None]) ** 2).reshape(len(outputs), -1).mean(dim=1)

    loss.per_setting = twin
    custom = ModelAdapter.from_task(task, on="chip", batch_size=100, seed=0)
    custom.loss = loss
    np.testing.assert_allclose(custom.block_losses(adapter.theta0, 7, deltas, key=0), looped, rtol=1e-6)
    assert calls == [11]
    loss.per_setting = lambda outputs, target: twin(outputs, target)[:-1]
    with pytest.raises(ValueError, match=r"per_setting returned shape \(10,\) for 11 settings"):
        custom.block_losses(adapter.theta0, 7, deltas, key=0)


def test_from_task_takes_any_object_with_the_attributes_of_a_task():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    data = (torch.randn(40, 4), torch.randint(0, 3, (40,)))
    task = types.SimpleNamespace(
        name="plain", model=model, chip=None, train=data, output="categorical", loss=torch.nn.functional.cross_entropy,
        metrics={"accuracy": nevergrad_zonp.adapters.accuracy},
    )
    adapter = ModelAdapter.from_task(task, on="model", batch_size=20, seed=3)
    assert adapter.model is model and adapter.loss is task.loss and adapter.metrics == task.metrics
    assert (adapter.batches.batch_size, adapter.batches.seed) == (20, 3)
    with pytest.raises(ValueError, match="task 'plain' has no chip model; use on='model'"):
        ModelAdapter.from_task(task)


# ----- threads, identical settings, dtypes, empty loaders ---------------------------------
def _mlp_adapter(**kwargs):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))
    data = (torch.randn(60, 16), torch.randint(0, 4, (60,)))
    return model, ModelAdapter(model, data, output="categorical", batch_size=60, **kwargs)


def test_model_adapter_queried_from_several_threads_gives_the_sequential_losses_and_leaves_the_module_alone():
    model, adapter = _mlp_adapter()
    before = {name: param.detach().clone() for name, param in model.named_parameters()}
    rng = np.random.default_rng(0)
    thetas = [adapter.theta0 + rng.normal(size=adapter.dimension) for _ in range(8)]
    expected = [adapter(theta) for theta in thetas]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for _ in range(10):
            assert list(pool.map(adapter, thetas)) == expected
        batches = list(pool.map(adapter.loss_batch, [thetas[:3], thetas[3:]] * 5))
    np.testing.assert_array_equal(np.concatenate(batches[:2]), adapter.loss_batch(thetas))
    for name, param in model.named_parameters():  # functional_call restored each tensor, as a Parameter
        assert isinstance(param, torch.nn.Parameter)
        torch.testing.assert_close(param.detach(), before[name], rtol=0, atol=0)


def test_identical_settings_are_evaluated_without_turning_vmap_off():
    _, adapter = _mlp_adapter()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same = adapter.loss_batch([adapter.theta0, adapter.theta0, adapter.theta0])
        none_moved = adapter.block_losses(adapter.theta0, 0, np.zeros((2, 0)), 0)
    assert adapter._vmap_ok
    np.testing.assert_allclose(same, adapter(adapter.theta0), rtol=1e-6)
    np.testing.assert_allclose(none_moved, adapter(adapter.theta0), rtol=1e-6)


def test_zonp_estimates_the_fisher_of_a_bfloat16_model():
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 3).bfloat16()
    data = (torch.randn(100, 8).bfloat16(), torch.randint(0, 3, (100,)))
    adapter = ModelAdapter(model, data, output="categorical", batch_size=50)
    assert adapter.block_outputs(adapter.theta0, 0, np.zeros((2, 3)), 0).dtype == np.float32
    optimizer = nevergrad_zonp.ZerothOrder(sampler="natural", num_directions=4, fisher_period=5)(
        parametrization=adapter.parametrization, budget=200
    )
    recommendation = nevergrad_zonp.minimize_vectorized(optimizer, adapter)
    assert optimizer.num_fisher_updates > 0 and np.all(np.isfinite(recommendation.value))


def test_an_empty_data_loader_is_refused_instead_of_looping_forever():
    data = DataLoader(TensorDataset(torch.randn(5, 3), torch.zeros(5, dtype=torch.long)), batch_size=10, drop_last=True)
    adapter = HardwareAdapter(lambda thetas, x: thetas[:, None, :1].expand(-1, len(x), 2), np.zeros(3), data, output="categorical")
    with pytest.raises(ValueError, match="data is empty: the DataLoader yielded no batch"):
        adapter(np.zeros(3))


def test_complex_outputs_need_the_complex_output_model():
    def outputs(thetas, x):
        return torch.complex(thetas[:, None, :1], thetas[:, None, 1:2]).expand(-1, len(x), 1)

    data = (torch.randn(10, 2), torch.zeros(10, 1))
    with pytest.raises(ValueError, match="outputs are complex .* use output='complex'"):
        HardwareAdapter(outputs, np.ones(2), data, output="gaussian")(np.ones(2))
    assert np.isfinite(HardwareAdapter(outputs, np.ones(2), (data[0], torch.zeros(10, 1, dtype=torch.cfloat)), output="complex")(np.ones(2)))


def test_finite_outputs_whose_jacobian_overflows_leave_the_fisher_out_and_the_run_goes_on():
    def outputs(thetas, x):
        return (1e306 * torch.sin(1e4 * thetas[:, :1]))[:, None, :].expand(-1, x.shape[0], 1)

    data = (torch.randn(20, 4), torch.randn(20))
    adapter = HardwareAdapter(outputs, np.zeros(5), data, output="gaussian", batch_size=20)
    optimizer = nevergrad_zonp.ZerothOrder(sampler="natural", num_directions=4, fisher_period=5)(
        parametrization=adapter.parametrization, budget=200
    )
    with pytest.warns(InvalidQueryWarning, match="Jacobian overflows for 20 of 20 samples"):
        recommendation = nevergrad_zonp.minimize_vectorized(optimizer, adapter)
    assert np.all(np.isfinite(recommendation.value)) and optimizer.num_fisher_updates == 0


def test_bad_values_for_load_assign_batch_parameters_and_evaluate_are_refused_by_name(monkeypatch):
    model, adapter = _mlp_adapter()
    before = {name: param.detach().clone() for name, param in model.named_parameters()}
    for bad in (np.full(adapter.dimension, np.nan), np.full(adapter.dimension, 1e300)):  # 1e300: inf in float32
        with pytest.raises(ValueError, match="load: non-finite values .*module unchanged"):
            adapter.load(bad)
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.detach(), before[name], rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"parameter vector of shape \(3,\)"):
        adapter.assign_batch(np.zeros(3), 1)
    for key in (-1, 2**70, 1.5):
        with pytest.raises(ValueError, match=r"batch key must be an integer in \[0, 2\*\*63\)"):
            adapter.assign_batch(adapter.theta0, key)
    with pytest.raises(TypeError, match=r"got the string '0.bias' \(use \['0.bias'\]\)"):
        ModelAdapter(model, (torch.randn(4, 16), torch.zeros(4, dtype=torch.long)), output="categorical", parameters="0.bias")
    scalar = HardwareAdapter(lambda thetas, x: thetas.sum(), np.zeros(3), (torch.randn(4, 2), torch.zeros(4)), output="gaussian")
    with pytest.raises(ValueError, match=r"outputs returned shape \(\); expected \(1, 4, \.\.\.\)"):
        scalar.evaluate()


def test_block_settings_that_the_memory_cannot_hold_are_refused_before_allocation(monkeypatch):
    import nevergrad_zonp.adapters.model as model_module

    _, adapter = _mlp_adapter()
    monkeypatch.setattr(model_module, "CHECKED_SETTINGS_BYTES", 1000)
    monkeypatch.setattr(model_module, "available_memory_bytes", lambda: 10_000)
    with pytest.raises(MemoryError, match=r"101 settings of \['0.weight'\] need .* GiB available: use a smaller max_block_size"):
        adapter.block_losses(adapter.theta0, 0, np.zeros((101, 100)), 0)
    adapter.block_losses(adapter.theta0, 0, np.zeros((5, 100)), 0)  # 5 x 256 x 4 bytes: fits
