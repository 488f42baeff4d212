"""Clements mesh of Mach-Zehnder interferometers, built from phase-shifter / beam-splitter stages.

A PS-BS stage on waveguides ``(i, i+1)`` applies a phase shifter ``e^{j theta}`` on port
``i``, then a 50:50 beam splitter ``(1/sqrt 2) [[1, j], [j, 1]]``; an MZI is two stages on
the same pair (two phases).  ``Clements(K, L)`` has ``L`` MZI columns, alternating the
pairs ``(0,1), (2,3), ...`` (even columns) and ``(1,2), (3,4), ...`` (odd columns), so it
is a sequence of ``S = 2L`` stage columns (docs/method.md, "Photonic networks"; layout of W. R. Clements
et al., "Optimal design for universal multiport interferometers", Optica 3, 1460, 2016).
With ``L = K`` and no fabrication errors the mesh is unitary, and universal up to a diagonal
phase screen on its outputs: its ``K (K - 1)`` phases reach every unitary once a ``K``-phase
screen is added (as the recurrent network's ``PSdiag`` does), not alone (``U(K)`` has ``K^2``
dimensions).

Phase count: ``L (K - 1)`` for odd ``K`` or even ``L``, and ``L (K - 1) + 1`` for even
``K`` with odd ``L`` (even columns hold one more MZI).  ``Clements(8, 8)`` has 56 phases.
The flat phase vector is ordered stage column by stage column, and inside a stage column
by increasing top port ``i``.

Fabrication errors (set by :mod:`nevergrad_zonp.photonics.chip`, buffers, never
parameters) generalise the stage to

    out = BS(alpha) diag(zeta_i e^{j theta}, zeta_{i+1}) in,
    BS(alpha) = [[cos alpha, j sin alpha], [j sin alpha, cos alpha]],

with the ideal splitter at ``alpha = pi / 4`` and a per-port complex transmission
``zeta`` on every port of every stage column (ideal ``zeta = 1``).  Written per port, stage
``s`` maps ``z_k -> d_{s,k} z_k + c_{s,k} z_{p_s(k)}`` with ``p_s(k)`` the port paired
with ``k`` (``k`` itself when unpaired), ``d = cos(alpha) tau``, ``c = j sin(alpha)
tau_{p_s(k)}`` and ``tau = zeta e^{j phi}``: the mesh is applied column by column to the
signal, ``O(L K)`` operations per sample, without forming a matrix.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from nevergrad_zonp.photonics.variation import align_to_signal


def _pair_tops(ports: int, column: int) -> range:
    """Top ports ``i`` of the pairs ``(i, i+1)`` of MZI column ``column``."""
    return range(column % 2, ports - 1, 2)


def clements_phase_count(ports: int, columns: int) -> int:
    """Number of phases of ``Clements(ports, columns)``: two per MZI."""
    return sum(2 * len(_pair_tops(ports, column)) for column in range(columns))


def clements_layout(ports: int, columns: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each phase sits and which ports are paired, stage column by stage column.

    Returns ``(phase_index, partner)``, both integer tensors of shape ``(2 L, K)``:
    ``phase_index[s, k]`` is the index in the flat phase vector of the phase shifter on
    port ``k`` of stage column ``s``, or ``n_phases`` where there is none (bottom or
    unpaired ports); ``partner[s, k]`` is the port coupled to ``k`` by the splitter of
    stage column ``s`` (``k`` itself when unpaired).
    """
    if ports < 2 or columns < 1:
        raise ValueError(f"a Clements mesh needs ports >= 2 and columns >= 1, got {ports}, {columns}")
    n_phases = clements_phase_count(ports, columns)
    phase_index = torch.full((2 * columns, ports), n_phases, dtype=torch.long)
    partner = torch.arange(ports).repeat(2 * columns, 1)
    count = 0
    for stage in range(2 * columns):
        for top in _pair_tops(ports, stage // 2):
            phase_index[stage, top] = count
            partner[stage, top], partner[stage, top + 1] = top + 1, top
            count += 1
    return phase_index, partner


class ClementsMesh(nn.Module):
    """``Clements(ports, columns)`` MZI mesh acting on complex signals of shape ``(..., ports)``.

    The only parameter is ``phases`` (real, shape ``(n_phases,)``, initialised ``N(0, 1)``
    from ``generator``).  ``columns < ports`` gives a truncated mesh.  Fabrication errors
    live in the buffers ``splitter_angles``, ``port_transmission`` and
    ``port_phase_errors`` (all of shape ``(2 columns, ports)``; ``zeta = transmission *
    exp(j phase_error)``), ideal by default.
    """

    def __init__(self, ports: int, columns: int | None = None, *, generator: torch.Generator | None = None) -> None:
        super().__init__()
        columns = ports if columns is None else columns
        phase_index, partner = clements_layout(ports, columns)
        stages = 2 * columns
        self.ports, self.columns = ports, columns
        self.register_buffer("phase_index", phase_index, persistent=False)
        self.register_buffer("partner", partner, persistent=False)
        self.register_buffer(
            "partner_flat", partner + ports * torch.arange(stages).unsqueeze(1), persistent=False
        )
        paired = partner != torch.arange(ports)
        self.register_buffer("splitter_angles", torch.where(paired, math.pi / 4, 0.0))
        self.register_buffer("port_transmission", torch.ones(stages, ports))
        self.register_buffer("port_phase_errors", torch.zeros(stages, ports))
        self.phases = nn.Parameter(torch.randn(clements_phase_count(ports, columns), generator=generator))

    def stage_coefficients(self, phases: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Direct and cross coefficients ``(d, c)`` of every stage, shape ``(*V, 2 L, K)``.

        ``phases`` has shape ``(*V, n_phases)``: one row per parameter setting.
        """
        padded = torch.cat([phases, phases.new_zeros(*phases.shape[:-1], 1)], dim=-1)
        angle = padded[..., self.phase_index] + self.port_phase_errors
        tau = torch.complex(torch.cos(angle), torch.sin(angle)) * self.port_transmission
        direct = torch.cos(self.splitter_angles) * tau
        cross = 1j * torch.sin(self.splitter_angles) * tau.flatten(-2)[..., self.partner_flat]
        return direct, cross

    def propagate(self, z: torch.Tensor, phases: torch.Tensor | None = None) -> torch.Tensor:
        """Apply the mesh to ``z`` (shape ``(*V, *B, K)``), stage column by stage column.

        ``phases`` (default: the module's parameter) has shape ``(*V, n_phases)``; its
        leading dimensions must match or broadcast against those of ``z``.  A real ``z`` is
        treated as real field amplitudes.
        """
        phases = self.phases if phases is None else phases
        direct, cross = (align_to_signal(c, z, 2).unbind(-2) for c in self.stage_coefficients(phases))
        for stage, partner in enumerate(self.partner.unbind(0)):
            z = direct[stage] * z + cross[stage] * z[..., partner]
        return z

    def unitary(self, phases: torch.Tensor | None = None) -> torch.Tensor:
        """Transfer matrix ``U`` (``out = U in``), shape ``(*V, K, K)`` for phases of shape ``(*V, n)``.

        Built by propagating the ``K`` basis vectors; unitary when there are no
        fabrication losses.
        """
        phases = self.phases if phases is None else phases
        basis = torch.eye(self.ports, dtype=phases.dtype, device=phases.device)
        columns = self.propagate(basis.expand(*phases.shape[:-1], self.ports, self.ports), phases)
        return columns.transpose(-1, -2)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Mesh output for input fields ``z`` of shape ``(..., K)``."""
        return self.propagate(z)

    def extra_repr(self) -> str:
        return f"ports={self.ports}, columns={self.columns}"
