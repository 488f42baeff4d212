"""Perturbation samplers: the only thing that differs between ZO-I, ZO-co and ZO-NP.

Each sampler draws ``Q`` directions for a block of ``n`` coordinates (DESIGN.md section 2):

- :class:`IsotropicSampler` (ZO-I): ``u ~ N(0, I)``;
- :class:`CoordinateSampler` (ZO-co): ``u = e_j``, ``j`` uniform over the block, drawn with
  replacement;
- :class:`NaturalSampler` (ZO-NP): ``u ~ N(0, Sigma_b)`` with
  ``Sigma_b = (F~_b + rho I)^-1``, ``F~_b = n F_b / tr F_b`` the trace-normalised Fisher of
  the block.  With ``F~_b + rho I = L L^T`` the draw is ``u = L^-T r``, ``r ~ N(0, I)``: one
  Cholesky per refresh, one triangular solve per draw, no explicit inverse.  As
  ``rho -> inf`` it becomes ZO-I.

The optimizer rescales every direction to norm ``sqrt(n)`` by default, so only the *shape*
of the covariance matters.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import solve_triangular


class IsotropicSampler:
    """ZO-I: standard Gaussian directions."""

    uses_fisher = False

    def sample(self, rng: np.random.RandomState, block: int, size: int, num: int) -> np.ndarray:
        """``num`` directions of dimension ``size`` for block ``block``, shape ``(num, size)``."""
        return rng.normal(size=(num, size))


class CoordinateSampler:
    """ZO-co: unit coordinate vectors, coordinates drawn uniformly with replacement."""

    uses_fisher = False

    def sample(self, rng: np.random.RandomState, block: int, size: int, num: int) -> np.ndarray:
        """``num`` rows of the identity of size ``size`` chosen uniformly with replacement."""
        directions = np.zeros((num, size))
        directions[np.arange(num), rng.randint(size, size=num)] = 1.0
        return directions


class NaturalSampler:
    """ZO-NP: Gaussian directions with covariance ``(F~_b + rho I)^-1`` per block.

    Blocks whose Fisher has never been estimated use ``F_b = I``, i.e. isotropic directions.
    The Cholesky factor of each refreshed block is stored (float32 halves the memory of the
    ``B x n_b^2`` store; the factorisation itself runs in float64).  With smoothing
    ``alpha < 1`` the trace-normalised Fisher is stored as well, to be blended with the next
    estimate: ``F_b <- alpha F_new + (1 - alpha) F_b``.
    """

    uses_fisher = True
    storage = np.float32

    def __init__(self, damping: float, smoothing: float) -> None:
        if not damping > 0:
            raise ValueError(f"rho (damping) must be positive, got {damping}")
        if not 0 < smoothing <= 1:
            raise ValueError(f"alpha (smoothing) must be in (0, 1], got {smoothing}")
        self.damping = damping
        self.smoothing = smoothing
        self.factors: dict[int, np.ndarray] = {}
        self.fishers: dict[int, np.ndarray] = {}

    @property
    def matrices_per_block(self) -> int:
        """Dense matrices stored per refreshed block (factor, plus the Fisher when smoothing)."""
        return 1 if self.smoothing == 1 else 2

    def update(self, block: int, fisher: np.ndarray) -> bool:
        """Blends in a new Fisher estimate for ``block`` and refactorises.

        Returns ``False`` (and keeps the previous state) when the estimate is unusable:
        non-finite, or with a non-positive trace (e.g. all outputs saturated).
        """
        size = fisher.shape[0]
        trace = float(np.trace(fisher))
        if not (np.all(np.isfinite(fisher)) and np.isfinite(trace) and trace > 0):
            return False
        normalised = fisher * (size / trace)
        if self.smoothing < 1:
            previous = self.fishers.get(block)
            previous = np.eye(size) if previous is None else previous.astype(np.float64)
            normalised = self.smoothing * normalised + (1 - self.smoothing) * previous
            self.fishers[block] = normalised.astype(self.storage)
        system = 0.5 * (normalised + normalised.T) + self.damping * np.eye(size)
        try:
            factor = np.linalg.cholesky(system)
        except np.linalg.LinAlgError:
            return False
        self.factors[block] = factor.astype(self.storage)
        return True

    def covariance(self, block: int, size: int) -> np.ndarray:
        """The sampling covariance ``(F~_b + rho I)^-1`` of a block (for inspection and tests)."""
        factor = self.factors.get(block)
        if factor is None:
            return np.eye(size) / (1 + self.damping)
        inv_factor = solve_triangular(factor.astype(np.float64), np.eye(size), lower=True)
        return inv_factor.T @ inv_factor

    def sample(self, rng: np.random.RandomState, block: int, size: int, num: int) -> np.ndarray:
        """``num`` draws ``u = L^-T r`` of the block's natural-perturbation Gaussian, shape ``(num, size)``."""
        noise = rng.normal(size=(size, num))
        factor = self.factors.get(block)
        if factor is None:
            return noise.T / np.sqrt(1 + self.damping)
        return solve_triangular(factor, noise.astype(self.storage), lower=True, trans="T").T.astype(np.float64)
