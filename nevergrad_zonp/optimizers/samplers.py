"""Perturbation samplers: the only thing that differs between ZO-I, ZO-co and ZO-NP.

Each sampler draws ``Q`` directions for a block of ``n`` coordinates (docs/method.md, "The
zeroth-order estimate"):

- :class:`IsotropicSampler` (ZO-I): ``u ~ N(0, I)``;
- :class:`CoordinateSampler` (ZO-co): ``u = e_j``, ``j`` uniform over the block, drawn with
  replacement;
- :class:`NaturalSampler` (ZO-NP): ``u ~ N(0, Sigma_b)`` with
  ``Sigma_b = (F~_b + rho I)^-1``, ``F~_b = n F_b / tr F_b`` the trace-normalised Fisher of
  the block.  With ``F~_b + rho I = L L^T`` the draw is ``u = L^-T r``, ``r ~ N(0, I)``: one
  Cholesky per refresh, one triangular solve per draw, no explicit inverse.  As
  ``rho -> inf`` it becomes ZO-I.  A compact form keeps the ``r`` leading eigenpairs of
  ``F~_b`` instead (``O(n r)`` memory and time per draw).

The optimizer rescales every direction to norm ``sqrt(n)`` by default, so only the *shape*
of the covariance matters.

A sampler is a part of the ZO loop (:mod:`.loop`).  The loop calls
``draw(rng, block, start, stop, num)`` for the ``(num, n)`` directions of an iteration and
``reset(block, start, stop)`` after a recovery; ``restricted`` keeps directions off the
discrete coordinates of a mixed parametrization; ``covariance`` describes the draws.  A
draw is two steps: :meth:`noise` takes the random numbers (the only use of randomness) and
:meth:`shape` turns them into directions; ``sample = shape(noise(...))`` on a given
generator, without the stream or the normalisation.  The Gaussian samplers take their
numbers from a :class:`NormalStream`.
"""

from __future__ import annotations

import math
import typing as tp

import numpy as np
import torch
from scipy.linalg import solve_triangular
from scipy.linalg.lapack import dtrtrs, strtrs

from .resources import single_threaded_blas

#: Where the Gaussian samplers' numbers come from (the ``direction_stream`` setting).
DIRECTION_STREAMS = ("torch", "legacy")
_TINY = np.finfo(float).tiny


class _TorchNormals:
    """``normal(size=(a, b))`` from a torch CPU generator: float32 normals by a vectorised Box-Muller transform."""

    __slots__ = ("generator",)

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator

    def normal(self, size: tp.Tuple[int, int]) -> np.ndarray:
        return torch.randn(size, generator=self.generator).numpy()


class NormalStream:
    """The source of a Gaussian sampler's standard normals.

    ``"torch"``: a torch CPU generator, seeded from the optimizer's random state at the first
    draw (so seeding the parametrization after building the optimizer counts), float32
    numbers.  ``"legacy"``: numpy's ``RandomState.normal`` on the optimizer's random state,
    float64.  The generator pickles as its state tensor.
    """

    def __init__(self, kind: str = "torch") -> None:
        if kind not in DIRECTION_STREAMS:
            raise ValueError(f"direction_stream must be one of {DIRECTION_STREAMS}, got {kind!r}")
        self.kind = kind
        self.generator: tp.Optional[torch.Generator] = None

    def source(self, rng: np.random.RandomState) -> tp.Any:
        """An object with ``normal(size=...)``: ``rng`` itself (legacy) or the torch generator's normals."""
        if self.kind == "legacy":
            return rng
        if self.generator is None:
            seed = int(rng.randint(2**63 - 1, dtype=np.int64))
            self.generator = torch.Generator().manual_seed(seed)
        return _TorchNormals(self.generator)

    def __getstate__(self) -> tp.Dict[str, tp.Any]:
        state = dict(self.__dict__)
        if self.generator is not None:  # its state tensor: any torch version pickles that
            state["generator"] = self.generator.get_state()
        return state

    def __setstate__(self, state: tp.Dict[str, tp.Any]) -> None:
        generator = state.get("generator")
        if isinstance(generator, torch.Tensor):
            state["generator"] = torch.Generator()
            state["generator"].set_state(generator)
        self.__dict__.update(state)


def normalised(directions: np.ndarray, size: int) -> np.ndarray:
    """``directions`` rescaled in place to norm ``sqrt(size)`` each (a zero row stays zero)."""
    if directions.size:
        # np.linalg.norm(directions, axis=1, keepdims=True), bit for bit, without its argument handling
        norms = np.sqrt(np.add.reduce(directions * directions, axis=1, keepdims=True))
        directions *= math.sqrt(size) / np.maximum(norms, _TINY)
    return directions


class _GaussianDraws:
    """What the Gaussian samplers share: the stream, the normalisation, the restriction to continuous coordinates."""

    stream: NormalStream
    normalize: bool

    def draw(self, rng: np.random.RandomState, block: int, start: int, stop: int, num: int) -> np.ndarray:
        """The ``(num, stop - start)`` directions of an iteration on ``block``, normalised to ``sqrt(n)`` if configured."""
        size = stop - start
        if not num:
            return np.zeros((0, size))
        directions = self.shape(block, self.noise(self.stream.source(rng), size, num))  # type: ignore[attr-defined]
        return normalised(directions, size) if self.normalize else directions

    def restricted(self, directions: np.ndarray, continuous: np.ndarray) -> np.ndarray:
        """``directions`` with the discrete coordinates (``~continuous``) zeroed, normalised again if configured."""
        directions[:, ~continuous] = 0.0
        return normalised(directions, directions.shape[1]) if self.normalize else directions

    def reset(self, block: int, start: int, stop: int) -> None:
        """Nothing to forget after a recovery (a Fisher describes the model, not the path)."""

#: LAPACK's triangular solve per working dtype: what ``scipy.linalg.solve_triangular`` calls,
#: called directly on each draw, without its argument handling.
_TRTRS = {np.dtype(np.float32): strtrs, np.dtype(np.float64): dtrtrs}


class IsotropicSampler(_GaussianDraws):
    """ZO-I: standard Gaussian directions."""

    def __init__(self, normalize: bool = True, stream: str = "torch") -> None:
        self.normalize = normalize
        self.stream = NormalStream(stream)

    def covariance(self, block: int, size: int) -> np.ndarray:
        """The covariance of the draws (before normalisation): ``I``."""
        return np.eye(size)

    def sample(self, rng: np.random.RandomState, block: int, size: int, num: int) -> np.ndarray:
        """``num`` directions of dimension ``size`` for block ``block``, shape ``(num, size)``."""
        return self.shape(block, self.noise(rng, size, num))

    def noise(self, rng: np.random.RandomState, size: int, num: int) -> np.ndarray:
        """The random numbers of a draw: ``(num, size)`` standard normals."""
        return rng.normal(size=(num, size))

    def shape(self, block: int, noise: np.ndarray) -> np.ndarray:
        """The directions of ``noise``: the noise itself."""
        return noise


class CoordinateSampler:
    """ZO-co: unit coordinate vectors, coordinates drawn uniformly with replacement (from the optimizer's random state)."""

    def __init__(self, normalize: bool = True) -> None:
        self.normalize = normalize

    def draw(self, rng: np.random.RandomState, block: int, start: int, stop: int, num: int) -> np.ndarray:
        """``num`` coordinate vectors of the block, ``(num, stop - start)``, of norm ``sqrt(n)`` if configured (else 1)."""
        size = stop - start
        if not num:
            return np.zeros((0, size))
        directions = self.shape(block, self.noise(rng, size, num))
        return normalised(directions, size) if self.normalize else directions

    def restricted(self, directions: np.ndarray, continuous: np.ndarray) -> np.ndarray:
        """``directions`` as they are: each touches one coordinate (a discrete one moves by a probe's rule instead)."""
        return directions

    def reset(self, block: int, start: int, stop: int) -> None:
        """Nothing to forget after a recovery."""

    def covariance(self, block: int, size: int) -> np.ndarray:
        """The covariance of the draws: ``I / n``."""
        return np.eye(size) / size

    def sample(self, rng: np.random.RandomState, block: int, size: int, num: int) -> np.ndarray:
        """``num`` rows of the identity of size ``size`` chosen uniformly with replacement."""
        return self.shape(block, self.noise(rng, size, num))

    def noise(self, rng: np.random.RandomState, size: int, num: int) -> tuple[int, np.ndarray]:
        """The random numbers of a draw: the block size and ``num`` coordinates in ``[0, size)``."""
        return size, rng.randint(size, size=num)

    def shape(self, block: int, noise: tuple[int, np.ndarray]) -> np.ndarray:
        """The rows of the identity at the drawn coordinates, ``(num, size)``."""
        size, coordinates = noise
        directions = np.zeros((len(coordinates), size))
        directions[np.arange(len(coordinates)), coordinates] = 1.0
        return directions


STORAGE_DTYPES = ("float32", "float16", "float64")


class NaturalSampler(_GaussianDraws):
    """ZO-NP: Gaussian directions with covariance ``(F~_b + rho I)^-1`` per block.

    Blocks whose Fisher has never been estimated use ``F_b = I``, i.e. isotropic directions.

    Full form (``rank=None``, the paper's): the Cholesky factor of each refreshed block is
    stored (``B x n_b^2`` numbers; the factorisation itself runs in float64).  With
    smoothing ``alpha < 1`` the trace-normalised Fisher is stored as well, to be blended
    with the next estimate: ``F_b <- alpha F_new + (1 - alpha) F_b``.

    Compact form (``rank=r``): the ``r`` leading eigenpairs ``V, lam`` of the
    trace-normalised Fisher are stored (``n_b r`` numbers), the rest of its spectrum is
    dropped, and the covariance is ``(V diag(lam) V^T + rho I)^-1 =
    (I - V diag(lam / (lam + rho)) V^T) / rho`` (Woodbury).  A draw is
    ``u = (r - V diag(1 - sqrt(rho / (lam + rho))) V^T r) / sqrt(rho)`` with ``r ~ N(0, I)``:
    ``O(n_b r)`` time and memory, exact for ``r >= n_b``.  A trace-normalised Fisher
    estimated from a mini-batch of ``m`` samples with ``k`` outputs each has rank at most
    ``m k``, so a rank of that order loses nothing.  Smoothing blends the new estimate with
    the stored one, ``level I + V diag(lam) V^T``: the isotropic share (``level``, from the
    ``F = I`` prior) is kept apart and adds to ``rho`` in the formulas above, and only the
    low-rank part is truncated, so the form stays exact while ``r`` covers the rank of the
    blended estimates (``alpha m k`` per refresh kept).

    ``storage`` is the dtype of the stored matrices (``"float32"`` by default, half of
    float64; ``"float16"`` halves it again and is cast to float32 for each draw).
    """

    def __init__(
        self,
        damping: float,
        smoothing: float,
        rank: int | None = None,
        storage: str = "float32",
        *,
        normalize: bool = True,
        stream: str = "torch",
    ) -> None:
        if not damping > 0:
            raise ValueError(f"rho (damping) must be positive, got {damping}")
        if not 0 < smoothing <= 1:
            raise ValueError(f"alpha (smoothing) must be in (0, 1], got {smoothing}")
        if rank is not None and (int(rank) != rank or rank < 1):
            raise ValueError(f"fisher_rank must be a positive integer or None, got {rank!r}")
        if storage not in STORAGE_DTYPES:
            raise ValueError(f"fisher_storage must be one of {STORAGE_DTYPES}, got {storage!r}")
        self.damping = damping
        self.smoothing = smoothing
        self.rank = None if rank is None else int(rank)
        self.storage = np.dtype(storage)
        self.factors: dict[int, np.ndarray] = {}
        self.eigenvalues: dict[int, np.ndarray] = {}
        self.fishers: dict[int, np.ndarray] = {}
        self.levels: dict[int, float] = {}  # compact form with smoothing: the isotropic share of each block's blend
        self.normalize = normalize
        self.stream = NormalStream(stream)

    @property
    def matrices_per_block(self) -> int:
        """Dense ``n_b x n_b`` matrices stored per refreshed block in the full form (factor, plus the Fisher when smoothing)."""
        return 1 if self.smoothing == 1 else 2

    def block_bytes(self, size: int) -> int:
        """Bytes stored for a refreshed block of ``size`` parameters."""
        if self.rank is None:
            return self.matrices_per_block * self.storage.itemsize * size * size
        rank = min(self.rank, size)
        return self.storage.itemsize * size * rank + 8 * rank

    def _dense_previous(self, block: int, size: int) -> np.ndarray:
        """The full form's stored estimate of ``block`` (``F = I`` before its first refresh)."""
        previous = self.fishers.get(block)
        return np.eye(size) if previous is None else previous.astype(np.float64)

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
        if not np.all(np.isfinite(normalised)):  # a positive but subnormal trace: size / trace overflows
            return False
        if self.rank is not None:
            return self._update_compact(block, size, normalised)
        if self.smoothing < 1:
            normalised = self.smoothing * normalised + (1 - self.smoothing) * self._dense_previous(block, size)
        symmetric = 0.5 * (normalised + normalised.T)
        try:
            factor = np.linalg.cholesky(symmetric + self.damping * np.eye(size))
        except np.linalg.LinAlgError:
            return False
        if not np.all(np.isfinite(factor)):
            return False
        if self.smoothing < 1:
            self.fishers[block] = normalised.astype(self.storage)
        self.factors[block] = factor.astype(self.storage)
        return True

    def _update_compact(self, block: int, size: int, normalised: np.ndarray) -> bool:
        """The compact form's update: the blend ``level I + V diag(lam) V^T``, its low-rank part truncated to ``r``.

        Smoothing keeps the isotropic share of the blend apart (``level``: ``1 - alpha`` of the
        ``F = I`` prior after a first refresh, shrinking by ``1 - alpha`` at each one), so
        truncating the low-rank part never drops it; with ``alpha = 1`` the level is 0.
        """
        level, low_rank = 0.0, normalised
        if self.smoothing < 1:
            basis = self.factors.get(block)
            level = (1 - self.smoothing) * (1.0 if basis is None else self.levels.get(block, 0.0))
            low_rank = self.smoothing * normalised
            if basis is not None:
                previous = basis.astype(np.float64)
                low_rank = low_rank + (1 - self.smoothing) * ((previous * self.eigenvalues[block]) @ previous.T)
        try:
            values, vectors = np.linalg.eigh(0.5 * (low_rank + low_rank.T))
        except np.linalg.LinAlgError:
            return False
        keep = min(self.rank, size)  # type: ignore[type-var]
        self.eigenvalues[block] = np.maximum(values[::-1][:keep], 0.0)
        self.factors[block] = np.ascontiguousarray(vectors[:, ::-1][:, :keep]).astype(self.storage)
        self.levels[block] = level
        return True

    def _damping(self, block: int) -> float:
        """``rho`` plus the block's isotropic share of a smoothed compact estimate (0 otherwise)."""
        return self.damping + self.levels.get(block, 0.0)

    def covariance(self, block: int, size: int) -> np.ndarray:
        """The sampling covariance ``(F~_b + rho I)^-1`` of a block (for inspection and tests)."""
        factor = self.factors.get(block)
        if factor is None:
            return np.eye(size) / (1 + self.damping)
        if self.rank is not None:
            basis = factor.astype(np.float64)
            values, damping = self.eigenvalues[block], self._damping(block)
            return (np.eye(size) - (basis * (values / (values + damping))) @ basis.T) / damping
        inv_factor = solve_triangular(factor.astype(np.float64), np.eye(size), lower=True)
        return inv_factor.T @ inv_factor

    def sample(self, rng: np.random.RandomState, block: int, size: int, num: int) -> np.ndarray:
        """``num`` draws of the block's natural-perturbation Gaussian, shape ``(num, size)``."""
        return self.shape(block, self.noise(rng, size, num))

    def draw(self, rng: np.random.RandomState, block: int, start: int, stop: int, num: int) -> np.ndarray:
        """As for every Gaussian sampler, with the factor's solve on one BLAS thread."""
        with single_threaded_blas():
            return super().draw(rng, block, start, stop, num)

    def noise(self, rng: np.random.RandomState, size: int, num: int) -> np.ndarray:
        """The random numbers of a draw: ``r``, ``(size, num)`` standard normals."""
        return rng.normal(size=(size, num))

    def shape(self, block: int, noise: np.ndarray) -> np.ndarray:
        """The draws ``u = L^-T r`` (or the compact form's) of the block's current covariance, ``(num, size)``."""
        factor = self.factors.get(block)
        if factor is None:
            return noise.T / np.sqrt(1 + self.damping)
        work = np.float64 if self.storage == np.float64 else np.float32
        if self.rank is not None:
            basis = factor.astype(work, copy=False)
            values, damping = self.eigenvalues[block], self._damping(block)
            shrink = (1.0 - np.sqrt(damping / (values + damping))).astype(work)
            draws = noise.T.astype(work)
            draws = draws - ((draws @ basis) * shrink) @ basis.T
            return draws.astype(np.float64) / np.sqrt(damping)
        # L^T u = r by LAPACK's trtrs, called as solve_triangular(L, r, lower=True, trans="T")
        # calls it (the same routine and arguments, so the same numbers), without its argument
        # handling or a finiteness scan of the n x n factor on every draw: the factor comes from
        # the Cholesky factorisation of a finite matrix, the noise from the generator.
        if not noise.size:
            return np.zeros(noise.shape[::-1])
        lower, right = factor.astype(work, copy=False), noise.astype(work, copy=False)
        trtrs = _TRTRS[np.dtype(work)]
        if lower.flags.f_contiguous:
            solved, info = trtrs(lower, right, lower=1, trans=1)
        else:  # (C order, as stored: trtrs is given the transposed, Fortran-ordered view)
            solved, info = trtrs(lower.T, right, lower=0, trans=0)
        if info != 0:
            raise np.linalg.LinAlgError(f"triangular solve of the block's Fisher factor failed (LAPACK info {info})")
        return solved.T.astype(np.float64)
