"""Block-wise zeroth-order optimization with ZO-I, ZO-co or ZO-NP directions, for Nevergrad.

One optimizer, three samplers (docs/method.md, "The zeroth-order estimate" and "Blocks and the
black-box Fisher"; Sawada, Aoyama and Ikeda, "Natural
Perturbations for Black-box Training of Neural Networks by Zeroth-Order Optimization",
ICML 2025).  Iteration ``k``:

1. choose a block ``b`` of ``n`` contiguous coordinates (uniformly at random, or cyclically);
2. ZO-NP only, every ``fisher_period`` (T_ud) iterations: re-estimate the block's Fisher from
   a finite-difference Jacobian of the network outputs (``n + 1`` queries, through the
   attached :class:`~nevergrad_zonp.oracle.OutputOracle`) and refactorise
   ``F~_b + rho I = L L^T``.  With a budget, a refresh is skipped when fewer queries than
   it costs would be left after it for the iterations that use it (near the end of a run);
3. draw ``Q`` directions ``u_q`` from the sampler, rescaled to norm ``sqrt(n)``;
4. ask ``Q + 1`` candidates: the iterate and the iterate displaced by ``mu / sqrt(n) * u_q``
   in the block, all assigned to mini-batch ``k``;
5. once all ``Q + 1`` losses are told (in any order), form
   ``g = (lam / Q) sum_q (l_q - l_0) / (mu / sqrt(n)) u_q`` with ``lam = 1 / n`` and take a
   step of the update rule on the block (Adam by default; SGD, with ``lam = 1``, or sign
   SGD as settings).  The recommendation is the current iterate.

Everything happens in Nevergrad's standardized space.

Budget: the query budget counts asked candidates and Fisher Jacobian queries
(:attr:`_ZerothOrder.num_queries`).  ``ask`` never raises on budget grounds: when the
queries left cannot fund a full iteration and one more query, the last iteration uses
what is left but one (fewer directions, no refresh) and the last query evaluates the
final iterate alone (harmless, and it makes the last step a point seen finite); asks
beyond the budget start ordinary iterations.  ``minimize`` stops exactly at the budget.

Non-finite losses: perturbed losses that are NaN, infinite or clipped by Nevergrad to 5e20
are dropped from the estimate.  A bad *base* loss means the iterate itself left the region
where the objective is defined: the optimizer goes back to the last iterate whose base
loss was finite (the *anchor*, which is also the recommendation), halves the step scale of
every block stepped since the anchor and resets those blocks' Adam moments, so the next
moves are smaller and carry no momentum into the bad region (:attr:`num_recoveries`).
"""

from __future__ import annotations

import dataclasses
import math
import typing as tp

import numpy as np
import torch
from nevergrad.common import errors
from nevergrad.optimization import base
from nevergrad.parametrization import parameter as p

from ..fisher import finite_difference_jacobian, fisher_from_jacobian
from ..oracle import OutputOracle
from .blocks import block_bounds, check_fisher_memory
from .estimator import UPDATE_RULES, zo_gradient
from .iterations import (
    CLIPPED_LOSS,
    IterationRequest,
    check_oracle_start,
    check_parametrization,
    continuous_coordinates,
    plain_array_origin,
)
from .resources import archive_pruning, single_threaded_blas
from .samplers import STORAGE_DTYPES, CoordinateSampler, IsotropicSampler, NaturalSampler
from .._checks import check_choice, check_flag, check_fraction, check_integer, check_positive
from .settings import CheckedOptimizer

SAMPLERS = ("natural", "isotropic", "coordinate")
FISHER_REFRESHES = ("auto", "per_block", "sampled", "least_recent")
BLOCK_SELECTIONS = ("random", "cyclic")
DIRECTION_STREAMS = ("torch", "legacy")
_TINY = np.finfo(float).tiny
LR_SCHEDULES = ("constant", "cosine")
#: Default Adam learning rate on a plain Nevergrad problem (standardized space, natural scale 1).
DEFAULT_LR = 0.1
#: Default learning rate once an output oracle (a network's parameters) is attached.
DEFAULT_ORACLE_LR = 0.02
#: Default learning rate of plain ZO-SGD (``update="sgd"``), whose step scales with the gradient.
DEFAULT_SGD_LR = 0.03
#: Fraction of ``lr`` a cosine schedule ends at (and keeps beyond the budget).
COSINE_FLOOR = 0.01
#: Schedule used when ``lr_schedule=None`` on a plain problem.
DEFAULT_SCHEDULE = "constant"
#: Schedule used when ``lr_schedule=None`` once an output oracle is attached.
DEFAULT_ORACLE_SCHEDULE = "cosine"


class NaturalPerturbationsInactiveWarning(UserWarning):
    """ZO-NP runs without an output oracle, hence without a Fisher: it behaves as block ZO-I."""


class FlatQueriesWarning(UserWarning):
    """The first iterations' queries all returned their base loss exactly: the displacement is below the objective's resolution."""


#: The first steps checked for queries that all return their base loss (no cost after them).
FLAT_CHECK_STEPS = 5


class UntoldQueriesWarning(UserWarning):
    """Asked queries are not told: their iterations never finish, so their estimates are lost."""


class InvalidQueryWarning(UserWarning):
    """A loss or network output was NaN/inf (or clipped by Nevergrad); it was left out."""


#: Factor applied to a block's step scale when a step of it led to a non-finite base loss.
RECOVERY_SHRINK = 0.5
#: Share of the query budget that ``fisher_refresh="per_block"`` spends on Fisher estimates at most
#: (a refresh beyond it is skipped).
PER_BLOCK_FISHER_SHARE = 0.2
#: ``fisher_refresh="auto"`` refreshes per block when one Fisher for every block costs at most this
#: share of the budget (ZO-NP's regime), else as the paper does (``"sampled"``).
AUTO_PER_BLOCK_SHARE = 0.15


def resolve_fisher_refresh(rule: str, bounds: np.ndarray, budget: tp.Optional[int]) -> str:
    """The refresh rule ``rule`` stands for on blocks ``bounds`` and a query ``budget``.

    ``"auto"``: ``"per_block"`` if there is no budget or one Fisher per block (``n_b + 1``
    queries each) takes at most :data:`AUTO_PER_BLOCK_SHARE` of it, else ``"sampled"``.  On
    smaller budgets ``"per_block"`` would spend its share on the first blocks at the starting
    point and never refresh them; the paper's rule refreshes later points.  Any other
    ``rule`` is returned as it is.
    """
    if rule != "auto":
        return rule
    first_estimates = int(np.sum(np.diff(bounds) + 1))
    return "per_block" if budget is None or first_estimates <= AUTO_PER_BLOCK_SHARE * budget else "sampled"


#: Largest reach of a discrete probe, in standardized units (it doubles while probes change nothing).
PROBE_MAX_REACH = 16.0
#: Per successful step, a shrunk step scale grows back by this factor (doubling in 10 steps).
RECOVERY_GROWTH = 2.0 ** 0.1


@dataclasses.dataclass
class _Iteration:
    """The queries of one ZO iteration (the base point and its directions) while they are asked and told.

    ``recoveries_at_start`` is the number of recoveries when it started: an iteration begun
    before a recovery estimated a gradient on an abandoned path and is discarded when told.
    ``steps_at_start`` is the number of Adam steps taken before it started.  ``batch`` is
    the mini-batch key of its queries: its index, or the batch of the open iteration it
    shares its base point with (the adapter finds a point's batch from its value, so two
    outstanding copies of one point must not have two batches).  ``limit`` cuts the
    iteration short after ``limit`` asks (a stale iteration is not asked further).
    """

    index: int
    block: int
    base: np.ndarray
    directions: np.ndarray
    losses: np.ndarray
    recoveries_at_start: int
    steps_at_start: int
    batch: int
    asked: int = 0
    told: int = 0
    limit: tp.Optional[int] = None
    #: the discrete probe of the last direction, ``(coordinate, displacement)``, if the iteration has one
    probe: tp.Optional[tp.Tuple[int, float]] = None

    @property
    def size(self) -> int:
        """Queries of this iteration: the base point plus one per direction (or fewer, if cut short)."""
        return len(self.losses) if self.limit is None else self.limit


class _TorchNormals:
    """The Gaussian numbers of the ``"torch"`` direction stream: ``normal(size=(a, b))`` from a torch CPU generator.

    torch draws float32 normals by a vectorised Box-Muller transform (numpy's legacy
    ``RandomState.normal`` uses the slower polar method, in float64).  They stay float32 (a
    numpy view of the tensor): the directions are shaped and normalised in float32 and the
    estimate and the queries are formed in float64 from them.
    """

    __slots__ = ("generator",)

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator

    def normal(self, size: tp.Tuple[int, int]) -> np.ndarray:
        return torch.randn(size, generator=self.generator).numpy()


def _torch_generator(state: torch.Tensor) -> torch.Generator:
    """A torch CPU generator in ``state``."""
    generator = torch.Generator()
    generator.set_state(state)
    return generator


_ZO_NAMES = "A zeroth-order optimizer (ZONP, ZOI, ZOco, their SGD/sign variants, ZOL2L)"


class _ZerothOrder(CheckedOptimizer):
    """State and Nevergrad hooks of :class:`ZerothOrder` (see the module docstring)."""

    def __init__(
        self,
        parametrization: base.IntOrParameter,
        budget: tp.Optional[int] = None,
        num_workers: int = 1,
        *,
        config: tp.Optional["ZerothOrder"] = None,
    ) -> None:
        super().__init__(parametrization, budget=budget, num_workers=num_workers)
        check_parametrization(self.parametrization, _ZO_NAMES, finite_differences=True)
        self._config = ZerothOrder() if config is None else config
        cfg = self._config
        self._bounds = block_bounds(self.dimension, cfg.max_block_size)
        num_blocks = len(self._bounds) - 1
        self._sampler: tp.Union[NaturalSampler, IsotropicSampler, CoordinateSampler]
        if cfg.sampler == "natural":
            self._sampler = NaturalSampler(
                damping=cfg.rho, smoothing=cfg.smoothing, rank=cfg.fisher_rank, storage=cfg.fisher_storage
            )
            check_fisher_memory(
                self._bounds, self._sampler.matrices_per_block, self._sampler.storage.itemsize, rank=cfg.fisher_rank
            )
        elif cfg.sampler == "isotropic":
            self._sampler = IsotropicSampler()
        else:
            self._sampler = CoordinateSampler()
        self._x = np.zeros(self.dimension)
        default_lr = DEFAULT_SGD_LR if cfg.update == "sgd" else DEFAULT_LR
        self._rule = UPDATE_RULES[cfg.update](self.dimension, num_blocks, default_lr if cfg.lr is None else cfg.lr)
        self._lr_schedule = DEFAULT_SCHEDULE if cfg.lr_schedule is None else cfg.lr_schedule
        self._fisher_refresh = resolve_fisher_refresh(cfg.fisher_refresh, self._bounds, self.budget)
        self._last_refresh = np.full(num_blocks, -1, dtype=np.int64)  # iteration of each block's latest refresh
        # iterations on each block since its latest refresh attempt ("per_block": due at fisher_period, so at first use)
        self._uses_since_refresh = np.full(num_blocks, cfg.fisher_period, dtype=np.int64)
        self._iterations: tp.Dict[int, _Iteration] = {}
        self._pending: tp.Dict[str, tp.Tuple[int, int]] = {}
        self._num_iterations = 0
        self._num_steps = 0
        # Recovery from non-finite base losses (see the module docstring).
        self._anchor: tp.Optional[np.ndarray] = None
        self._anchor_index = -1
        self._anchor_steps = 0
        self._stepped_blocks: tp.List[int] = []  # blocks of the steps taken since the anchor's iteration started
        self._block_scale = np.ones(num_blocks)
        self._num_recoveries = 0
        self._flat_steps = 0  # of the first FLAT_CHECK_STEPS steps, those whose queries all gave the base loss
        self._stop_at_budget = False
        self._num_fisher_queries = 0
        self._num_fisher_updates = 0
        self._num_fisher_skipped = 0
        self._oracle: tp.Optional[OutputOracle] = None
        self._origin: tp.Optional[np.ndarray] = None  # value at standardized data 0 (plain Array only)
        self._open_request: tp.Optional[IterationRequest] = None  # asked with ask_iteration, not told yet
        # The "torch" direction stream's generator, seeded from the Nevergrad random state at the
        # first Gaussian draw (so that seeding the parametrization after building the optimizer counts).
        self._torch_generator: tp.Optional[torch.Generator] = None
        # Mixed parametrizations: which coordinates are continuous (None: all), the discrete
        # probes' reach per coordinate, and the best base point seen (see ZerothOrder).
        self._continuous = continuous_coordinates(self.parametrization)
        self._probe_reach = None if self._continuous is None else np.ones(self.dimension)
        self._best: tp.Optional[tp.Tuple[float, np.ndarray]] = None
        pruning = archive_pruning(self.dimension)
        if pruning is not None:
            self.pruning = pruning

    # ----- public state --------------------------------------------------------------
    @property
    def iteration_size(self) -> int:
        """Queries per ZO iteration, ``Q + 1`` (the natural batch for vectorized evaluation)."""
        return self._config.num_directions + 1

    @property
    def num_queries(self) -> int:
        """Queries spent so far: asked candidates plus Fisher Jacobian queries."""
        return self.num_ask + self._num_fisher_queries

    @property
    def num_fisher_queries(self) -> int:
        """Output queries spent on finite-difference Jacobians for the Fisher."""
        return self._num_fisher_queries

    @property
    def num_fisher_updates(self) -> int:
        """Block Fisher estimates that were accepted (finite, positive trace)."""
        return self._num_fisher_updates

    @property
    def num_blocks_with_fisher(self) -> int:
        """Blocks whose directions come from an estimated Fisher (the others are still isotropic)."""
        return len(self._sampler.factors) if isinstance(self._sampler, NaturalSampler) else 0

    @property
    def num_blocks(self) -> int:
        """B, the number of parameter blocks."""
        return len(self._bounds) - 1

    @property
    def num_fisher_skipped(self) -> int:
        """Refreshes skipped because the budget left after them was smaller than their cost."""
        return self._num_fisher_skipped

    @property
    def num_steps(self) -> int:
        """Steps taken (iterations whose base loss was valid)."""
        return self._num_steps

    @property
    def num_recoveries(self) -> int:
        """Times the iterate went back to the last point with a finite base loss."""
        return self._num_recoveries

    @property
    def asks_left_in_iteration(self) -> int:
        """Candidates of the open iteration not asked yet (0 when the next ask starts an iteration)."""
        iteration = self._iterations.get(self._num_iterations - 1)
        return 0 if iteration is None else iteration.size - iteration.asked

    @property
    def block_bounds(self) -> np.ndarray:
        """Start offsets of the blocks plus the dimension; block ``b`` is ``[bounds[b], bounds[b+1])``."""
        return self._bounds.copy()

    def sampling_covariance(self, block: int) -> np.ndarray:
        """Covariance shape the sampler draws directions of ``block`` from (before normalisation)."""
        size = int(self._bounds[block + 1] - self._bounds[block])
        if isinstance(self._sampler, NaturalSampler):
            return self._sampler.covariance(block, size)
        if isinstance(self._sampler, CoordinateSampler):
            return np.eye(size) / size
        return np.eye(size)

    def attach(self, oracle: OutputOracle) -> None:
        """Uses ``oracle`` for mini-batch assignment and, for ZO-NP, the black-box Fisher.

        ``minimize`` attaches a model-aware objective by itself; ask/tell users call this.
        The oracle is not pickled with the optimizer: re-attach it after ``load``.

        The optimizer's parametrization must be the oracle's: a plain ``ng.p.Array`` of the
        same dimension starting at the same value (an adapter's ``parametrization``, at the
        model's own parameters).  A parametrization built from the dimension alone starts
        at zero, not at the model's parameters, and is refused with a ``ValueError``.
        """
        if not isinstance(oracle, OutputOracle):
            raise TypeError(f"{oracle!r} is not an output oracle (needs assign_batch and block_outputs)")
        oracle_param = oracle.parametrization
        if oracle_param.dimension != self.dimension:
            raise ValueError(
                f"The oracle has {oracle_param.dimension} parameters but the optimizer's parametrization has "
                f"{self.dimension}: build the optimizer on adapter.parametrization"
            )
        probe = self.parametrization.spawn_child().set_standardized_data(np.ones(self.dimension))
        zero = self.parametrization.spawn_child().set_standardized_data(np.zeros(self.dimension))
        if not isinstance(probe.value, np.ndarray) or not np.allclose(probe.value - zero.value, 1.0):
            raise ValueError(
                "An output oracle needs a plain ng.p.Array parametrization (no bounds, sigma 1): "
                "use adapter.parametrization"
            )
        check_oracle_start(self.parametrization, oracle)
        self._oracle = oracle
        if self._config.lr is None and self._config.update != "sgd":
            self._rule.lr = DEFAULT_ORACLE_LR
        if self._config.lr_schedule is None:
            self._lr_schedule = DEFAULT_ORACLE_SCHEDULE

    @property
    def lr(self) -> float:
        """The learning rate of the update rule in use (before the schedule)."""
        return self._rule.lr

    @property
    def fisher_refresh(self) -> str:
        """The Fisher refresh rule in use (``"auto"`` resolved: ``"per_block"`` or ``"sampled"``)."""
        return self._fisher_refresh

    @property
    def lr_schedule(self) -> str:
        """The learning-rate schedule in use (``"constant"`` or ``"cosine"``)."""
        return self._lr_schedule

    # ----- iteration-level fast path --------------------------------------------------
    @property
    def open_request(self) -> tp.Optional[IterationRequest]:
        """The iteration asked with :meth:`ask_iteration` and not told yet (``None`` if there is none)."""
        return self._open_request

    @property
    def supports_iterations(self) -> bool:
        """Whether :meth:`ask_iteration` can be used: the parametrization is a plain ``ng.p.Array``.

        Plain means unbounded, with sigma 1 and no constraint, so that a candidate's value is
        the initial value plus its standardized data.
        """
        if self._origin is None:
            self._origin = plain_array_origin(self.parametrization)
        return self._origin is not None

    def ask_iteration(self) -> IterationRequest:
        """Asks the ``Q + 1`` queries of the next iteration at once, as a base vector and block deltas.

        Same iterates as asking them one by one with ``ask`` (the same random draws, the
        same Fisher refreshes), without building a Nevergrad candidate per query:
        ``num_ask`` grows by the request's ``size``; ``num_tell`` when it is told.  The
        two paths can be mixed, but an iteration partly asked through ``ask`` must be asked
        to its end first.  Told queries of the fast path do not enter Nevergrad's archive
        or ``current_bests`` (the recommendation is the optimizer's own, as on the other
        path), and per-candidate ``ask``/``tell`` callbacks are not called.

        One request is open at a time: until it is told, ``ask_iteration`` returns the same
        request again (:attr:`open_request`: the same base vector, deltas and mini-batch
        key), so an evaluation that raised is retried and the run goes on as if it had not
        failed.  Its queries count once in ``num_ask`` and the query budget (an adapter
        counts in its ``queries`` every evaluation it makes, the failed one included).  To
        give an iteration up, tell it NaN losses (failed queries, left out of the estimate).
        """
        if not self.supports_iterations:
            raise TypeError(
                "ask_iteration needs a plain ng.p.Array parametrization (no bounds, sigma 1, no constraint); "
                "use ask/tell"
            )
        if self._open_request is not None:
            return self._open_request
        self._close_stale_iteration()
        latest = self._iterations.get(self._num_iterations - 1)
        if latest is not None and latest.asked < latest.size:
            raise RuntimeError(
                f"iteration {latest.index} is partly asked through ask() ({latest.asked} of {latest.size}): "
                "ask the rest of it before ask_iteration()"
            )
        left = self._queries_left()
        if self._stop_at_budget and left is not None and left <= 0:
            raise errors.NevergradEarlyStopping(f"Query budget {self.budget} spent (Fisher queries included)")
        iteration = self._start_iteration()
        iteration.asked = iteration.size
        self._num_ask += iteration.size
        start, stop = int(self._bounds[iteration.block]), int(self._bounds[iteration.block + 1])
        deltas = np.empty((iteration.size, stop - start))
        deltas[0] = 0.0
        np.multiply(self._step_size(stop - start), iteration.directions, out=deltas[1:])
        assert self._origin is not None
        self._open_request = IterationRequest(
            index=iteration.index, theta=self._origin + iteration.base, start=start, deltas=deltas, key=iteration.batch
        )
        return self._open_request

    def tell_iteration(self, request: IterationRequest, losses: tp.Any) -> None:
        """Tells the ``request.size`` losses of an iteration asked with :meth:`ask_iteration`.

        NaN, inf or losses at Nevergrad's clipping value are handled as on the per-candidate
        path (left out of the estimate; a bad base loss sends the iterate back to its anchor).
        """
        values = np.asarray(losses, dtype=np.float64)
        if values.shape != (request.size,):
            raise ValueError(
                f"tell_iteration got losses of shape {values.shape}; the request has {request.size} queries: "
                f"expected shape ({request.size},)"
            )
        if self._open_request is None or self._open_request.index != request.index:
            raise ValueError(f"iteration {request.index} is not an open iteration asked with ask_iteration (told already?)")
        self._open_request = None
        iteration = self._iterations[request.index]
        # The common case in two reductions: every loss finite and below the clipping value
        # (a NaN fails the first comparison).
        valid = bool(np.maximum.reduce(values) < CLIPPED_LOSS and np.minimum.reduce(values) > -math.inf)
        if not valid:
            good = np.isfinite(values)
            good &= values < CLIPPED_LOSS
            if not good.all():
                self._warn(
                    f"{int((~good).sum())} non-finite or clipped loss(es) left out of the ZO estimate", InvalidQueryWarning
                )
                values = np.where(good, values, math.nan)
        iteration.losses[:] = values
        iteration.told = iteration.size
        self._num_tell += iteration.size
        del self._iterations[request.index]
        self._finish(iteration, all_finite=valid)

    def minimize(self, objective_function: tp.Callable[..., tp.Loss], *args: tp.Any, **kwargs: tp.Any) -> p.Parameter:
        """Nevergrad's ``minimize``, attaching ``objective_function`` first if it is an output oracle.

        Nevergrad's loop asks until ``num_ask`` reaches the budget; Fisher queries are not
        asks, so here an ask raises ``NevergradEarlyStopping`` (which the loop handles) once
        the query budget is spent: the run spends exactly the budget.
        """
        if self._oracle is None and isinstance(objective_function, OutputOracle):
            self.attach(objective_function)
        self._stop_at_budget = True
        try:
            return super().minimize(objective_function, *args, **kwargs)
        finally:
            self._stop_at_budget = False

    def __getstate__(self) -> tp.Dict[str, tp.Any]:
        state = dict(self.__dict__)
        state["_oracle"] = None
        state["_stop_at_budget"] = False  # a dump taken inside minimize (OptimizerDump) must not stop later asks
        if self._torch_generator is not None:  # stored as its state tensor (any torch version pickles that)
            state["_torch_generator"] = self._torch_generator.get_state()
        return state

    def __setstate__(self, state: tp.Dict[str, tp.Any]) -> None:
        generator = state.get("_torch_generator")
        if isinstance(generator, torch.Tensor):
            state["_torch_generator"] = _torch_generator(generator)
        self.__dict__.update(state)

    # ----- Nevergrad hooks -----------------------------------------------------------
    def _close_stale_iteration(self) -> None:
        """Cuts the latest iteration short if it was begun before a recovery: its estimate will be discarded."""
        iteration = self._iterations.get(self._num_iterations - 1)
        if (
            iteration is not None
            and iteration.recoveries_at_start != self._num_recoveries
            and iteration.asked < iteration.size
        ):
            iteration.limit = iteration.asked
            if iteration.told == iteration.size:
                del self._iterations[iteration.index]

    def _internal_ask_candidate(self) -> p.Parameter:
        if not self._num_ask:  # a constraint registered after construction (the rest was checked then)
            check_parametrization(self.parametrization, _ZO_NAMES, finite_differences=False)
        self._close_stale_iteration()
        iteration = self._iterations.get(self._num_iterations - 1)  # the latest, if still open
        if iteration is None or iteration.asked == iteration.size:
            left = self._queries_left()
            if self._stop_at_budget and left is not None and left <= 0:
                raise errors.NevergradEarlyStopping(f"Query budget {self.budget} spent (Fisher queries included)")
            iteration = self._start_iteration()
        index = iteration.asked
        iteration.asked += 1
        data = iteration.base.copy()
        if index:
            start, stop = self._bounds[iteration.block], self._bounds[iteration.block + 1]
            data[start:stop] += self._step_size(stop - start) * iteration.directions[index - 1]
        candidate = self.parametrization.spawn_child().set_standardized_data(data)
        self._pending[candidate.uid] = (iteration.index, index)
        if self._oracle is not None:
            self._oracle.assign_batch(candidate.value, iteration.batch)
        return candidate

    def _internal_tell_candidate(self, candidate: p.Parameter, loss: tp.FloatLoss) -> None:
        key, index = self._pending.pop(candidate.uid)
        iteration = self._iterations[key]
        loss = float(loss)
        if not (math.isfinite(loss) and loss < CLIPPED_LOSS):
            self._warn(
                f"Non-finite or clipped loss ({loss}) left out of the ZO estimate", InvalidQueryWarning
            )
            loss = math.nan
        iteration.losses[index] = loss
        iteration.told += 1
        if iteration.told == iteration.size:
            del self._iterations[key]
            self._finish(iteration)

    def _internal_tell_not_asked(self, candidate: p.Parameter, loss: tp.FloatLoss) -> None:
        raise errors.TellNotAskedNotSupportedError(
            "Zeroth-order optimizers estimate gradients from the points they ask; a point that was not "
            "asked cannot be used (to start from a given point, set it as the parametrization's value)"
        )

    def _internal_provide_recommendation(self) -> np.ndarray:
        """The anchor (last iterate whose base loss was seen finite), else the current iterate.

        On a deterministic objective without an output oracle (the parametrization's
        ``function.deterministic``, Nevergrad's default), the base point of lowest loss seen
        instead: every iteration evaluates its base point, so this costs nothing and the
        recommendation is never worse than the start.  With an oracle (mini-batches) or a
        noisy objective, losses of different points are not comparable and the iterate is
        recommended.

        Once the budget is spent and every asked query told, the current iterate if it moved
        after the anchor: then the budget's last query (the final iterate alone, see
        ``_start_iteration``) was asked before the steps it should have seen were taken, as
        when ``num_workers`` queries are asked ahead of their tells.  In a sequential run that
        query sees the final iterate, so the anchor is the final iterate and nothing changes.
        """
        if self._best is not None and self._oracle is None and self.parametrization.function.deterministic:
            return self._best[1].copy()
        if self._anchor is None:
            return self._x.copy()
        left = self._queries_left()
        if left is not None and left <= 0 and not self._iterations and not np.array_equal(self._anchor, self._x):
            return self._x.copy()
        return self._anchor.copy()

    # ----- algorithm -----------------------------------------------------------------
    def _step_size(self, size: int) -> float:
        return self._config.mu / math.sqrt(size)

    def _schedule_factor(self) -> float:
        """Learning-rate multiplier of the schedule at the current point of the budget."""
        if self._lr_schedule == "constant" or self.budget is None:
            return 1.0
        spent = min(1.0, self.num_queries / self.budget)
        return COSINE_FLOOR + (1 - COSINE_FLOOR) * 0.5 * (1 + math.cos(math.pi * spent))

    def _queries_left(self) -> tp.Optional[int]:
        """Queries left in the budget (may be negative beyond it), ``None`` without a budget."""
        return None if self.budget is None else self.budget - self.num_queries

    def _start_iteration(self) -> _Iteration:
        cfg = self._config
        key = self._num_iterations
        num_blocks = self.num_blocks
        # The random state before this iteration's draws, restored if the oracle raises during a
        # Fisher refresh: the next ask then starts the same iteration again.
        state = self._rng.get_state() if self._sampler.uses_fisher and self._oracle is not None else None
        block = self._rng.randint(num_blocks) if cfg.block_selection == "random" else key % num_blocks
        start, stop = int(self._bounds[block]), int(self._bounds[block + 1])
        size = stop - start
        previous = self._iterations.get(key - 1)
        same_base = previous is not None and np.array_equal(previous.base, self._x)
        batch = previous.batch if same_base else key
        if self._fisher_refresh == "per_block":
            # At a block's first use, then every fisher_period uses of that block.
            refresh = self._sampler.uses_fisher and self._uses_since_refresh[block] >= cfg.fisher_period
        else:
            refresh = self._sampler.uses_fisher and key % cfg.fisher_period == 0
        if refresh and self._fisher_refresh == "least_recent" and self._oracle is not None:
            # Refresh the block whose Fisher is oldest (never estimated first) and step on it.
            block = int(np.argmin(self._last_refresh))
            start, stop = int(self._bounds[block]), int(self._bounds[block + 1])
            size = stop - start
        if refresh and self._oracle is None:
            self._warn(
                "ZONP has no output oracle (a plain objective returning a float): natural perturbations are "
                "inactive and it runs as block ZO-I. Pass a nevergrad_zonp adapter to minimize, or call attach().",
                NaturalPerturbationsInactiveWarning,
            )
            refresh = False
            self._uses_since_refresh[block] = 0
        left = self._queries_left()
        if refresh and left is not None and left - (size + 1) < max(size + 1, self.iteration_size):
            # A refresh serves the iterations after it: never spend more on it than they can use.
            refresh = False
            self._num_fisher_skipped += 1
        elif (
            refresh
            and self._fisher_refresh == "per_block"
            and self.budget is not None
            and self._num_fisher_queries + size + 1 > PER_BLOCK_FISHER_SHARE * self.budget
        ):
            # Every block's first use asks for a Fisher: on a small budget that alone could take most of it.
            refresh = False
            self._num_fisher_skipped += 1
        if refresh:
            try:
                refreshed = self._refresh_fisher(block, start, stop, batch)
            except BaseException:
                self._rng.set_state(state)
                raise
            if refreshed:
                self._last_refresh[block] = key
            self._uses_since_refresh[block] = 0  # an unusable estimate is not retried at every use
            left = self._queries_left()
        self._uses_since_refresh[block] += 1
        num_directions = cfg.num_directions
        if left is not None and 0 < left <= self.iteration_size:
            # The last iteration uses what is left but one: that one evaluates the final iterate,
            # so the last step is seen (and recommended) too.  Beyond the budget: full iterations.
            num_directions = max(0, left - 2)
        directions = self._draw_directions(block, size, num_directions)
        probe = None
        if self._continuous is not None:
            directions, probe = self._mixed_directions(block, start, stop, directions, key)
        iteration = _Iteration(
            index=key,
            block=block,
            base=self._x.copy(),
            directions=directions,
            losses=np.full(num_directions + 1, math.nan),
            recoveries_at_start=self._num_recoveries,
            steps_at_start=self._num_steps,
            batch=batch,
            probe=probe,
        )
        self._iterations[key] = iteration
        self._num_iterations += 1
        if len(self._iterations) > 2 * self.num_workers + 2:  # more open than workers can explain: tells are missing
            self._warn(
                f"{len(self._iterations) - 1} earlier iterations have queries that were asked but never told: their "
                "estimates are lost and the iterate does not move. Tell every asked candidate (a NaN loss for a "
                "failed evaluation is left out of the estimate)",
                UntoldQueriesWarning,
            )
        return iteration

    def _mixed_directions(
        self, block: int, start: int, stop: int, directions: np.ndarray, key: int
    ) -> tp.Tuple[np.ndarray, tp.Optional[tp.Tuple[int, float]]]:
        """The directions of an iteration on a block of a mixed parametrization, and its discrete probe.

        Gaussian directions (isotropic, natural, learned) are restricted to the block's
        continuous coordinates: a query that crosses a discrete threshold jumps, and the jump
        divided by ``mu`` would swamp every coordinate of the estimate (coordinate directions
        touch one coordinate each and need no restriction).  If the block has discrete
        coordinates, its last direction becomes a probe: one of them, drawn uniformly, moved
        by its reach (1 in standardized units at first) in a random sign; the probe is kept
        out of the estimate and accepted when it lowers the base loss (every second iteration
        when ``Q = 1``).
        """
        assert self._continuous is not None and self._probe_reach is not None
        mask = self._continuous[start:stop]
        size = stop - start
        directions = directions.copy()
        if not isinstance(self._sampler, CoordinateSampler) and not mask.all():
            directions[:, ~mask] = 0.0
            directions = self._normalised(directions, size)
        discrete = np.flatnonzero(~mask)
        if not len(discrete) or not len(directions) or (len(directions) == 1 and key % 2 == 0):
            return directions, None
        coordinate = start + int(discrete[self._rng.randint(len(discrete))])
        displacement = float(self._probe_reach[coordinate] * (1.0 if self._rng.rand() < 0.5 else -1.0))
        directions[-1] = 0.0
        directions[-1, coordinate - start] = displacement / self._step_size(size)
        return directions, (coordinate, displacement)

    def _settle_probe(self, probe: tp.Tuple[int, float], base_loss: float, probe_loss: float) -> None:
        """Takes a discrete probe that lowered the base loss; one that changed nothing reaches twice as far next time."""
        assert self._probe_reach is not None
        coordinate, displacement = probe
        if probe_loss < base_loss:
            self._x[coordinate] += displacement
        elif probe_loss == base_loss:  # no threshold crossed
            self._probe_reach[coordinate] = min(PROBE_MAX_REACH, 2.0 * self._probe_reach[coordinate])

    def _draw_directions(self, block: int, size: int, num_directions: int) -> np.ndarray:
        """``(num_directions, size)`` directions of an iteration on ``block`` (normalised if configured)."""
        if not num_directions:
            return np.zeros((0, size))
        return self._shape_directions(block, size, self._sampler.noise(self._noise_source(), size, num_directions))

    @property
    def _torch_stream(self) -> bool:
        """Whether the sampler's numbers come from the ``"torch"`` stream (Gaussian samplers on it; ZO-co's
        coordinates are integers from the Nevergrad random state on both streams)."""
        return self._config.direction_stream == "torch" and self._sampler.gaussian

    def _noise_source(self) -> tp.Any:
        """Where the sampler's random numbers come from: the ``"torch"`` stream's normals, else the Nevergrad random state."""
        if not self._torch_stream:
            return self._rng
        if self._torch_generator is None:
            seed = int(self._rng.randint(2**63 - 1, dtype=np.int64))
            self._torch_generator = torch.Generator().manual_seed(seed)
        return _TorchNormals(self._torch_generator)

    def _shape_directions(self, block: int, size: int, noise: tp.Any) -> np.ndarray:
        """The directions of the sampler's ``noise`` on ``block`` (normalised if configured)."""
        if self._sampler.uses_fisher:  # the factor's solve: BLAS
            with single_threaded_blas():
                directions = self._sampler.shape(block, noise)
        else:
            directions = self._sampler.shape(block, noise)
        return self._normalised(directions, size)  # a fresh draw: in place

    def _normalised(self, directions: np.ndarray, size: int) -> np.ndarray:
        """``directions`` rescaled in place to norm ``sqrt(size)`` each, if configured."""
        if self._config.normalize and directions.size:
            # np.linalg.norm(directions, axis=1, keepdims=True), bit for bit, without its argument handling
            norms = np.sqrt(np.add.reduce(directions * directions, axis=1, keepdims=True))
            directions *= math.sqrt(size) / np.maximum(norms, _TINY)
        return directions

    def _uses_estimate(self, iteration: _Iteration) -> bool:
        """Whether a finished iteration's estimate moves the iterate (all do, also when asked ahead)."""
        return True

    def _estimate_scale(self, size: int) -> float:
        """``lam`` of the ZO estimate on a block of ``size``: ``1 / n`` (Adam, sign), 1 for plain SGD."""
        return 1.0 if self._rule.unbiased_estimate else 1.0 / size

    def _apply_step(self, grad: np.ndarray, block: int, start: int, stop: int, scale: float) -> None:
        """Moves the iterate's block ``[start, stop)`` given the estimate ``grad`` (the update rule)."""
        self._rule.step(self._x, grad, block, start, stop, scale=scale)

    def _reset_block(self, block: int) -> None:
        """Forgets the update rule's memory of ``block`` (after a recovery): its next step is a first step."""
        self._rule.reset(block, int(self._bounds[block]), int(self._bounds[block + 1]))

    def _refresh_fisher(self, block: int, start: int, stop: int, key: int) -> bool:
        """Estimates block ``block``'s Fisher on mini-batch ``key``; whether the sampler took it."""
        assert isinstance(self._sampler, NaturalSampler) and self._oracle is not None
        size = stop - start
        step = self._config.fd_step
        theta = self.parametrization.spawn_child().set_standardized_data(self._x).value
        deltas = np.vstack([np.zeros((1, size)), step * np.eye(size)])
        outputs = np.asarray(self._oracle.block_outputs(theta, start, deltas, key))
        self._num_fisher_queries += size + 1
        if outputs.ndim < 2 or outputs.shape[0] != size + 1:
            raise ValueError(
                f"block_outputs returned shape {outputs.shape}; expected ({size + 1}, batch, ...) for a block of {size}"
            )
        base_out, perturbed = outputs[0], outputs[1:]
        batch = base_out.shape[0]
        finite = np.isfinite(base_out).reshape(batch, -1).all(axis=1)
        finite &= np.isfinite(perturbed).reshape(size, batch, -1).all(axis=(0, 2))
        if not finite.all():
            self._warn(
                f"Non-finite network outputs for {int((~finite).sum())} of {batch} samples left out of the Fisher",
                InvalidQueryWarning,
            )
        if not finite.any():
            return False
        with np.errstate(over="ignore", invalid="ignore"):  # finite outputs whose differences overflow: checked below
            jacobian = finite_difference_jacobian(base_out[finite], perturbed[:, finite], step)
        usable_rows = np.isfinite(jacobian).reshape(len(jacobian), -1).all(axis=1)
        if not usable_rows.all():
            self._warn(
                f"Finite-difference Jacobian overflows for {int((~usable_rows).sum())} of {len(jacobian)} samples: "
                "left out of the Fisher",
                InvalidQueryWarning,
            )
            if not usable_rows.any():
                return False
            jacobian, finite = jacobian[usable_rows], np.flatnonzero(finite)[usable_rows]
        with single_threaded_blas(), np.errstate(over="ignore", invalid="ignore"):  # an overflowing product: unusable below
            fisher = fisher_from_jacobian(jacobian, base_out[finite], self._oracle.output)
            usable = self._sampler.update(block, fisher)
        if usable:
            self._num_fisher_updates += 1
        else:
            self._warn("Unusable Fisher estimate (zero or non-finite trace) kept out", InvalidQueryWarning)
        return bool(usable)

    def _finish(self, iteration: _Iteration, all_finite: bool = False) -> None:
        """Steps on a told iteration (``all_finite``: the caller checked that every loss is finite)."""
        if iteration.recoveries_at_start != self._num_recoveries:
            return  # begun on a path abandoned by a recovery since: its estimate belongs to no kept iterate
        base_loss, losses = iteration.losses[0], iteration.losses[1:]
        if not math.isfinite(base_loss):
            self._recover()
            return
        if iteration.index > self._anchor_index:
            self._anchor, self._anchor_index = iteration.base, iteration.index
            del self._stepped_blocks[: iteration.steps_at_start - self._anchor_steps]
            self._anchor_steps = iteration.steps_at_start
        if self._best is None or base_loss < self._best[0]:
            self._best = (base_loss, iteration.base)
        directions = iteration.directions
        if iteration.probe is not None:
            if math.isfinite(losses[-1]):  # (NaN when cut short before it)
                self._settle_probe(iteration.probe, base_loss, float(losses[-1]))
            losses, directions = losses[:-1], directions[:-1]
        if not all_finite:
            valid = np.isfinite(losses)
            if not valid.any():
                return
            if not valid.all():  # (a boolean index copies the whole array: only when some loss is left out)
                losses, directions = losses[valid], directions[valid]
        if not len(losses) or not self._uses_estimate(iteration):
            return
        if self._num_steps < FLAT_CHECK_STEPS:
            self._check_flat(base_loss, losses)
        block = iteration.block
        start, stop = int(self._bounds[block]), int(self._bounds[block + 1])
        size = stop - start
        with single_threaded_blas():
            grad = zo_gradient(base_loss, losses, directions, self._step_size(size), self._estimate_scale(size))
        self._apply_step(grad, block, start, stop, self._block_scale[block] * self._schedule_factor())
        self._block_scale[block] = min(1.0, self._block_scale[block] * RECOVERY_GROWTH)
        self._stepped_blocks.append(block)
        self._num_steps += 1

    def _check_flat(self, base_loss: float, losses: np.ndarray) -> None:
        """Warns once if each of the first :data:`FLAT_CHECK_STEPS` steps saw every query give exactly its base loss."""
        if len(losses) > 1 and bool(np.all(losses == base_loss)):
            self._flat_steps += 1
            if self._flat_steps == FLAT_CHECK_STEPS:
                self._warn(
                    f"In each of the first {FLAT_CHECK_STEPS} iterations every query gave exactly the base loss: the "
                    f"displacement (mu = {self._config.mu:g}) does not change the objective (float16 or bfloat16 "
                    "parameters, a quantized chip, a block that does not reach the loss). The estimate is zero and the "
                    "iterate does not move: try a larger mu",
                    FlatQueriesWarning,
                )

    def _recover(self) -> None:
        """Back to the anchor after a non-finite base loss; the blocks stepped since move more carefully."""
        self._num_recoveries += 1
        blamed = sorted(set(self._stepped_blocks))
        self._warn(
            f"Non-finite base loss: back to the last iterate with a finite loss; step scale of block(s) {blamed} halved",
            InvalidQueryWarning,
        )
        if self._anchor is not None:
            self._x = self._anchor.copy()
        for block in blamed:
            self._block_scale[block] *= RECOVERY_SHRINK
            self._reset_block(block)
        self._stepped_blocks.clear()
        self._anchor_steps = self._num_steps


class ZerothOrder(base.ConfiguredOptimizer):
    """Block-wise zeroth-order optimizer with Adam; ZO-NP, ZO-I or ZO-co by its sampler.

    Symbols are those of the paper (Sawada et al., ICML 2025) and of docs/method.md; the
    iteration is the module docstring's.  All settings are keyword-only and checked here:
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
        self.num_directions = check_integer("num_directions", num_directions)
        self.lr = check_positive("lr", lr, optional=True)
        self.mu = check_positive("mu", mu)
        self.rho = check_positive("rho", rho)
        self.max_block_size = check_integer("max_block_size", max_block_size)
        self.fisher_period = check_integer("fisher_period", fisher_period)
        self.fd_step = check_positive("fd_step", fd_step)
        self.smoothing = check_fraction("smoothing (alpha)", smoothing, zero=False)
        self.block_selection = check_choice("block_selection", block_selection, BLOCK_SELECTIONS)
        self.normalize = check_flag("normalize", normalize)
        self.lr_schedule = check_choice("lr_schedule", lr_schedule, LR_SCHEDULES, optional=True)
        self.fisher_refresh = check_choice("fisher_refresh", fisher_refresh, FISHER_REFRESHES)
        self.fisher_rank = check_integer("fisher_rank", fisher_rank, optional=True)
        self.fisher_storage = check_choice("fisher_storage", fisher_storage, STORAGE_DTYPES)
        self.update = check_choice("update", update, UPDATE_RULES)
        self.direction_stream = check_choice("direction_stream", direction_stream, DIRECTION_STREAMS)
        super().__init__(_ZerothOrder, config, as_config=True)
