"""Photonic building blocks: mesh algebra, variation dimension, gradients, fabrication errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import functional_call

from nevergrad_zonp.photonics import (
    ClementsMesh,
    FabricationErrors,
    ModReLU,
    MZIFeedForward,
    MZIRecurrentNetwork,
    PhaseDiagonal,
    fabricate,
    mod_relu,
    phase_diagonal,
    transfer_parameters,
)




def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def complex_signal(*shape: int, seed: int = 1) -> torch.Tensor:
    g = generator(seed)
    return torch.complex(torch.randn(*shape, generator=g), torch.randn(*shape, generator=g))


def stage_product(ports: int, columns: int, phases: torch.Tensor) -> torch.Tensor:
    """Reference transfer matrix, written from docs/method.md, "Photonic networks" independently of
    the package."""
    splitter = torch.tensor([[1, 1j], [1j, 1]], dtype=torch.complex128) / math.sqrt(2)
    total = torch.eye(ports, dtype=torch.complex128)
    phases = iter(phases.tolist())
    for stage_column in range(2 * columns):
        first = (stage_column // 2) % 2
        for top in range(first, ports - 1, 2):
            theta = next(phases)
            shifter = torch.diag(torch.tensor([complex(math.cos(theta), math.sin(theta)), 1.0], dtype=torch.complex128))
            stage = torch.eye(ports, dtype=torch.complex128)
            stage[top : top + 2, top : top + 2] = splitter @ shifter
            total = stage @ total
    return total


def vmapped_outputs(model: torch.nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """What the model adapter does: V parameter settings in one vmapped functional call."""
    return torch.vmap(lambda p, inputs: functional_call(model, p, (inputs,)), in_dims=(0, None))(params, x)


def perturbed_settings(model: torch.nn.Module, variations: int, seed: int = 2) -> dict[str, torch.Tensor]:
    g = generator(seed)
    return {
        name: p.detach() + 0.3 * torch.randn(variations, *p.shape, generator=g) for name, p in model.named_parameters()
    }


@pytest.mark.parametrize("ports, columns", [(8, 8), (6, 6), (7, 7), (8, 3), (5, 2), (10, 4)])
def test_ideal_mesh_is_unitary(ports: int, columns: int) -> None:
    u = ClementsMesh(ports, columns, generator=generator()).unitary().detach()
    assert u.dtype == torch.complex64
    assert (u.conj().transpose(-1, -2) @ u - torch.eye(ports)).abs().max() < 1e-5


@pytest.mark.parametrize("ports, columns", [(8, 8), (4, 4), (6, 2), (12, 6), (7, 7), (5, 3), (9, 4)])
def test_phase_count_is_columns_times_ports_minus_one(ports: int, columns: int) -> None:
    mesh = ClementsMesh(ports, columns)
    assert [name for name, _ in mesh.named_parameters()] == ["phases"]
    assert mesh.phases.numel() == columns * (ports - 1)


def test_odd_column_count_on_even_ports_has_one_extra_mzi() -> None:
    assert ClementsMesh(8, 3).phases.numel() == 3 * 7 + 1
    assert ClementsMesh(8, 8).phases.numel() == 56


@pytest.mark.parametrize("ports, columns", [(8, 8), (6, 3)])
def test_mesh_equals_product_of_its_stages(ports: int, columns: int) -> None:
    mesh = ClementsMesh(ports, columns, generator=generator())
    expected = stage_product(ports, columns, mesh.phases.detach().double())
    assert (mesh.unitary().detach().to(torch.complex128) - expected).abs().max() < 1e-5


def test_propagation_equals_unitary_product() -> None:
    mesh = ClementsMesh(6, 4, generator=generator())
    z = complex_signal(5, 6)
    expected = z @ mesh.unitary().transpose(-1, -2)
    assert torch.allclose(mesh(z), expected, atol=1e-5)


def test_initial_phases_are_standard_normal_from_the_generator() -> None:
    mesh = ClementsMesh(8, 8, generator=generator(3))
    assert torch.equal(mesh.phases.detach(), torch.randn(56, generator=generator(3)))
    assert torch.equal(ModReLU(8).bias.detach(), torch.zeros(8))
    assert torch.equal(PhaseDiagonal(8).phases.detach(), torch.zeros(8))


def test_mod_relu_definition() -> None:
    z = torch.tensor([3 + 4j, 3 + 4j, 0j], dtype=torch.complex64)
    out = mod_relu(z, torch.tensor([-1.0, -6.0, 0.5]))
    assert torch.allclose(out[0], torch.tensor(3 + 4j) * 4 / 5)
    assert out[1] == 0
    assert torch.isfinite(torch.view_as_real(out)).all()


def test_phase_diagonal_multiplies_each_port_by_its_phase() -> None:
    z = complex_signal(4, 3)
    phases = torch.tensor([0.0, math.pi / 2, math.pi])
    assert torch.allclose(phase_diagonal(z, phases), z * torch.tensor([1, 1j, -1], dtype=torch.complex64), atol=1e-6)


def test_native_variation_dimension_equals_loop() -> None:
    mesh = ClementsMesh(6, 5, generator=generator())
    phases = torch.randn(4, mesh.phases.numel(), generator=generator(4))
    z = complex_signal(4, 3, 6)
    biases = torch.randn(4, 6, generator=generator(5))
    batched_unitary = mesh.unitary(phases)
    batched_signal = mesh.propagate(z, phases)
    shared_signal = mesh.propagate(z[:1], phases)
    for v in range(4):
        assert torch.allclose(batched_unitary[v], mesh.unitary(phases[v]), atol=1e-6)
        assert torch.allclose(batched_signal[v], mesh.propagate(z[v], phases[v]), atol=1e-6)
        assert torch.allclose(shared_signal[v], mesh.propagate(z[0], phases[v]), atol=1e-6)
        assert torch.allclose(mod_relu(z, biases)[v], mod_relu(z[v], biases[v]))
        assert torch.allclose(phase_diagonal(z, biases)[v], phase_diagonal(z[v], biases[v]))


def small_models() -> dict[str, tuple[torch.nn.Module, torch.Tensor]]:
    g = generator()
    feedforward = MZIFeedForward(3, 2, ports=5, hidden_layers=2, columns=4, gain=1.5, generator=g)
    recurrent = MZIRecurrentNetwork(4, 3, ports=6, generator=g)
    return {
        "mesh": (ClementsMesh(6, 3, generator=g), complex_signal(7, 6)),
        "modrelu": (ModReLU(6), complex_signal(7, 6)),
        "psdiag": (PhaseDiagonal(6), complex_signal(7, 6)),
        "feedforward": (feedforward, torch.randn(7, 3, generator=g)),
        "recurrent": (recurrent, torch.randint(4, (7, 5), generator=g)),
    }


@pytest.mark.parametrize("name", ["mesh", "modrelu", "psdiag", "feedforward", "recurrent"])
@pytest.mark.parametrize("on_chip", [False, True])
def test_vmapped_functional_call_equals_loop(name: str, on_chip: bool) -> None:
    model, x = small_models()[name]
    if on_chip:
        model = fabricate(model, seed=0, errors=FabricationErrors(beta=5.0))
    params = perturbed_settings(model, variations=3)
    batched = vmapped_outputs(model, params, x)
    for v in range(3):
        single = functional_call(model, {k: p[v] for k, p in params.items()}, (x,))
        assert torch.allclose(batched[v], single, atol=1e-5)
    assert not torch.allclose(batched[0], batched[1], atol=1e-3)


@pytest.mark.parametrize("name", ["feedforward", "recurrent"])
def test_autograd_matches_finite_differences(name: str) -> None:
    model, x = small_models()[name]
    model = model.double()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (ModReLU, PhaseDiagonal)):
                next(module.parameters()).uniform_(-0.3, 0.3, generator=generator(6))
    if x.is_floating_point():
        x = x.double()
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    flat = torch.cat([p.detach().flatten() for _, p in model.named_parameters()]).requires_grad_()

    def outputs(theta: torch.Tensor) -> torch.Tensor:
        pieces = theta.split([s.numel() for s in shapes])
        return functional_call(model, {n: p.view(s) for n, p, s in zip(names, pieces, shapes)}, (x,))

    assert torch.autograd.gradcheck(outputs, (flat,), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_chip_keeps_parameters_and_hides_errors_in_buffers() -> None:
    model, x = small_models()["feedforward"]
    chip = fabricate(model, seed=0)
    ideal_params = dict(model.named_parameters())
    for name, parameter in chip.named_parameters():
        assert torch.equal(parameter, ideal_params[name])
    assert len(list(chip.parameters())) == len(list(model.parameters()))
    assert not torch.allclose(chip(x), model(x), atol=1e-3)


def test_chip_is_reproducible_from_its_seed() -> None:
    model, x = small_models()["recurrent"]
    first, again, other = fabricate(model, seed=3), fabricate(model, seed=3), fabricate(model, seed=4)
    for (name, a), (_, b), (_, c) in zip(first.named_buffers(), again.named_buffers(), other.named_buffers()):
        assert torch.equal(a, b), name
    assert torch.equal(first(x), again(x))
    assert not torch.allclose(first(x), other(x), atol=1e-4)


def test_beta_zero_is_the_ideal_model_and_beta_scales_the_errors() -> None:
    model, x = small_models()["feedforward"]
    assert torch.equal(fabricate(model, seed=0, errors=FabricationErrors(beta=0.0))(x), model(x))
    one, two = (fabricate(model, seed=0, errors=FabricationErrors(beta=b)).meshes[0] for b in (1.0, 2.0))
    ideal = model.meshes[0]
    deviation_one, deviation_two = (m.splitter_angles - ideal.splitter_angles for m in (one, two))
    assert deviation_one.abs().max() > 1e-3
    assert torch.allclose(deviation_two, 2 * deviation_one, atol=1e-6)
    assert torch.allclose(1 - two.port_transmission, 2 * (1 - one.port_transmission), atol=1e-7)
    assert torch.allclose(two.port_phase_errors, 2 * one.port_phase_errors, atol=1e-6)


def test_error_magnitudes_follow_the_error_model() -> None:
    mesh = fabricate(ClementsMesh(16, 16), seed=0)
    paired = mesh.partner != torch.arange(16)
    gamma = 2 * (mesh.splitter_angles[paired] - math.pi / 4)
    assert 0.007 < gamma.std() < 0.013
    assert torch.equal(mesh.splitter_angles[~paired], torch.zeros(int((~paired).sum())))
    assert (mesh.port_transmission <= 1).all() and (mesh.port_transmission >= 1 - 1e-3).all()
    assert mesh.port_phase_errors.abs().max() <= 0.1 and mesh.port_phase_errors.abs().max() > 0.09
    u = mesh.unitary().detach()
    singular_values = torch.linalg.svdvals(u)
    assert (singular_values <= 1 + 1e-5).all() and (singular_values < 1 - 1e-6).any()


def test_transfer_parameters_programs_the_chip_and_keeps_its_errors() -> None:
    model, x = small_models()["feedforward"]
    chip = fabricate(model, seed=0)
    errors = {name: b.clone() for name, b in chip.named_buffers()}
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1)
    transfer_parameters(model, chip)
    assert torch.equal(chip(x), fabricate(model, seed=0)(x))
    for name, buffer in chip.named_buffers():
        assert torch.equal(buffer, errors[name])
