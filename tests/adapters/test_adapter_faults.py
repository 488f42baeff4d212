"""Adapters under bad data, bad settings and faults: each mistake refused by name, each fault transient."""

import copy
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset

from nevergrad_zonp import HardwareAdapter, MiniBatches, ModelAdapter
from nevergrad_zonp.losses import IGNORE_INDEX, accuracy
from nevergrad_zonp.tasks.base import Task


def classifier(classes: int = 3, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, classes))


def labelled(n: int = 60, classes: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(n, 4, generator=gen), torch.randint(0, classes, (n,), generator=gen)


class Samples(Dataset):
    """A map-style dataset that is not a TensorDataset: its samples exist only when read."""

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        self.inputs, self.targets = inputs, targets

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int):
        return self.inputs[index], self.targets[index]


# ----- non-finite data ---------------------------------------------------------------------
def test_non_finite_inputs_or_targets_are_refused_at_construction_naming_the_samples():
    inputs, targets = labelled()
    one = inputs.clone()
    one[17, 2] = float("nan")
    with pytest.raises(ValueError, match=r"non-finite inputs \(NaN or inf\) in 1 of 60 samples \[17\]"):
        ModelAdapter(classifier(), (one, targets), output="categorical")
    many = inputs.clone()
    many[[3, 8, 9, 20, 33, 41, 59], 0] = float("inf")
    with pytest.raises(ValueError, match=r"non-finite inputs .* in 7 of 60 samples \[3, 8, 9, 20, 33, \.\.\.\]"):
        ModelAdapter(classifier(), TensorDataset(many, targets), output="categorical")
    # float regression targets, inputs given as a tuple of tensors
    regression = torch.randn(60, 2)
    regression[44, 1] = float("-inf")
    with pytest.raises(ValueError, match=r"non-finite targets \(NaN or inf\) in 1 of 60 samples \[44\]"):
        HardwareAdapter(lambda thetas, x: thetas[:, None, :2].expand(-1, len(x[0]), 2), np.zeros(2), ((inputs, inputs), regression),
                        output="gaussian")
    task = Task("nan", classifier(), (one, targets), (inputs, targets), "categorical", F.cross_entropy, {})
    with pytest.raises(ValueError, match=r"inputs .* 1 of 60 samples \[17\]"):
        ModelAdapter.from_task(task, on="model")
    adapter = ModelAdapter(classifier(), (inputs, targets), output="categorical")
    with pytest.raises(ValueError, match=r"non-finite inputs .* 1 of 60 samples \[17\]"):
        adapter.evaluate(data=(one, targets))
    # finite values whose sum overflows float32 are data, not faults
    huge = torch.full((60, 4), 3e38)
    HardwareAdapter(lambda thetas, x: thetas[:, None, :1].expand(-1, len(x), 3), np.zeros(1), (huge, targets), output="categorical")


def test_datasets_and_data_loaders_are_checked_batch_by_batch_as_they_are_read():
    inputs, targets = labelled()
    bad = inputs.clone()
    bad[17, 0] = float("nan")
    adapter = ModelAdapter(classifier(), Samples(bad, targets), output="categorical", batch_size=None)
    with pytest.raises(ValueError, match=r"non-finite inputs .* in 1 of 60 samples of a mini-batch, at dataset indices \[17\]"):
        adapter(adapter.theta0)
    adapter = ModelAdapter(classifier(), DataLoader(TensorDataset(bad, targets), batch_size=10), output="categorical")
    adapter.loss_batch([adapter.theta0], key=0)  # batch 0 holds samples 0-9
    with pytest.raises(ValueError, match=r"non-finite inputs .* in 1 of 10 rows of the DataLoader's batch 1 \[7\]"):
        adapter.loss_batch([adapter.theta0], key=1)


# ----- class labels ------------------------------------------------------------------------
def test_labels_outside_the_classes_are_refused_naming_samples_labels_and_classes():
    inputs, targets = labelled()
    negative = targets.clone()
    negative[[2, 30]] = torch.tensor([-1, -7])
    with pytest.raises(ValueError, match=r"outside the classes \(0 or more\) in 2 of 60 samples \[2, 30\] \(labels -1, -7\)"):
        ModelAdapter(classifier(), (inputs, negative), output="categorical")
    beyond = targets.clone()
    beyond[5] = 3
    adapter = ModelAdapter(classifier(classes=3), (inputs, beyond), output="categorical", batch_size=10)
    message = r"outside the 3 classes of the outputs \(0 to 2\) in 1 of 60 samples \[5\] \(labels 3\)"
    with pytest.raises(ValueError, match=message):  # the whole data is named, whichever batch comes first
        adapter(adapter.theta0)
    with pytest.raises(ValueError, match=message):
        adapter.block_losses(adapter.theta0, 0, np.zeros((3, 2)), 4)
    assert adapter.queries == 0
    good = ModelAdapter(classifier(classes=3), (inputs, targets), output="categorical")
    with pytest.raises(ValueError, match=message):
        good.evaluate(data=(inputs, beyond))
    with pytest.raises(ValueError, match=r"needs integer class labels as targets, got torch.float32"):
        ModelAdapter(classifier(), (inputs, targets.float()), output="categorical")
    every = torch.full_like(targets, IGNORE_INDEX)
    with pytest.raises(ValueError, match=r"every target is -100 \(torch's ignore index\)"):
        ModelAdapter(classifier(), (inputs, every), output="categorical")
    per_batch = ModelAdapter(classifier(classes=3), Samples(inputs, beyond), output="categorical", batch_size=None)
    with pytest.raises(ValueError, match=r"outside the 3 classes .* in 1 of 60 rows of mini-batch 0 \[5\] \(labels 3\)"):
        per_batch(per_batch.theta0)


class SequenceClassifier(torch.nn.Module):
    """Logits ``(batch, steps, classes)``."""

    def __init__(self, classes: int, steps: int = 2) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.steps, self.classes = steps, classes
        self.linear = torch.nn.Linear(4, steps * classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).reshape(len(x), self.steps, self.classes)


def _half_ignored(targets: torch.Tensor) -> torch.Tensor:
    ignored = targets.clone()
    ignored.reshape(len(ignored), -1)[::2] = IGNORE_INDEX  # every other sample, all its positions
    ignored.reshape(-1)[1::5] = IGNORE_INDEX  # and some positions of the others
    return ignored


def sequence_cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """A loss of the user's, without a batched twin: evaluated one setting at a time."""
    return F.cross_entropy(outputs.flatten(0, -2), targets.flatten())


@pytest.mark.parametrize("classes", [3, 20])  # both kernels of the batched cross-entropy (below and above 16 classes)
@pytest.mark.parametrize(
    "loss, steps",
    [(None, None), (F.cross_entropy, None), (sequence_cross_entropy, None), (None, 2), (sequence_cross_entropy, 2)],
)
def test_the_ignore_index_is_honoured_as_torch_honours_it_on_every_loss_path(classes, loss, steps):
    inputs, _ = labelled(40)
    model = classifier(classes) if steps is None else SequenceClassifier(classes, steps)
    shape = (40,) if steps is None else (40, steps)
    targets = _half_ignored(torch.randint(0, classes, shape, generator=torch.Generator().manual_seed(2)))
    adapter = ModelAdapter(model, (inputs, targets), output="categorical", loss=loss, batch_size=None)
    reference = copy.deepcopy(model)

    def torch_loss(theta: np.ndarray) -> float:
        vector = torch.from_numpy(theta)
        with torch.no_grad():
            torch.nn.utils.vector_to_parameters(vector.float(), reference.parameters())
            out = reference(inputs)
        return float(F.cross_entropy(out.reshape(-1, classes), targets.reshape(-1)))

    thetas = adapter.theta0[None] + 0.2 * np.random.RandomState(0).normal(size=(4, adapter.dimension))
    expected = [torch_loss(theta) for theta in thetas]
    assert len(set(expected)) == 4 and expected[0] > 0
    vmapped = adapter.loss_batch(list(thetas))
    assert adapter._vmap_ok
    one_at_a_time = [adapter.loss_batch([theta])[0] for theta in thetas]
    evaluated = [adapter.evaluate(theta)["loss"] for theta in thetas]
    deltas = thetas[:, 3:9] - adapter.theta0[3:9]
    block = adapter.block_losses(adapter.theta0, 3, deltas, 0)
    block_expected = []
    for delta in deltas:
        theta = adapter.theta0.copy()
        theta[3:9] += delta
        block_expected.append(torch_loss(theta))
    adapter._vmap_ok = False  # the path of a module that cannot run under vmap
    looped = adapter.loss_batch(list(thetas))
    for values in (vmapped, one_at_a_time, evaluated, looped):
        np.testing.assert_allclose(values, expected, rtol=2e-6)
    np.testing.assert_allclose(block, block_expected, rtol=2e-6)


def test_a_mini_batch_whose_labels_are_all_ignored_has_loss_zero():
    inputs, targets = labelled(20)
    targets = targets.clone()
    targets[:10] = IGNORE_INDEX
    adapter = ModelAdapter(classifier(), DataLoader(TensorDataset(inputs, targets), batch_size=10), output="categorical")
    thetas = list(adapter.theta0[None] + np.random.RandomState(1).normal(size=(3, adapter.dimension)))
    np.testing.assert_array_equal(adapter.loss_batch(thetas, key=0), 0.0)
    np.testing.assert_array_equal(adapter.block_losses(adapter.theta0, 0, np.ones((2, 4)), 0), 0.0)
    assert np.all(adapter.loss_batch(thetas, key=1) > 0)
    with torch.no_grad():
        expected = F.cross_entropy(adapter.model(inputs), targets)
    assert adapter.evaluate()["loss"] == pytest.approx(float(expected), rel=1e-6)


# ----- output shapes -----------------------------------------------------------------------
class FlatOutputs(torch.nn.Module):
    """A categorical model that forgot its class axis: outputs ``(batch,)``."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)[:, 0]


def test_outputs_that_do_not_fit_the_targets_are_refused_with_both_shapes():
    inputs, targets = labelled(55)
    adapter = ModelAdapter(FlatOutputs(), (inputs, targets), output="categorical", batch_size=11)
    message = r"outputs of one setting have shape \(11,\), which does not fit the targets of shape \(11,\): .*\(11, classes\)"
    with pytest.raises(ValueError, match=message):
        adapter(adapter.theta0)
    with pytest.raises(ValueError, match=message):
        adapter.loss_batch([adapter.theta0, adapter.theta0 + 1])
    with pytest.raises(ValueError, match=r"shape \(55,\), which does not fit the targets of shape \(55,\)"):
        adapter.evaluate()
    sequences = torch.randint(0, 3, (55, 4))  # (batch, steps) labels, outputs without the steps
    with pytest.raises(ValueError, match=r"shape \(11, 3\), .* targets of shape \(11, 4\): .*logits of shape \(11, 4, classes\)"):
        ModelAdapter(classifier(), (inputs, sequences), output="categorical", batch_size=11)(np.zeros(43))
    regression = torch.randn(55, 2)
    gaussian = ModelAdapter(classifier(), (inputs, regression), output="gaussian", batch_size=11)
    with pytest.raises(ValueError, match=r"shape \(11, 3\), .* targets of shape \(11, 2\): output='gaussian' needs one output per"):
        gaussian(gaussian.theta0)


# ----- settings ----------------------------------------------------------------------------
_DATA = labelled()


BAD_OPTIONS = [
    ({"batch_size": 2.5}, ValueError, r"batch_size must be an integer >= 1, got 2\.5"),
    ({"batch_size": True}, ValueError, r"batch_size .* got True"),
    ({"batch_size": 0}, ValueError, r"batch_size .* >= 1, got 0"),
    ({"batch_size": "10"}, ValueError, r"batch_size .* got '10'"),
    ({"seed": 1.5}, ValueError, r"seed must be an integer >= 0, got 1\.5"),
    ({"seed": False}, ValueError, r"seed .* got False"),
    ({"seed": -1}, ValueError, r"seed .* got -1"),
    ({"settings_per_call": 2.5}, ValueError, r"settings_per_call must be an integer >= 1, got 2\.5"),
    ({"settings_per_call": True}, ValueError, r"settings_per_call .* got True"),
    ({"settings_per_call": 0}, ValueError, r"settings_per_call .* got 0"),
    ({"output": "softmax"}, ValueError, r"Unknown output model 'softmax'"),
    ({"output": True}, ValueError, r"Unknown output model True"),
    ({"loss": "mse"}, TypeError, r"loss must be callable .* got str"),
    ({"metrics": {"acc": 1}}, TypeError, r"metrics must map names \(str\) to callables"),
    ({"metrics": [F.mse_loss]}, TypeError, r"metrics must map names"),
    ({"penalty": 0.1}, TypeError, r"penalty must be callable"),
    ({"parameters": "0.bias"}, TypeError, r"got the string '0.bias'"),
    ({"parameters": [0]}, ValueError, r"unknown parameter names \[0\]"),
]


@pytest.mark.parametrize("options, error, match", BAD_OPTIONS, ids=[f"{next(iter(options))}-{i}" for i, (options, _, _) in enumerate(BAD_OPTIONS)])
def test_settings_of_the_wrong_type_or_value_are_refused_by_name(options, error, match):
    with pytest.raises(error, match=match):
        ModelAdapter(classifier(), _DATA, **{"output": "categorical", **options})


def test_the_callables_and_the_other_entry_points_refuse_settings_by_name():
    with pytest.raises(TypeError, match=r"model must be a torch.nn.Module, got function"):
        ModelAdapter(lambda x: x, _DATA, output="categorical")
    with pytest.raises(TypeError, match=r"outputs must be callable .* got str"):
        HardwareAdapter("chip", np.zeros(2), _DATA, output="categorical")
    with pytest.raises(ValueError, match=r"batch_size .* got True"):
        MiniBatches(_DATA, batch_size=True)
    with pytest.raises(ValueError, match=r"seed .* got 2\.0"):
        MiniBatches(_DATA, seed=2.0)
    with pytest.raises(ValueError, match=r"batch_size .* got 2\.5"):
        ModelAdapter(classifier(), _DATA, output="categorical").evaluate(batch_size=2.5)


@pytest.mark.parametrize(
    "options, match",
    [
        ({"on": "board"}, r"on must be 'chip' or 'model', got 'board'"),
        ({"on": 1}, r"on must be .* got 1"),
        ({"batch_size": 2.5}, r"batch_size .* got 2\.5"),
        ({"seed": True}, r"seed .* got True"),
    ],
    ids=["on=board", "on=1", "batch_size=2.5", "seed=True"],
)
def test_from_task_refuses_settings_by_name(options, match):
    task = Task("small", classifier(), _DATA, _DATA, "categorical", F.cross_entropy, {})
    with pytest.raises(ValueError, match=match):
        ModelAdapter.from_task(task, **{"on": "model", **options})


def test_integer_settings_of_numpy_types_are_taken():
    adapter = ModelAdapter(classifier(), _DATA, output="categorical", batch_size=np.int64(20), seed=np.int32(3), settings_per_call=np.int16(2))
    assert (adapter.batches.batch_size, adapter.batches.seed, adapter.settings_per_call) == (20, 3, 2)


# ----- vmap faults -------------------------------------------------------------------------
def _vmapped() -> bool:
    return torch._C._functorch.maybe_current_level() is not None


class FlakyUnderVmap(torch.nn.Module):
    """A linear model whose vmapped forward raises ``failures`` times (an I/O fault), then works; counts vmapped forwards."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(4, 3)
        self.failures = failures
        self.vmapped_forwards = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _vmapped():
            if self.failures:
                self.failures -= 1
                raise OSError("chip I/O error")
            self.vmapped_forwards += 1
        return self.linear(x)


def test_a_transient_vmap_fault_falls_back_for_that_call_only():
    inputs, targets = labelled()
    adapter = ModelAdapter(FlakyUnderVmap(failures=1), (inputs, targets), output="categorical", batch_size=None)
    expected = ModelAdapter(FlakyUnderVmap(failures=0), (inputs, targets), output="categorical", batch_size=None)
    thetas = list(adapter.theta0[None] + np.random.RandomState(0).normal(size=(3, adapter.dimension)))
    with pytest.warns(RuntimeWarning, match=r"vmapped forward of FlakyUnderVmap failed \(OSError: chip I/O error\); .* tries torch.vmap again"):
        first = adapter.loss_batch(thetas)
    np.testing.assert_allclose(first, expected.loss_batch(thetas), rtol=1e-6)
    assert adapter._vmap_ok and adapter.model.vmapped_forwards == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = adapter.loss_batch(thetas)
    assert adapter._vmap_ok and adapter.model.vmapped_forwards == 1  # vmapped again
    np.testing.assert_array_equal(second, expected.loss_batch(thetas))


class NumpyInForward(torch.nn.Module):
    """Goes through numpy in its forward: fine one setting at a time, never under vmap (not a "vmap:" error)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(4, 3)
        self.vmap_attempts = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.vmap_attempts += _vmapped()
        return torch.from_numpy(self.linear(x).numpy())


def test_vmap_is_turned_off_for_good_only_on_proof():
    inputs, targets = labelled()
    adapter = ModelAdapter(NumpyInForward(), (inputs, targets), output="categorical", batch_size=None)
    thetas = list(adapter.theta0[None] + np.random.RandomState(0).normal(size=(3, adapter.dimension)))
    with pytest.warns(RuntimeWarning, match=r"failed \(RuntimeError: .*\); .* the next tries torch.vmap again"):
        first = adapter.loss_batch(thetas)
    assert adapter._vmap_ok
    with pytest.warns(RuntimeWarning, match=r"does not run under torch.vmap \(RuntimeError: .*\); .* from now on"):
        second = adapter.loss_batch(thetas)  # the same fault twice in a row, the loop fine both times: proof
    assert not adapter._vmap_ok and adapter.model.vmap_attempts == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        third = adapter.loss_batch(thetas)
    assert adapter.model.vmap_attempts == 2
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first, third)


class ItemInForward(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :3] * float(self.scale.item())


def test_torchs_own_vmap_incompatibility_turns_vmap_off_at_once():
    adapter = ModelAdapter(ItemInForward(), labelled(), output="categorical", batch_size=None)
    with pytest.warns(RuntimeWarning, match=r"does not run under torch.vmap \(RuntimeError: vmap: It looks like you're calling \.item\(\)"):
        losses = adapter.loss_batch([np.array([1.0]), np.array([2.0])])
    assert not adapter._vmap_ok and losses[0] != losses[1]


class BrokenForward(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise OSError("chip unplugged")


def test_a_fault_of_the_model_itself_is_raised_and_leaves_vmap_on():
    adapter = ModelAdapter(BrokenForward(), labelled(), output="categorical", batch_size=None)
    for _ in range(3):
        with pytest.raises(OSError, match="chip unplugged"):
            adapter.loss_batch([adapter.theta0, adapter.theta0 + 1])
    assert adapter._vmap_ok


def test_accuracy_leaves_out_the_ignored_positions():
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0], [0.0, 2.0]])
    assert accuracy(logits, torch.tensor([0, 0, 0, 1])) == 0.75
    assert accuracy(logits, torch.tensor([0, IGNORE_INDEX, 0, 1])) == 1.0  # the wrong one is ignored
    assert math.isnan(accuracy(logits, torch.full((4,), IGNORE_INDEX)))
