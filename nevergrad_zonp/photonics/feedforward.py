"""Feed-forward MZI network: real inputs encoded in field amplitudes, coherent readout.

Architecture (``D`` hidden layers, ``K`` ports, meshes of ``L`` columns):

    z_0 = (x_1, ..., x_n, c, 0, ..., 0) in C^K        (amplitude encoding, c = bias light)
    z_l = modReLU_l(Clements_l(K, L) z_{l-1}),  l = 1..D
    y   = g Re(Clements_{D+1}(K, L) z_D)_{0..m-1}      (coherent detection of m ports)

The constant port ``c`` gives the network an offset, as a bias does in an electronic
layer; the fixed gain ``g`` sets the output scale (a unitary row has norm 1, so without it
``|y_k| <= |z_0|``).  Trainable parameters: the phases of the ``D + 1`` meshes and the
modReLU biases, ``(D + 1) L (K - 1) + D K`` in all for even ``L``.  With zero biases the
modReLUs are the identity, so the network starts as a random linear interferometer.
Layers as in the photonic networks of docs/method.md, "Photonic networks".
"""

from __future__ import annotations

import torch
from torch import nn

from nevergrad_zonp.photonics.layers import ModReLU
from nevergrad_zonp.photonics.mesh import ClementsMesh


class MZIFeedForward(nn.Module):
    """``x`` of shape ``(*B, inputs)`` (real) to ``y`` of shape ``(*B, outputs)`` (real)."""

    def __init__(
        self,
        inputs: int,
        outputs: int = 1,
        *,
        ports: int,
        hidden_layers: int,
        columns: int | None = None,
        bias_light: float = 1.0,
        gain: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if inputs + 1 > ports or outputs > ports:
            raise ValueError(f"{inputs} inputs plus the bias light and {outputs} outputs need at most {ports} ports")
        self.inputs, self.outputs, self.ports = inputs, outputs, ports
        self.bias_light, self.gain = bias_light, gain
        self.meshes = nn.ModuleList(ClementsMesh(ports, columns, generator=generator) for _ in range(hidden_layers + 1))
        self.activations = nn.ModuleList(ModReLU(ports) for _ in range(hidden_layers))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Input fields ``(x, c, 0, ..., 0)`` of shape ``(*B, K)`` (real amplitudes)."""
        padding = x.new_zeros(*x.shape[:-1], self.ports - self.inputs)
        padding[..., 0] = self.bias_light
        return torch.cat([x, padding], dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encode(x)
        for mesh, activation in zip(self.meshes, self.activations):
            z = activation(mesh(z))
        return self.gain * self.meshes[-1](z)[..., : self.outputs].real
