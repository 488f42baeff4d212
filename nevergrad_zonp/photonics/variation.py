"""Broadcasting per-setting parameters against a signal that carries a variation dimension.

Every functional building block of :mod:`nevergrad_zonp.photonics` takes parameters of
shape ``(*V, *E)`` (``V`` the leading "variation" dimensions, one entry per parameter
setting, ``E`` the parameter's own shape) and a signal of shape ``(*V, *B, K)`` whose
leading dimensions match (or broadcast against) ``V``, followed by any batch dimensions
``B`` and the ``K`` optical ports.  This lets Q + 1 parameter settings be evaluated in
one call (docs/method.md, "Photonic networks").
"""

from __future__ import annotations

import torch


def align_to_signal(values: torch.Tensor, signal: torch.Tensor, event_ndim: int) -> torch.Tensor:
    """Insert singleton batch dimensions into ``values`` so that it broadcasts against ``signal``.

    ``values`` has shape ``(*V, *E)`` with ``len(E) == event_ndim``; ``signal`` has shape
    ``(*V, *B, K)``.  Returns a view of shape ``(*V, 1, ..., 1, *E)`` with ``len(B)`` ones.
    """
    variation = values.shape[: values.ndim - event_ndim]
    batch_ndim = signal.ndim - len(variation) - 1
    if batch_ndim < 0:
        raise ValueError(
            f"signal of shape {tuple(signal.shape)} has fewer leading dimensions than the "
            f"variation dimensions {tuple(variation)} of the parameters"
        )
    return values.reshape(*variation, *([1] * batch_ndim), *values.shape[values.ndim - event_ndim :])
