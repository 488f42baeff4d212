"""ZO-NP, ZO-I and ZO-co as one configuration of the zeroth-order loop (:mod:`.loop`).

:class:`ZerothOrder` checks its settings and builds the loop's parts: the sampler (natural,
isotropic or coordinate, :mod:`.samplers`), the update rule (Adam, SGD or sign SGD,
:mod:`.estimator`), ZO-NP's Fisher schedule (:mod:`.fisher_schedule`) and the learning-rate
schedule.  Its defaults depend on whether an output oracle is attached: a network's
parameters want a smaller learning rate and a cosine schedule than Nevergrad's standardized
problems (:data:`DEFAULT_LR`, :data:`DEFAULT_ORACLE_LR`, :data:`DEFAULT_SGD_LR`;
docs/results/defaults.md).
"""

from __future__ import annotations

import typing as tp

from nevergrad.optimization import base

from .._checks import check_choice, check_flag, check_fraction, check_integer, check_positive
from .blocks import block_bounds, check_fisher_memory
from .estimator import UPDATE_RULES
from .fisher_schedule import FISHER_REFRESHES, FisherSchedule, resolve_fisher_refresh
from .parts import LoopParts
from .loop import (
    FlatQueriesWarning,
    InvalidQueryWarning,
    NaturalPerturbationsInactiveWarning,
    UntoldQueriesWarning,
    ZerothOrderLoop,
)
from .samplers import DIRECTION_STREAMS, STORAGE_DTYPES, CoordinateSampler, IsotropicSampler, NaturalSampler

__all__ = [
    "ZerothOrder",
    "FlatQueriesWarning",
    "InvalidQueryWarning",
    "NaturalPerturbationsInactiveWarning",
    "UntoldQueriesWarning",
    "resolve_fisher_refresh",
]

SAMPLERS = ("natural", "isotropic", "coordinate")
BLOCK_SELECTIONS = ("random", "cyclic")
LR_SCHEDULES = ("constant", "cosine")
#: Default Adam learning rate on a plain Nevergrad problem (standardized space, natural scale 1).
DEFAULT_LR = 0.1
#: Default learning rate once an output oracle (a network's parameters) is attached.
DEFAULT_ORACLE_LR = 0.02
#: Default learning rate of plain ZO-SGD (``update="sgd"``), whose step scales with the gradient.
DEFAULT_SGD_LR = 0.03
#: Schedule used when ``lr_schedule=None`` on a plain problem.
DEFAULT_SCHEDULE = "constant"
#: Schedule used when ``lr_schedule=None`` once an output oracle is attached.
DEFAULT_ORACLE_SCHEDULE = "cosine"


class ZerothOrder(base.ConfiguredOptimizer):
    """Block-wise zeroth-order optimizer with Adam; ZO-NP, ZO-I or ZO-co by its sampler.

    Symbols are those of the paper (Sawada et al., ICML 2025) and of docs/method.md; the
    iteration is :mod:`nevergrad_zonp.optimizers.loop`'s.  All settings are keyword-only and checked here:
    a value of the wrong type or out of range raises ``ValueError`` naming the setting.
    Building the optimizer raises ``ValueError`` for a parametrization with constraints or
    a stochastic one (``ng.p.Choice``), and ``MemoryError`` when ZO-NP's stored Fisher
    factors would not fit in memory.  Lengths are in Nevergrad's standardized space.

    Parameters
    ----------
    sampler: str
        ``"natural"`` (default; ZO-NP: ``u ~ N(0, (F~_b + rho I)^-1)``), ``"isotropic"`` (ZO-I:
        ``u ~ N(0, I)``) or ``"coordinate"`` (ZO-co: coordinate vectors drawn uniformly with
        replacement).
    num_directions: int
        Q >= 1, perturbations per iteration (default 10); an iteration costs ``Q + 1``
        queries.
    lr: float or None
        learning rate of the update rule (> 0), the main per-task setting.  ``None``
        (default): :data:`DEFAULT_LR` (0.1) on a plain Nevergrad problem,
        :data:`DEFAULT_ORACLE_LR` (0.02) once an output oracle is attached, and
        :data:`DEFAULT_SGD_LR` (0.03) with ``update="sgd"`` in both cases.
    mu: float
        mu0 > 0 (default 1e-3), norm of the finite-difference displacement: a direction of
        norm ``sqrt(n)`` is scaled by ``mu0 / sqrt(n)``.
    rho: float
        damping > 0 added to the trace-normalised Fisher (ZO-NP; default 0.1);
        ``rho -> inf`` gives ZO-I.
    max_block_size: int
        N_max >= 1 (default 512); the ``N`` parameters are split into ``ceil(N / N_max)``
        nearly equal contiguous blocks.
    fisher_period: int
        T_ud >= 1 (default 100), iterations between Fisher refreshes (ZO-NP; for
        ``"per_block"``, uses of a block between its refreshes).
    fd_step: float
        h > 0 (default 1e-3), finite-difference step of the output Jacobian (ZO-NP).
    smoothing: float
        alpha in (0, 1] (default 1 = replace), exponential smoothing of successive Fisher
        estimates: ``F <- alpha F_new + (1 - alpha) F``.
    block_selection: str
        ``"random"`` (uniform, default) or ``"cyclic"`` block order.
    normalize: bool
        rescale every direction to norm ``sqrt(n)`` (default ``True``), so only the
        covariance's shape matters; ``False`` keeps the raw draws.
    lr_schedule: str or None
        ``"constant"`` (the paper's) or ``"cosine"``: the learning rate at a step is
        ``lr * (f + (1 - f) (1 + cos(pi t)) / 2)``, ``t`` the fraction of the query budget
        spent (capped at 1) and ``f = COSINE_FLOOR`` (0.01); without a budget the rate is
        constant.  ``None`` (default): ``"cosine"`` once an output oracle is attached,
        ``"constant"`` on a plain Nevergrad problem.
    fisher_refresh: str
        when and for which block the Fisher is estimated (ZO-NP).  ``"per_block"``: at a
        block's first use and again after every ``fisher_period`` uses of that block, while
        the Fisher queries stay within ``PER_BLOCK_FISHER_SHARE`` (20 %) of the budget (a
        block left without one runs as block ZO-I).  ``"sampled"`` (the paper's, registered
        as ``ZONPPaper``): every ``fisher_period`` iterations, the block sampled at that
        iteration; with ``B`` blocks and ``R`` refreshes a block is left without a Fisher
        with probability ``(1 - 1/B)^R``.  ``"least_recent"``: every ``fisher_period``
        iterations, the block whose Fisher is oldest (never-estimated blocks first), which
        that iteration then steps on.  ``"auto"`` (default): ``"per_block"`` when one
        Fisher for every block costs at most ``AUTO_PER_BLOCK_SHARE`` (15 %) of the budget
        or there is no budget, else ``"sampled"`` (:func:`resolve_fisher_refresh`; the
        optimizer's ``fisher_refresh`` property gives the rule in use).  A refresh costs
        ``n_b + 1`` queries and is skipped when fewer queries than that would be left after
        it for the iterations that use it.
    fisher_rank: int or None
        ``None`` (default, the paper's): the full ``n_b x n_b`` Cholesky factor of every
        block's ``F~_b + rho I`` is stored.  ``r >= 1``: only the ``r`` leading eigenpairs of
        ``F~_b`` (``n_b r`` numbers per block, draws in ``O(n_b r)``, the rest of the
        spectrum taken as 0; exact for ``r >= n_b``).
    fisher_storage: str
        dtype of the stored Fisher matrices: ``"float32"`` (default), ``"float16"`` (cast to
        float32 for each draw) or ``"float64"``.
    update: str
        the update rule: ``"adam"`` (default; ZO-Adam, betas 0.9, 0.999, eps 1e-8, ``lam =
        1/n``), ``"sgd"`` (ZO-SGD, ``theta -= lr * g`` with the unbiased estimate, ``lam =
        1``) or ``"sign"`` (ZO-signSGD, ``theta -= lr * sign(g)``).  The learning rate and
        its schedule apply to all three.
    direction_stream: str
        where the Gaussian directions' numbers come from: ``"torch"`` (default; a torch CPU
        generator seeded from the Nevergrad random state at the first draw, float32) or
        ``"legacy"`` (numpy's ``RandomState.normal`` on the Nevergrad random state,
        float64).  ZO-co's coordinates and the block choice come from the Nevergrad random
        state with both.
    """

    def __init__(
        self,
        *,
        sampler: str = "natural",
        num_directions: int = 10,
        lr: tp.Optional[float] = None,
        mu: float = 1e-3,
        rho: float = 0.1,
        max_block_size: int = 512,
        fisher_period: int = 100,
        fd_step: float = 1e-3,
        smoothing: float = 1.0,
        block_selection: str = "random",
        normalize: bool = True,
        lr_schedule: tp.Optional[str] = None,
        fisher_refresh: str = "auto",
        fisher_rank: tp.Optional[int] = None,
        fisher_storage: str = "float32",
        update: str = "adam",
        direction_stream: str = "torch",
    ) -> None:
        config = dict(locals())
        self.sampler = check_choice("sampler", sampler, SAMPLERS)
        check_loop_settings(
            self, num_directions=num_directions, lr=lr, mu=mu, max_block_size=max_block_size,
            block_selection=block_selection, normalize=normalize, lr_schedule=lr_schedule, update=update,
            direction_stream=direction_stream,
        )
        self.rho = check_positive("rho", rho)
        self.fisher_period = check_integer("fisher_period", fisher_period)
        self.fd_step = check_positive("fd_step", fd_step)
        self.smoothing = check_fraction("smoothing (alpha)", smoothing, zero=False)
        self.fisher_refresh = check_choice("fisher_refresh", fisher_refresh, FISHER_REFRESHES)
        self.fisher_rank = check_integer("fisher_rank", fisher_rank, optional=True)
        self.fisher_storage = check_choice("fisher_storage", fisher_storage, STORAGE_DTYPES)
        super().__init__(ZerothOrderLoop, config, as_config=True)

    def build_parts(self, dimension: int, budget: tp.Optional[int]) -> LoopParts:
        """The loop's parts for ``dimension`` parameters and a query ``budget``.

        Raises ``MemoryError`` when ZO-NP's stored Fisher factors would not fit in memory.
        """
        bounds = block_bounds(dimension, self.max_block_size)
        sampler: tp.Union[NaturalSampler, IsotropicSampler, CoordinateSampler]
        fisher = None
        if self.sampler == "natural":
            sampler = NaturalSampler(
                damping=self.rho,
                smoothing=self.smoothing,
                rank=self.fisher_rank,
                storage=self.fisher_storage,
                normalize=self.normalize,
                stream=self.direction_stream,
            )
            check_fisher_memory(bounds, sampler.matrices_per_block, sampler.storage.itemsize, rank=self.fisher_rank)
            fisher = FisherSchedule(sampler, self.fisher_refresh, self.fisher_period, self.fd_step, bounds, budget)
        elif self.sampler == "isotropic":
            sampler = IsotropicSampler(normalize=self.normalize, stream=self.direction_stream)
        else:
            sampler = CoordinateSampler(normalize=self.normalize)
        return loop_parts(self, dimension, bounds, sampler, fisher=fisher)

    def oracle_defaults(self, parts: LoopParts) -> None:
        """The defaults for a network's parameters, once an output oracle is attached (settings left at ``None``)."""
        apply_oracle_defaults(parts, self.lr, self.update, self.lr_schedule)


def check_loop_settings(
    configuration: tp.Any,
    *,
    num_directions: int,
    lr: tp.Optional[float],
    mu: float,
    max_block_size: int,
    block_selection: str,
    normalize: bool,
    lr_schedule: tp.Optional[str],
    update: str,
    direction_stream: str,
) -> None:
    """Checks the settings every configuration of the loop shares and sets them on ``configuration``."""
    configuration.num_directions = check_integer("num_directions", num_directions)
    configuration.lr = check_positive("lr", lr, optional=True)
    configuration.mu = check_positive("mu", mu)
    configuration.max_block_size = check_integer("max_block_size", max_block_size)
    configuration.block_selection = check_choice("block_selection", block_selection, BLOCK_SELECTIONS)
    configuration.normalize = check_flag("normalize", normalize)
    configuration.lr_schedule = check_choice("lr_schedule", lr_schedule, LR_SCHEDULES, optional=True)
    configuration.update = check_choice("update", update, UPDATE_RULES)
    configuration.direction_stream = check_choice("direction_stream", direction_stream, DIRECTION_STREAMS)


def loop_parts(configuration: tp.Any, dimension: int, bounds: tp.Any, sampler: tp.Any, **more: tp.Any) -> LoopParts:
    """The parts of a configuration with the shared settings (:func:`check_loop_settings`): its sampler, ``more`` parts."""
    return LoopParts(
        num_directions=configuration.num_directions,
        mu=configuration.mu,
        bounds=bounds,
        block_selection=configuration.block_selection,
        sampler=sampler,
        update=UPDATE_RULES[configuration.update](dimension, len(bounds) - 1, default_lr(configuration.lr, configuration.update)),
        lr_schedule=DEFAULT_SCHEDULE if configuration.lr_schedule is None else configuration.lr_schedule,
        **more,
    )


def default_lr(lr: tp.Optional[float], update: str) -> float:
    """``lr``, or the default learning rate of the update rule on a plain Nevergrad problem."""
    if lr is not None:
        return lr
    return DEFAULT_SGD_LR if update == "sgd" else DEFAULT_LR


def apply_oracle_defaults(parts: LoopParts, lr: tp.Optional[float], update: str, lr_schedule: tp.Optional[str]) -> None:
    """The defaults for a network's parameters once an output oracle is attached, for the settings left at ``None``."""
    if lr is None and update != "sgd":
        parts.update.lr = DEFAULT_ORACLE_LR
    if lr_schedule is None:
        parts.lr_schedule = DEFAULT_ORACLE_SCHEDULE
