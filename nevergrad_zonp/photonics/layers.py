"""Element-wise photonic layers: a diagonal of phase shifters (PSdiag) and modReLU.

modReLU is the nonlinearity of unitary RNNs (M. Arjovsky, A. Shah, Y. Bengio, "Unitary
evolution recurrent neural networks", ICML 2016): it changes the modulus of each complex
amplitude and keeps its phase,

    modReLU(z)_k = z_k (|z_k| + b_k) / |z_k|   if |z_k| + b_k >= 0,   else 0,

with ``|z|`` evaluated as ``sqrt(|z|^2 + eps)`` so that the gradient stays finite at 0.
PSdiag(K) multiplies port ``k`` by ``zeta_k e^{j phi_k}`` (ideal ``zeta = 1``).  Biases and
diagonal phases start at 0 (docs/method.md, "Photonic networks"), so both layers start as the identity.

Both functions accept parameters of shape ``(*V, K)`` and signals of shape ``(*V, *B, K)``
(see :mod:`nevergrad_zonp.photonics.variation`).
"""

from __future__ import annotations

import torch
from torch import nn

from nevergrad_zonp.photonics.variation import align_to_signal

MODULUS_EPS = 1e-12


def mod_relu(z: torch.Tensor, bias: torch.Tensor, eps: float = MODULUS_EPS) -> torch.Tensor:
    """modReLU of complex ``z`` with per-port ``bias`` (shapes ``(*V, *B, K)`` and ``(*V, K)``)."""
    modulus = torch.sqrt(z.real**2 + z.imag**2 + eps)
    return z * (torch.relu(modulus + align_to_signal(bias, z, 1)) / modulus)


def phase_diagonal(
    z: torch.Tensor,
    phases: torch.Tensor,
    transmission: torch.Tensor | float = 1.0,
    phase_errors: torch.Tensor | float = 0.0,
) -> torch.Tensor:
    """PSdiag: ``z_k -> transmission_k e^{j (phi_k + phase_error_k)} z_k`` for phases of shape ``(*V, K)``."""
    angle = align_to_signal(phases, z, 1) + phase_errors
    return z * (torch.complex(torch.cos(angle), torch.sin(angle)) * transmission)


class ModReLU(nn.Module):
    """modReLU(K) with trainable real biases ``bias`` (shape ``(K,)``, initialised to 0)."""

    def __init__(self, ports: int, eps: float = MODULUS_EPS) -> None:
        super().__init__()
        self.ports, self.eps = ports, eps
        self.bias = nn.Parameter(torch.zeros(ports))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return mod_relu(z, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"ports={self.ports}"


class PhaseDiagonal(nn.Module):
    """PSdiag(K): ``K`` independent phase shifters ``phases`` (initialised to 0).

    Fabrication errors: per-port ``port_transmission`` and ``port_phase_errors`` buffers.
    """

    def __init__(self, ports: int) -> None:
        super().__init__()
        self.ports = ports
        self.phases = nn.Parameter(torch.zeros(ports))
        self.register_buffer("port_transmission", torch.ones(ports))
        self.register_buffer("port_phase_errors", torch.zeros(ports))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return phase_diagonal(z, self.phases, self.port_transmission, self.port_phase_errors)

    def extra_repr(self) -> str:
        return f"ports={self.ports}"
