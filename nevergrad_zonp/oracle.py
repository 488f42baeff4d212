"""The contract between the ZO optimizers and a model-aware objective (an adapter).

A plain Nevergrad objective returns a float and nothing else.  A model-aware objective
additionally

- evaluates all queries of one ZO iteration on the *same* mini-batch: the optimizer
  assigns every candidate it asks to a batch key (the iteration index) with
  :meth:`OutputOracle.assign_batch`, and the objective looks the key up when it is called
  with that candidate's value, whichever evaluation path (sequential, thread or process
  executor, vectorized) calls it and in whatever order;
- returns the network *outputs* (not only the loss) for parameter settings that differ
  from ``theta`` in one block, which is what ZO-NP's black-box Fisher needs
  (:meth:`OutputOracle.block_outputs`).

:class:`nevergrad_zonp.HardwareAdapter` and :class:`nevergrad_zonp.ModelAdapter` implement
it; any object with these members works.  An oracle may also offer
``block_losses(theta, start, deltas, key)`` (the losses of the same settings, shape
``(V,)``): :func:`~nevergrad_zonp.minimize_vectorized` then evaluates whole ZO iterations
without building a parameter vector per query (the iteration-level fast path).  Its ``parametrization`` must be a plain
``ng.p.Array`` (standardized data = parameters - initial parameters).
"""

from __future__ import annotations

import typing as tp

import numpy as np


@tp.runtime_checkable
class OutputOracle(tp.Protocol):
    """Structural type of a model-aware objective (see the module docstring)."""

    output: str
    parametrization: tp.Any

    def assign_batch(self, value: np.ndarray, key: int) -> None:
        """Evaluate the parameter vector ``value`` on mini-batch ``key`` when it is queried."""

    def block_outputs(self, theta: np.ndarray, start: int, deltas: np.ndarray, key: int) -> np.ndarray:
        """Outputs ``(V, batch, *event)`` at ``theta`` with ``deltas[v]`` added to ``theta[start:start + n]``.

        ``deltas`` has shape ``(V, n)``; all ``V`` settings are evaluated on mini-batch ``key``
        and counted as ``V`` queries.
        """
