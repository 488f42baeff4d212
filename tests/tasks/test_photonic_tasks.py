"""The equalization and copying tasks: data definitions, sizes, and learnability by backprop."""

from __future__ import annotations

import math

import pytest
import torch

from nevergrad_zonp.tasks.base import pretrain
from nevergrad_zonp.tasks.copying import (
    copying_data,
    copying_task,
    memoryless_baseline,
    recall_accuracy,
    sequence_cross_entropy,
)
from nevergrad_zonp.tasks.equalization import (
    CHANNEL_TAPS,
    NONLINEARITY,
    channel_equalization_data,
    equalization_task,
    symbol_error_rate,
)




def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_equalization_data_is_reproducible_from_the_seed() -> None:
    first = channel_equalization_data(200, snr_db=24.0, generator=generator(0))
    again = channel_equalization_data(200, snr_db=24.0, generator=generator(0))
    other = channel_equalization_data(200, snr_db=24.0, generator=generator(1))
    assert first[0].shape == (200, 11) and first[1].shape == (200, 1)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])
    assert set(first[1].flatten().tolist()) == {-3.0, -1.0, 1.0, 3.0}


def reference_received(targets: torch.Tensor, index: int) -> float:
    """u(n) of the newest sample of window ``index``, from the targets d(n-2) of the neighbouring windows."""
    # Window i targets d(n_i - 2) with n_i = n_0 + i, so d(n_i + 2 - k) is the target of window i + 4 - k.
    q = sum(tap * float(targets[index + 4 - k]) for k, tap in enumerate(CHANNEL_TAPS))
    return q + NONLINEARITY[0] * q**2 + NONLINEARITY[1] * q**3


def test_equalization_channel_follows_its_definition() -> None:
    inputs, targets = channel_equalization_data(60, snr_db=300.0, generator=generator(2))
    for i in range(10, 50):
        assert math.isclose(float(inputs[i, 0]), reference_received(targets, i), abs_tol=1e-4)
        assert torch.equal(inputs[i, 1:], inputs[i - 1, :-1])


def test_equalization_noise_has_the_requested_snr() -> None:
    inputs, targets = channel_equalization_data(4000, snr_db=10.0, generator=generator(3))
    clean = torch.tensor([reference_received(targets, i) for i in range(10, 3990)])
    noise = inputs[10:3990, 0].double() - clean
    assert abs(10 * math.log10(clean.pow(2).mean() / noise.pow(2).mean()) - 10.0) < 0.2


def test_equalization_task_sizes_and_interface() -> None:
    task = equalization_task(n_train=300, n_test=200)
    assert sum(p.numel() for p in task.model.parameters()) == 564
    assert task.output == "gaussian"
    assert task.train[0].shape == (300, 11) and task.test[1].shape == (200, 1)
    assert task.model(task.test[0][:5]).shape == (5, 1)
    assert [n for n, _ in task.chip.named_parameters()] == [n for n, _ in task.model.named_parameters()]
    assert set(task.evaluate()) == {"loss", "mse", "ser"}


def test_symbol_error_rate_uses_the_nearest_level() -> None:
    targets = torch.tensor([[-3.0], [-1.0], [1.0], [3.0]])
    assert symbol_error_rate(targets + 0.9, targets) == 0.0
    assert symbol_error_rate(targets + torch.tensor([[1.1], [0.0], [0.0], [-1.1]]), targets) == 0.5


def test_backprop_learns_equalization() -> None:
    task = equalization_task(seed=0, n_train=1000, n_test=2000)
    before = task.evaluate()
    pretrain(task, epochs=4, lr=0.05)
    after = task.evaluate()
    assert before["ser"] > 0.5
    assert after["ser"] < 0.05


def test_copying_data_definition() -> None:
    inputs, targets = copying_data(50, delay=7, generator=generator(0))
    again = copying_data(50, delay=7, generator=generator(0))
    assert torch.equal(inputs, again[0]) and torch.equal(targets, again[1])
    assert inputs.shape == targets.shape == (50, 27)
    symbols = inputs[:, :10]
    assert ((symbols >= 1) & (symbols <= 8)).all()
    assert (inputs[:, 10:16] == 0).all() and (inputs[:, 16] == 9).all() and (inputs[:, 17:] == 0).all()
    assert (targets[:, :17] == 0).all() and torch.equal(targets[:, 17:], symbols)
    assert not torch.equal(inputs, copying_data(50, delay=7, generator=generator(1))[0])


def test_memoryless_baseline_is_the_loss_of_the_memoryless_strategy() -> None:
    delay = 12
    assert math.isclose(memoryless_baseline(delay), 10 * math.log(8) / (delay + 20))
    _, targets = copying_data(30, delay=delay, generator=generator(0))
    logits = torch.full((30, delay + 20, 9), -1e4)
    logits[:, : delay + 10, 0] = 1e4
    logits[:, delay + 10 :, 1:] = 0.0
    assert math.isclose(float(sequence_cross_entropy(logits, targets)), memoryless_baseline(delay), rel_tol=1e-5)


def test_recall_accuracy_counts_only_the_recalled_symbols() -> None:
    _, targets = copying_data(20, delay=5, generator=generator(0))
    perfect = torch.nn.functional.one_hot(targets, 9).float()
    assert recall_accuracy(perfect, targets) == 1.0
    blanks = torch.nn.functional.one_hot(torch.zeros_like(targets), 9).float()
    assert recall_accuracy(blanks, targets) == 0.0


def test_copying_task_sizes_and_interface() -> None:
    task = copying_task(delay=5, n_train=40, n_test=10)
    assert sum(p.numel() for p in task.model.parameters()) == 3169
    assert task.output == "categorical"
    assert task.model(task.test[0][:3]).shape == (3, 25, 9)
    assert [n for n, _ in task.chip.named_parameters()] == [n for n, _ in task.model.named_parameters()]
    assert not torch.allclose(task.chip(task.test[0][:3]), task.model(task.test[0][:3]), atol=1e-3)


def test_backprop_learns_copying_below_the_memoryless_baseline() -> None:
    task = copying_task(delay=10, seed=0, n_train=1000, n_test=500, ports=16)
    pretrain(task, epochs=5, lr=0.01)
    result = task.evaluate()
    assert result["loss"] < memoryless_baseline(10)
    assert result["accuracy"] > 0.3


def test_task_builders_refuse_bad_sizes_and_delays_by_name():
    from nevergrad_zonp.tasks.copying import copying_task
    from nevergrad_zonp.tasks.equalization import equalization_task

    for kwargs, message in [
        ({"delay": 30}, r"delay must be an integer in \[0, 17\]"),  # beyond: targets wrapped to the sequence's end
        ({"delay": -3}, r"delay must be an integer in \[0, 17\]"),
        ({"n_train": 0}, "number of samples must be a positive integer, got 0"),
        ({"snr_db": float("nan")}, "snr_db must be finite"),
    ]:
        with pytest.raises(ValueError, match=message):
            equalization_task(seed=0, n_test=20, **{"n_train": 20, **kwargs})
    for kwargs, message in [
        ({"n_train": 0}, "number of sequences must be a positive integer, got 0"),
        ({"delay": 2.5}, "delay must be an integer of at least 1, got 2.5"),
    ]:
        with pytest.raises(ValueError, match=message):
            copying_task(seed=0, **{"n_train": 10, "n_test": 10, **kwargs})


def test_building_the_copying_task_leaves_torchs_global_random_state_alone():
    from nevergrad_zonp.tasks.copying import copying_task

    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = copying_task(seed=0, delay=5, n_train=10, n_test=10)
    assert torch.equal(torch.get_rng_state(), state)
    second = copying_task(seed=0, delay=5, n_train=10, n_test=10)
    for (name, a), (_, b) in zip(first.model.named_parameters(), second.model.named_parameters()):
        assert torch.equal(a, b), name


def test_pretraining_a_task_programs_its_chip():
    from nevergrad_zonp.photonics import transfer_parameters
    from nevergrad_zonp.tasks.base import pretrain
    from nevergrad_zonp.tasks.equalization import equalization_task

    task = equalization_task(seed=0, n_train=200, n_test=20)
    untrained = {name: value.clone() for name, value in task.chip.state_dict().items()}
    pretrain(task, epochs=1)
    expected = equalization_task(seed=0, n_train=200, n_test=20)
    pretrain(expected, epochs=1, model=expected.model)  # an explicit model: the chip is left to the caller
    assert all(torch.equal(value, untrained[name]) for name, value in expected.chip.state_dict().items())
    transfer_parameters(expected.model, expected.chip)
    for (name, a), (_, b) in zip(task.chip.state_dict().items(), expected.chip.state_dict().items()):
        assert torch.equal(a, b), name
    assert any(not torch.equal(value, untrained[name]) for name, value in task.chip.state_dict().items())
