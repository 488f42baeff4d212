"""The optical image classifier: Fourier inputs, architecture, data sources, backprop and ZO on its chip."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import nevergrad as ng
import numpy as np
import pytest
import torch

import nevergrad_zonp
from nevergrad_zonp.tasks.base import Task, pretrain
from support import write_mnist
from nevergrad_zonp.tasks.onn import (
    OpticalImageClassifier,
    fourier_features,
    onn_classifier_task,
    readout_ports,
)

PIXELS = 28 * 28


def small_task(**kwargs) -> Task:
    return onn_classifier_task(**{"seed": 0, "k": 16, "n_train": 300, "n_test": 200, **kwargs})


def test_fourier_features_are_bins_1_to_k_of_the_orthonormal_rfft() -> None:
    # A sum of cosines at bins 1..16 with known amplitudes and phases, plus a constant (bin 0).
    gen = torch.Generator().manual_seed(0)
    k = 16
    amplitude = torch.rand(k, generator=gen, dtype=torch.float64) + 0.5
    phase = 2 * math.pi * torch.rand(k, generator=gen, dtype=torch.float64)
    m = torch.arange(PIXELS, dtype=torch.float64)
    bins = torch.arange(1, k + 1, dtype=torch.float64)
    signal = (amplitude[:, None] * torch.cos(2 * math.pi * bins[:, None] * m / PIXELS + phase[:, None])).sum(0)
    images = (signal + 3.0).reshape(1, 1, 28, 28)
    features = fourier_features(images, k)
    assert features.shape == (1, k) and features.is_complex()
    # The orthonormal FFT of a cos(2 pi b m / n + phi) is sqrt(n) / 2 a e^{j phi} at bin b: the constant is gone.
    expected = math.sqrt(PIXELS) / 2 * amplitude * torch.exp(1j * phase)
    torch.testing.assert_close(features[0], expected)
    # Energy (Parseval, orthonormal): each bin 1..K < n/2 stands for itself and its mirror.
    assert math.isclose(float(signal.pow(2).sum()), 2 * float(features.abs().pow(2).sum()), rel_tol=1e-9)
    # Fewer bins keep the lowest ones; any image: bins 1..K of torch's rfft of the flattened image.
    torch.testing.assert_close(fourier_features(images, 4), features[..., :4])
    noise = torch.rand(3, 1, 28, 28, generator=gen)
    torch.testing.assert_close(fourier_features(noise, k), torch.fft.rfft(noise.reshape(3, -1), norm="ortho")[:, 1 : k + 1])


def test_the_network_reads_the_powers_of_the_central_ports_of_three_meshes() -> None:
    model = OpticalImageClassifier(16, generator=torch.Generator().manual_seed(0))
    assert sum(p.numel() for p in model.parameters()) == 3 * 16 * 15 + 2 * 16
    assert readout_ports(16) == slice(3, 13) and readout_ports(10) == slice(0, 10) and readout_ports(13) == slice(1, 11)
    images = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    fields = model.encode(images)
    assert fields.shape == (5, 16) and fields.is_complex()
    logits = model(images)
    assert logits.shape == (5, 10) and logits.dtype == torch.float32 and bool((logits >= 0).all())
    # The modReLU biases start at 0 (identity): the network is U3 U2 U1 on the Fourier fields, then |.|^2.
    with torch.no_grad():
        transfer = model.meshes[2].unitary() @ model.meshes[1].unitary() @ model.meshes[0].unitary()
        out = fields @ transfer.T
    torch.testing.assert_close(logits, out[:, 3:13].abs().pow(2), rtol=1e-4, atol=1e-5)
    # Lossless meshes: the ten logits hold at most the input power.
    assert bool((logits.sum(-1) <= fields.abs().pow(2).sum(-1) * (1 + 1e-5)).all())
    # A negative bias thresholds its port: a large one darkens the network.
    with torch.no_grad():
        model.activations[0].bias.fill_(-1e3)
        assert float(model(images).abs().max()) == 0.0


def test_the_task_is_deterministic_under_its_seed_and_leaves_the_global_random_state_alone() -> None:
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first, again, other = small_task(), small_task(), small_task(seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    assert first.name == "onn16" and first.output == "categorical"
    assert first.train[0].shape == (300, 1, 28, 28) and first.test[1].shape == (200,)
    for one, two in ((first.model, again.model), (first.chip, again.chip)):
        for (name, a), (_, b) in zip(one.state_dict().items(), two.state_dict().items()):
            assert torch.equal(a, b), name
    assert torch.equal(first.train[0], again.train[0]) and torch.equal(first.test[1], again.test[1])
    assert not torch.equal(first.model.meshes[0].phases, other.model.meshes[0].phases)
    assert not torch.equal(first.chip.meshes[0].splitter_angles, other.chip.meshes[0].splitter_angles)
    chip_seeded = small_task(chip_seed=5)
    assert torch.equal(chip_seeded.model.meshes[0].phases, first.model.meshes[0].phases)
    assert not torch.equal(chip_seeded.chip.meshes[0].splitter_angles, first.chip.meshes[0].splitter_angles)
    assert set(first.evaluate()) == {"loss", "accuracy"}
    assert onn_classifier_task(seed=0, k=32, n_train=20, n_test=10).name == "onn32"


def test_backprop_trains_the_ideal_model_above_chance_and_programs_the_chip() -> None:
    task = small_task()
    before = task.evaluate()
    losses = pretrain(task, epochs=5, lr=3e-2, batch_size=50, seed=0)
    after = task.evaluate()
    assert losses[-1] < losses[0] and after["loss"] < before["loss"]
    assert after["accuracy"] > 0.3  # chance: 0.1
    # The chip got the trained phases but keeps its fabrication errors: same parameters, other outputs.
    for (name, ideal), (chip_name, chip) in zip(task.model.named_parameters(), task.chip.named_parameters()):
        assert name == chip_name and torch.equal(ideal, chip), name
    with torch.no_grad():
        ideal_out, chip_out = task.model(task.test[0][:20]), task.chip(task.test[0][:20])
    assert not torch.allclose(ideal_out, chip_out, atol=1e-3)
    assert task.evaluate(task.chip)["loss"] != after["loss"]


@pytest.mark.parametrize("method", ["ZONP", "ZOI"])
def test_zeroth_order_methods_run_on_the_chip(method: str) -> None:
    task = small_task(pretrain_epochs=2)
    adapter = nevergrad_zonp.ModelAdapter.from_task(task, on="chip", batch_size=50)
    assert adapter.dimension == 752
    before = adapter.evaluate()["loss"]
    assert math.isclose(before, task.evaluate(task.chip, split="train")["loss"], rel_tol=1e-5)
    optimizer = ng.optimizers.registry[method](parametrization=adapter.parametrization, budget=120)
    optimizer.parametrization.random_state.seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the network runs under vmap: no fallback warning
        recommendation = nevergrad_zonp.minimize_vectorized(optimizer, adapter)
    after = adapter.evaluate(recommendation)
    assert math.isfinite(after["loss"]) and 0.0 <= after["accuracy"] <= 1.0
    assert 0 < optimizer.num_queries <= 120


def test_the_task_reads_mnist_idx_files_from_a_path(tmp_path: Path) -> None:
    write_mnist(tmp_path / "plain", np.random.default_rng(0), n_train=12, n_test=6)
    task = onn_classifier_task(seed=0, k=16, path=tmp_path / "plain")
    assert task.name == "onn16_mnist"
    assert task.train[0].shape == (12, 1, 28, 28) and task.test[0].shape == (6, 1, 28, 28)
    assert task.train[0].dtype == torch.float32 and float(task.train[0].max()) <= 1.0
    assert task.model(task.test[0]).shape == (6, 10)
    write_mnist(tmp_path / "torchvision" / "FashionMNIST" / "raw", np.random.default_rng(1), n_train=12, n_test=6)
    fashion = onn_classifier_task(seed=0, k=12, path=tmp_path / "torchvision", fashion=True, n_train=5)
    assert fashion.name == "onn12_fashion_mnist" and len(fashion.train[0]) == 5 and len(fashion.test[0]) == 6
    given = onn_classifier_task(seed=0, k=16, data=(task.train, task.test))
    assert given.name == "onn16_data" and torch.equal(given.train[0], task.train[0])
    with pytest.raises(ValueError, match="either path"):
        onn_classifier_task(seed=0, path=tmp_path / "plain", data=(task.train, task.test))
    with pytest.raises(ValueError, match=r"images \(N, C, H, W\) and N labels"):
        onn_classifier_task(seed=0, data=((task.train[0][:, 0], task.train[1]), task.test))
    with pytest.raises(FileNotFoundError):
        onn_classifier_task(seed=0, path=tmp_path / "missing")


@pytest.mark.parametrize("k", [9, 0, -3, 12.5, None])
def test_fewer_than_ten_ports_are_refused_by_name(k) -> None:
    with pytest.raises(ValueError, match=r"K \(the number of ports\) must be an integer of at least 10"):
        onn_classifier_task(seed=0, k=k, n_train=10, n_test=10)
    with pytest.raises(ValueError, match="K"):
        OpticalImageClassifier(k if isinstance(k, int) else 9)


def test_more_ports_than_the_spectrum_has_are_refused() -> None:
    with pytest.raises(ValueError, match=r"K must be an integer in \[1, 392\]"):
        onn_classifier_task(seed=0, k=393, n_train=10, n_test=10)
    with pytest.raises(ValueError, match="K must be"):
        fourier_features(torch.zeros(2, 1, 28, 28), 0)
