"""Unitary RNN whose recurrence is a Clements MZI mesh, for sequences of tokens.

The recurrence follows the unitary RNN of M. Arjovsky, A. Shah, Y. Bengio, "Unitary
evolution recurrent neural networks", ICML 2016, with the unitary realised by an MZI mesh
followed by a phase-shifter diagonal (``K(K-1) + K = K^2`` phases: a universal
parametrisation of U(K), Clements et al. 2016):

    W   = PSdiag(K) Clements(K, K)                   (photonic, fabrication errors on chip)
    h_0 = 0,   h_t = modReLU(W h_{t-1} + E[:, x_t])  in C^K
    s_t = A [Re h_t ; Im h_t] + a                    (logits, shape (..., T, classes))

The input map ``E`` (complex ``K x vocabulary``, stored as real and imaginary parts) and
the readout ``(A, a)`` are electronic: they set the injected fields and process the
coherently detected outputs, so they are exact on the chip.  Trainable parameters:
``K^2`` phases, ``K`` modReLU biases, ``2 K vocabulary`` input weights and
``(2 K + 1) classes`` readout weights; at ``K = 40`` with 10 input tokens and 9 classes,
3,169.  ``W`` is formed once per forward (the same mesh is used at every step), then each
step is a ``K x K`` product.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from nevergrad_zonp.photonics.layers import ModReLU, PhaseDiagonal
from nevergrad_zonp.photonics.mesh import ClementsMesh


class MZIRecurrentNetwork(nn.Module):
    """Tokens of shape ``(*B, T)`` (integers below ``vocabulary``) to logits ``(*B, T, classes)``.

    Input weights start ``N(0, 1 / vocabulary)`` in each of the real and imaginary parts;
    the readout is ``nn.Linear`` initialised from ``generator``.
    """

    def __init__(self, vocabulary: int, classes: int, *, ports: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.ports = ports
        self.recurrence = ClementsMesh(ports, generator=generator)
        self.diagonal = PhaseDiagonal(ports)
        self.activation = ModReLU(ports)
        scale = 1.0 / math.sqrt(vocabulary)
        self.input_real = nn.Parameter(scale * torch.randn(vocabulary, ports, generator=generator))
        self.input_imag = nn.Parameter(scale * torch.randn(vocabulary, ports, generator=generator))
        with torch.random.fork_rng(devices=[]):  # its default init draws from the global generator: keep the caller's
            self.readout = nn.Linear(2 * ports, classes)  # (overwritten from ``generator`` below)
        bound = 1.0 / math.sqrt(2 * ports)
        with torch.no_grad():
            self.readout.weight.uniform_(-bound, bound, generator=generator)
            self.readout.bias.uniform_(-bound, bound, generator=generator)

    def transition(self) -> torch.Tensor:
        """The recurrent transfer matrix ``W = PSdiag Clements``, shape ``(K, K)``."""
        # PSdiag scales the last axis, so it is applied to the rows of W^T.
        return self.diagonal(self.recurrence.unitary().transpose(-1, -2)).transpose(-1, -2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        transition = self.transition().transpose(-1, -2)
        injected = torch.complex(self.input_real, self.input_imag)[tokens]
        state = injected.new_zeros(*tokens.shape[:-1], self.ports)
        states = []
        for field in injected.unbind(-2):
            state = self.activation(state @ transition + field)
            states.append(state)
        hidden = torch.stack(states, dim=-2)
        return self.readout(torch.cat([hidden.real, hidden.imag], dim=-1))
