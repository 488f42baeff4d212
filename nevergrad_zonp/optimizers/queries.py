"""Query designs: which points an iteration asks around its base point, and the estimate they give.

A query design is a part of the ZO loop (:mod:`.loop`).  Given the ``Q`` directions ``u_q``
the sampler drew, it lays out the displacements asked after the base point (``rows``), says
which told losses are usable (``valid``) and forms the gradient estimate from them
(``estimate``); ``h = mu / sqrt(n)`` is the displacement's scale.

- :class:`ForwardDifference` (ZO-I, ZO-co, ZO-NP, the learned optimizer): the rows are the
  directions, ``Q + 1`` queries, ``g = (lam / Q) sum_q (l_q - l_0) / h u_q``
  (:func:`.estimator.zo_gradient`).
- :class:`CentralDifference`: the rows are ``+u_1 .. +u_Q, -u_1 .. -u_Q``, ``2 Q + 1``
  queries (the base loss is asked too: the loop's recovery and a curvature estimate need
  it), ``g = (lam / Q) sum_q (l_q+ - l_q-) / (2 h) u_q``; a pair with a bad loss is left
  out whole.
"""

from __future__ import annotations

import typing as tp

import numpy as np

from .estimator import zo_gradient


@tp.runtime_checkable
class QueryDesign(tp.Protocol):
    """What the loop asks of a query design (see the module docstring)."""

    #: queries per drawn direction (1: one-sided, 2: two-sided)
    per_direction: int

    def affordable(self, queries: int) -> int:
        """Directions an iteration can draw with ``queries`` queries left, one kept for the final iterate."""

    def rows(self, directions: np.ndarray) -> np.ndarray:
        """The ``(per_direction * Q, n)`` displacements asked after the base point."""

    def valid(self, losses: np.ndarray, rows: np.ndarray, all_finite: bool) -> tp.Tuple[np.ndarray, np.ndarray]:
        """The usable losses and their rows (``all_finite``: every loss is known finite)."""

    def estimate(
        self, base_loss: float, losses: np.ndarray, rows: np.ndarray, step: float, lam: float, block: int, start: int, stop: int
    ) -> np.ndarray:
        """The gradient estimate of the block from usable ``losses`` (at least one direction's)."""


class ForwardDifference:
    """One query per direction: ``g = (lam / Q) sum_q (l_q - l_0) / h u_q``."""

    per_direction = 1

    def affordable(self, queries: int) -> int:
        return max(0, queries - 2)

    def rows(self, directions: np.ndarray) -> np.ndarray:
        return directions

    def valid(self, losses: np.ndarray, rows: np.ndarray, all_finite: bool) -> tp.Tuple[np.ndarray, np.ndarray]:
        if not all_finite:
            valid = np.isfinite(losses)
            if not valid.all():  # (a boolean index copies the whole array: only when some loss is left out)
                losses, rows = losses[valid], rows[valid]
        return losses, rows

    def estimate(
        self, base_loss: float, losses: np.ndarray, rows: np.ndarray, step: float, lam: float, block: int, start: int, stop: int
    ) -> np.ndarray:
        return zo_gradient(base_loss, losses, rows, step, lam)


class CentralDifference:
    """Two queries per direction, ``+u`` and ``-u``: ``g = (lam / Q) sum_q (l_q+ - l_q-) / (2 h) u_q``."""

    per_direction = 2

    def affordable(self, queries: int) -> int:
        return max(0, (queries - 2) // 2)

    def rows(self, directions: np.ndarray) -> np.ndarray:
        return np.concatenate([directions, -directions])

    def valid(self, losses: np.ndarray, rows: np.ndarray, all_finite: bool) -> tp.Tuple[np.ndarray, np.ndarray]:
        if len(losses) % 2:  # a mixed parametrization's probe took the place of -u_Q: +u_Q has no pair
            unpaired = len(losses) // 2
            losses, rows = np.delete(losses, unpaired), np.delete(rows, unpaired, axis=0)
        if all_finite:
            return losses, rows
        half = len(losses) // 2
        pairs = np.isfinite(losses[:half]) & np.isfinite(losses[half:])
        if pairs.all():
            return losses, rows
        keep = np.concatenate([pairs, pairs])
        return losses[keep], rows[keep]

    @staticmethod
    def split(losses: np.ndarray, rows: np.ndarray) -> tp.Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The losses at ``+u_q`` and ``-u_q`` and the directions ``u_q`` (``ValueError`` without a pair)."""
        half = len(losses) // 2
        if not half:
            raise ValueError("at least one pair of perturbed losses is needed")
        return losses[:half], losses[half:], rows[:half]

    def estimate(
        self, base_loss: float, losses: np.ndarray, rows: np.ndarray, step: float, lam: float, block: int, start: int, stop: int
    ) -> np.ndarray:
        plus, minus, directions = self.split(losses, rows)
        return (lam / len(plus)) * (((plus - minus) / (2 * step)) @ directions)
