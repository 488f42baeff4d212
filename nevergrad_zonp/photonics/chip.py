"""Fabrication errors: the hidden "chip" twin of an ideal photonic model.

Error model (docs/method.md, "Photonic networks", all magnitudes scaled by one factor ``beta``):

- every beam splitter has angle ``pi/4 + gamma/2`` instead of ``pi/4``, with
  ``gamma ~ beta sigma_g N(0, 1)`` (both ports of a splitter share its angle);
- every port of every stage (and of every phase-shifter diagonal) has a complex
  transmission ``zeta = (1 - beta s_r U_1) exp(j beta s_a (2 U_2 - 1))``, with ``U_1``,
  ``U_2`` independent ``Uniform(0, 1)`` draws: a small loss and a phase error.

Defaults ``sigma_g = 1e-2``, ``s_r = 1e-3``, ``s_a = 1e-1``.  The errors are drawn from one
``torch.Generator`` seeded with ``seed``, module by module in ``named_modules`` order, and
stored in buffers, so a chip is reproducible from its seed and its parameters keep the
ideal model's names and shapes.  ``beta = 0`` gives back the ideal model exactly.
"""

from __future__ import annotations

import copy
import dataclasses
import math

import torch
from torch import nn

from nevergrad_zonp.photonics.layers import PhaseDiagonal
from nevergrad_zonp.photonics.mesh import ClementsMesh


@dataclasses.dataclass(frozen=True)
class FabricationErrors:
    """Magnitudes of the fabrication errors; ``beta`` scales all three."""

    sigma_g: float = 1e-2
    s_r: float = 1e-3
    s_a: float = 1e-1
    beta: float = 1.0


def _port_errors(
    shape: tuple[int, ...], errors: FabricationErrors, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Transmission ``1 - beta s_r U_1`` and phase error ``beta s_a (2 U_2 - 1)`` per port."""
    transmission = 1.0 - errors.beta * errors.s_r * torch.rand(shape, generator=generator)
    phase = errors.beta * errors.s_a * (2.0 * torch.rand(shape, generator=generator) - 1.0)
    return transmission, phase


def _fabricate_mesh(mesh: ClementsMesh, errors: FabricationErrors, generator: torch.Generator) -> None:
    stages, ports = mesh.splitter_angles.shape
    gamma = errors.beta * errors.sigma_g * torch.randn(stages, ports, generator=generator)
    partner, port = mesh.partner.cpu(), torch.arange(ports)
    splitter_gamma = gamma.gather(1, torch.minimum(partner, port))
    angles = torch.where(partner != port, math.pi / 4 + splitter_gamma / 2, 0.0)
    transmission, phase = _port_errors((stages, ports), errors, generator)
    mesh.splitter_angles.copy_(angles)
    mesh.port_transmission.copy_(transmission)
    mesh.port_phase_errors.copy_(phase)


def _fabricate_diagonal(diagonal: PhaseDiagonal, errors: FabricationErrors, generator: torch.Generator) -> None:
    transmission, phase = _port_errors((diagonal.ports,), errors, generator)
    diagonal.port_transmission.copy_(transmission)
    diagonal.port_phase_errors.copy_(phase)


def fabricate(model: nn.Module, *, seed: int, errors: FabricationErrors = FabricationErrors()) -> nn.Module:
    """A copy of ``model`` (same parameter values) with fabrication errors drawn from ``seed``.

    Every :class:`ClementsMesh` and :class:`PhaseDiagonal` inside ``model`` gets errors;
    ``model`` itself is not modified.  Calling it on a pretrained ideal model is the
    papers' "pretrain ideal, copy onto the chip" step.
    """
    chip = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in chip.modules():
            if isinstance(module, ClementsMesh):
                _fabricate_mesh(module, errors, generator)
            elif isinstance(module, PhaseDiagonal):
                _fabricate_diagonal(module, errors, generator)
    return chip


def transfer_parameters(source: nn.Module, target: nn.Module) -> None:
    """Copy the parameter values of ``source`` into ``target`` (same names), leaving buffers alone.

    Unlike ``load_state_dict`` this keeps the target's fabrication errors: it programs an
    existing chip with the phases of (for example) a pretrained ideal model.
    """
    target_parameters = dict(target.named_parameters())
    source_parameters = dict(source.named_parameters())
    if target_parameters.keys() != source_parameters.keys():
        raise ValueError("source and target do not have the same parameter names")
    with torch.no_grad():
        for name, parameter in source_parameters.items():
            target_parameters[name].copy_(parameter)
