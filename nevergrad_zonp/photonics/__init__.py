"""Simulated photonic hardware: MZI meshes, element-wise layers, fabrication errors, networks.

Every module accepts a leading "variation" dimension through ``torch.func.functional_call``
under ``torch.vmap``, and the functional building blocks (``ClementsMesh.propagate``,
``ClementsMesh.unitary``, ``mod_relu``, ``phase_diagonal``) take it natively
(docs/method.md, "Photonic networks").
"""

from nevergrad_zonp.photonics.chip import FabricationErrors, fabricate, transfer_parameters
from nevergrad_zonp.photonics.feedforward import MZIFeedForward
from nevergrad_zonp.photonics.layers import ModReLU, PhaseDiagonal, mod_relu, phase_diagonal
from nevergrad_zonp.photonics.mesh import ClementsMesh, clements_layout, clements_phase_count
from nevergrad_zonp.photonics.recurrent import MZIRecurrentNetwork
from nevergrad_zonp.photonics.variation import align_to_signal

__all__ = [
    "ClementsMesh",
    "FabricationErrors",
    "MZIFeedForward",
    "MZIRecurrentNetwork",
    "ModReLU",
    "PhaseDiagonal",
    "align_to_signal",
    "clements_layout",
    "clements_phase_count",
    "fabricate",
    "mod_relu",
    "phase_diagonal",
    "transfer_parameters",
]
