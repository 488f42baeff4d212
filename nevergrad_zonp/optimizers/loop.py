"""The block-wise zeroth-order loop, one algorithm with its parts passed in.

Iteration ``k`` (docs/method.md, "The zeroth-order estimate"; Sawada, Aoyama and Ikeda,
ICML 2025, Algorithm 1):

1. choose a block ``b`` of ``n`` contiguous coordinates (uniformly at random, or cyclically);
2. let the Fisher schedule (ZO-NP only, :mod:`.fisher_schedule`) refresh a block's Fisher
   from the output oracle if one is due, and a curvature source (LPP, :mod:`.layered`)
   refresh what the block's draws need;
3. draw ``Q`` directions ``u_q`` from the sampler (:mod:`.samplers`, or the QueryRNN);
4. ask the query design's candidates (:mod:`.queries`): the iterate and the iterate
   displaced by ``mu / sqrt(n) * u_q`` in the block (``Q + 1``; two-sided: ``+-u_q``,
   ``2 Q + 1``), all on mini-batch ``k``;
5. once they are all told (in any order), form the design's estimate, for the forward
   difference ``g = (lam / Q) sum_q (l_q - l_0) / (mu / sqrt(n)) u_q``
   (:func:`.estimator.zo_gradient`), and step the block by the update rule
   (:mod:`.estimator`, or the UpdateRNN), scaled by the learning-rate schedule and the
   block's recovery scale (:mod:`.recovery`).

The parts (:mod:`.parts`): a **sampler**, an **update rule**, a **query design** and an
optional **Fisher schedule** or **curvature source**, built by the configuration
(:class:`~nevergrad_zonp.ZerothOrder`, :class:`~.layered.LayeredPerturbation`,
:class:`~.hessian.HessianInformed`, :class:`~nevergrad_zonp.learned.LearnedZO`), plus the
loop's own **recovery** (:mod:`.recovery`) and, on a mixed parametrization, **discrete
probes** (:mod:`.probes`).
Each holds its own state and pickles with the optimizer.

Two doors lead into the loop: Nevergrad's per-candidate ``ask``/``tell`` and the
iteration-level ``ask_iteration``/``tell_iteration``; both start iterations, account for
the budget and finish iterations through the same methods.

Budget: the query budget counts asked candidates and Fisher Jacobian queries.  ``ask``
never raises on budget grounds: when the queries left cannot fund a full iteration and one
more query, the last iteration uses what is left but one (fewer directions, no refresh) and
the last query evaluates the final iterate alone; asks beyond the budget start ordinary
iterations.  ``minimize`` stops exactly at the budget.

Non-finite losses: perturbed losses that are NaN, infinite or clipped by Nevergrad are
left out of the estimate.  A bad base loss sends the iterate back to the anchor (the
recommendation) and the blocks stepped since move more carefully (:mod:`.recovery`).
"""

from __future__ import annotations

import math
import typing as tp

import numpy as np
from nevergrad.common import errors
from nevergrad.optimization import base
from nevergrad.parametrization import parameter as p

from ..oracle import OutputOracle
from .fisher_schedule import INACTIVE, REFRESH, FisherSchedule
from .iterations import (
    CLIPPED_LOSS,
    IterationRequest,
    OpenIteration,
    check_oracle_parametrization,
    check_parametrization,
    continuous_coordinates,
    plain_array_origin,
)
from .parts import LoopConfiguration, LoopParts
from .probes import DiscreteProbes
from .recovery import Recovery
from .resources import archive_pruning, single_threaded_blas
from .settings import CheckedOptimizer

#: Fraction of ``lr`` a cosine schedule ends at (and keeps beyond the budget).
COSINE_FLOOR = 0.01
#: The first steps checked for queries that all return their base loss (no cost after them).
FLAT_CHECK_STEPS = 5
_NAMES = "A zeroth-order optimizer (ZONP, ZOI, ZOco, their SGD/sign variants, ZOL2L)"


class NaturalPerturbationsInactiveWarning(UserWarning):
    """ZO-NP runs without an output oracle, hence without a Fisher: it behaves as block ZO-I."""


class FlatQueriesWarning(UserWarning):
    """The first iterations' queries all returned their base loss exactly: the displacement is below the objective's resolution."""


class UntoldQueriesWarning(UserWarning):
    """Asked queries are not told: their iterations never finish, so their estimates are lost."""


class InvalidQueryWarning(UserWarning):
    """A loss or network output was NaN/inf (or clipped by Nevergrad); it was left out."""


class ZerothOrderLoop(CheckedOptimizer):
    """The Nevergrad optimizer of every ZO configuration of the package (see the module docstring).

    Built by a configuration: ``ZerothOrder(...)(parametrization, budget, num_workers)``.
    Refuses a parametrization with constraints, or a stochastic one, with ``ValueError``.
    """

    def __init__(
        self,
        parametrization: base.IntOrParameter,
        budget: tp.Optional[int] = None,
        num_workers: int = 1,
        *,
        config: LoopConfiguration,
    ) -> None:
        super().__init__(parametrization, budget=budget, num_workers=num_workers)
        check_parametrization(self.parametrization, _NAMES, finite_differences=True)
        self._config = config
        self._parts: LoopParts = config.build_parts(self.dimension, self.budget)
        self._recovery = Recovery(self.num_blocks)
        continuous = continuous_coordinates(self.parametrization)
        self._probes = None if continuous is None else DiscreteProbes(continuous)
        self._x = np.zeros(self.dimension)
        self._iterations: tp.Dict[int, OpenIteration] = {}  # asked and not yet told in full
        self._pending: tp.Dict[str, tp.Tuple[int, int]] = {}  # candidate uid -> (iteration, query)
        self._open_request: tp.Optional[IterationRequest] = None  # asked with ask_iteration, not told yet
        self._num_iterations = 0
        self._num_steps = 0
        self._flat_steps = 0  # of the first FLAT_CHECK_STEPS steps, those whose queries all gave the base loss
        self._best: tp.Optional[tp.Tuple[float, np.ndarray]] = None  # lowest base loss seen, and its point
        self._stop_at_budget = False
        self._oracle: tp.Optional[OutputOracle] = None
        self._origin: tp.Optional[np.ndarray] = None  # value at standardized data 0 (plain Array only)
        pruning = archive_pruning(self.dimension)
        if pruning is not None:
            self.pruning = pruning

    # ----- the parts and the state ---------------------------------------------------
    @property
    def sampler(self) -> tp.Any:
        """The sampler part (``NaturalSampler``, ``IsotropicSampler``, ``CoordinateSampler``, the QueryRNN's)."""
        return self._parts.sampler

    @property
    def update_rule(self) -> tp.Any:
        """The update rule part (``BlockAdam``, ``BlockSGD``, ``BlockSignSGD``, the UpdateRNN's)."""
        return self._parts.update

    @property
    def fisher_schedule(self) -> tp.Optional[FisherSchedule]:
        """The Fisher schedule part (ZO-NP), else ``None``."""
        return self._parts.fisher

    @property
    def lr(self) -> tp.Optional[float]:
        """The learning rate of the update rule (before the schedule; ``None`` for a learned rule)."""
        return self._parts.update.lr

    @property
    def lr_schedule(self) -> str:
        """The learning-rate schedule in use (``"constant"`` or ``"cosine"``)."""
        return self._parts.lr_schedule

    @property
    def fisher_refresh(self) -> tp.Optional[str]:
        """The Fisher refresh rule in use (``"auto"`` resolved), ``None`` without a Fisher."""
        return None if self._parts.fisher is None else self._parts.fisher.rule

    @property
    def iteration_size(self) -> int:
        """Queries per iteration, ``Q + 1`` (the natural batch for vectorized evaluation)."""
        return self._parts.queries.per_direction * self._parts.num_directions + 1

    @property
    def num_blocks(self) -> int:
        """B, the number of parameter blocks."""
        return len(self._parts.bounds) - 1

    @property
    def block_bounds(self) -> np.ndarray:
        """Start offsets of the blocks plus the dimension; block ``b`` is ``[bounds[b], bounds[b+1])``."""
        return self._parts.bounds.copy()

    @property
    def num_queries(self) -> int:
        """Queries spent so far: asked candidates plus Fisher Jacobian queries."""
        return self.num_ask + self.num_fisher_queries

    @property
    def num_fisher_queries(self) -> int:
        """Output queries spent on finite-difference Jacobians for the Fisher."""
        return 0 if self._parts.fisher is None else self._parts.fisher.num_queries

    @property
    def num_fisher_updates(self) -> int:
        """Block Fisher estimates that were accepted (finite, positive trace)."""
        return 0 if self._parts.fisher is None else self._parts.fisher.num_updates

    @property
    def num_fisher_skipped(self) -> int:
        """Refreshes skipped because the budget left after them was smaller than their cost."""
        return 0 if self._parts.fisher is None else self._parts.fisher.num_skipped

    @property
    def num_blocks_with_fisher(self) -> int:
        """Blocks whose directions come from an estimated Fisher (the others are still isotropic)."""
        return 0 if self._parts.fisher is None else len(self._parts.fisher.sampler.factors)

    @property
    def num_steps(self) -> int:
        """Steps taken (iterations whose base loss was valid)."""
        return self._num_steps

    @property
    def num_recoveries(self) -> int:
        """Times the iterate went back to the last point with a finite base loss."""
        return self._recovery.count

    @property
    def asks_left_in_iteration(self) -> int:
        """Candidates of the open iteration not asked yet (0 when the next ask starts an iteration)."""
        iteration = self._iterations.get(self._num_iterations - 1)
        return 0 if iteration is None else iteration.size - iteration.asked

    def sampling_covariance(self, block: int) -> np.ndarray:
        """Covariance shape the sampler draws directions of ``block`` from (before normalisation)."""
        bounds = self._parts.bounds
        return self._parts.sampler.covariance(block, int(bounds[block + 1] - bounds[block]))

    def refresh_fisher(self, block: int, key: int = 0) -> bool:
        """Estimates ``block``'s Fisher now, at the iterate, on mini-batch ``key``; whether it was accepted.

        Needs a Fisher schedule (ZO-NP) and an attached oracle (``RuntimeError`` otherwise).
        Its ``n_b + 1`` queries count in the budget.
        """
        if self._parts.fisher is None or self._oracle is None:
            raise RuntimeError("refresh_fisher needs ZO-NP's natural sampler and an attached output oracle")
        start, stop = int(self._parts.bounds[block]), int(self._parts.bounds[block + 1])
        theta = self.parametrization.spawn_child().set_standardized_data(self._x).value
        return self._parts.fisher.refresh(self._oracle, theta, block, start, stop, key, self._num_iterations, self._warn_invalid)

    def _theta_value(self) -> np.ndarray:
        """The iterate's parameter values (the parametrization's value at the standardized iterate)."""
        return np.asarray(self.parametrization.spawn_child().set_standardized_data(self._x).value, dtype=np.float64)

    def attach(self, oracle: OutputOracle) -> None:
        """Uses ``oracle`` for mini-batch assignment and, for ZO-NP, the black-box Fisher.

        ``minimize`` attaches a model-aware objective by itself; ask/tell users call this.
        The oracle is not pickled with the optimizer: re-attach it after ``load``.  The
        optimizer's parametrization must be the oracle's (a plain ``ng.p.Array`` of the same
        dimension starting at the model's parameters: ``adapter.parametrization``); another
        one raises ``ValueError``.  The configuration's oracle defaults then apply (for
        :class:`~nevergrad_zonp.ZerothOrder`: learning rate and schedule).
        """
        if not isinstance(oracle, OutputOracle):
            raise TypeError(f"{oracle!r} is not an output oracle (needs assign_batch and block_outputs)")
        check_oracle_parametrization(self.parametrization, oracle)
        self._oracle = oracle
        self._config.oracle_defaults(self._parts)

    # ----- door 1: the iteration-level fast path --------------------------------------
    @property
    def open_request(self) -> tp.Optional[IterationRequest]:
        """The iteration asked with :meth:`ask_iteration` and not told yet (``None`` if there is none)."""
        return self._open_request

    @property
    def supports_iterations(self) -> bool:
        """Whether :meth:`ask_iteration` can be used: a plain ``ng.p.Array`` (unbounded, sigma 1, no constraint)."""
        if self._origin is None:
            self._origin = plain_array_origin(self.parametrization)
        return self._origin is not None

    def ask_iteration(self) -> IterationRequest:
        """Asks the ``Q + 1`` queries of the next iteration at once, as a base vector and block deltas.

        The same iterates as asking them one by one (the same draws and Fisher refreshes),
        without a Nevergrad candidate per query: ``num_ask`` grows by the request's
        ``size``, ``num_tell`` when it is told; told queries do not enter Nevergrad's
        archive and per-candidate callbacks are not called.  The paths can be mixed, but an
        iteration partly asked through ``ask`` must be asked to its end first
        (``RuntimeError``).  Until it is told, the same request is returned again (so a
        failed evaluation is retried; its queries count once); tell it NaN losses to give it
        up.  ``TypeError`` when :attr:`supports_iterations` is false.
        """
        if not self.supports_iterations:
            raise TypeError(
                "ask_iteration needs a plain ng.p.Array parametrization (no bounds, sigma 1, no constraint); "
                "use ask/tell"
            )
        if self._open_request is not None:
            return self._open_request
        latest = self._open_iteration()
        if latest is not None:
            raise RuntimeError(
                f"iteration {latest.index} is partly asked through ask() ({latest.asked} of {latest.size}): "
                "ask the rest of it before ask_iteration()"
            )
        iteration = self._new_iteration()
        iteration.asked = iteration.size
        self._num_ask += iteration.size
        start, stop = self._block(iteration.block)
        deltas = np.empty((iteration.size, stop - start))
        deltas[0] = 0.0
        np.multiply(self._step_size(stop - start), iteration.directions, out=deltas[1:])
        assert self._origin is not None
        self._open_request = IterationRequest(
            index=iteration.index, theta=self._origin + iteration.base, start=start, deltas=deltas, key=iteration.batch
        )
        return self._open_request

    def tell_iteration(self, request: IterationRequest, losses: tp.Any) -> None:
        """Tells the ``request.size`` losses of the open request (``ValueError`` for another shape or request).

        NaN, inf or clipped losses are handled as on the per-candidate path.
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
        # the common case in two reductions: every loss finite and below the clipping value (a NaN fails both)
        all_finite = bool(np.maximum.reduce(values) < CLIPPED_LOSS and np.minimum.reduce(values) > -math.inf)
        iteration.losses[:] = values if all_finite else self._screened(values)
        iteration.told = iteration.size
        self._num_tell += iteration.size
        self._told(iteration, all_finite)

    # ----- door 2: Nevergrad's per-candidate hooks ------------------------------------
    def _internal_ask_candidate(self) -> p.Parameter:
        if not self._num_ask:  # a constraint registered after construction (the rest was checked then)
            check_parametrization(self.parametrization, _NAMES, finite_differences=False)
        iteration = self._open_iteration() or self._new_iteration()
        index = iteration.asked
        iteration.asked += 1
        data = iteration.base.copy()
        if index:
            start, stop = self._block(iteration.block)
            data[start:stop] += self._step_size(stop - start) * iteration.directions[index - 1]
        candidate = self.parametrization.spawn_child().set_standardized_data(data)
        self._pending[candidate.uid] = (iteration.index, index)
        if self._oracle is not None:
            self._oracle.assign_batch(candidate.value, iteration.batch)
        return candidate

    def _internal_tell_candidate(self, candidate: p.Parameter, loss: tp.FloatLoss) -> None:
        key, index = self._pending.pop(candidate.uid)
        iteration = self._iterations[key]
        value = float(loss)
        if not (math.isfinite(value) and value < CLIPPED_LOSS):
            value = self._screened(np.array([value]))[0]
        iteration.losses[index] = value
        iteration.told += 1
        if iteration.told == iteration.size:
            self._told(iteration, False)

    def _internal_tell_not_asked(self, candidate: p.Parameter, loss: tp.FloatLoss) -> None:
        raise errors.TellNotAskedNotSupportedError(
            "Zeroth-order optimizers estimate gradients from the points they ask; a point that was not "
            "asked cannot be used (to start from a given point, set it as the parametrization's value)"
        )

    def _internal_provide_recommendation(self) -> np.ndarray:
        """The anchor (last iterate whose base loss was seen finite), else the current iterate.

        On a deterministic objective without an oracle (Nevergrad's default): the base point
        of lowest loss seen, never worse than the start.  Once the budget is spent and every
        asked query told: the current iterate if it moved after the anchor (the budget's last
        query was asked before steps it should have seen, as with several workers).
        """
        if self._best is not None and self._oracle is None and self.parametrization.function.deterministic:
            return self._best[1].copy()
        anchor = self._recovery.anchor
        if anchor is None:
            return self._x.copy()
        left = self._queries_left()
        if left is not None and left <= 0 and not self._iterations and not np.array_equal(anchor, self._x):
            return self._x.copy()
        return anchor.copy()

    def stop_at_budget(self, stop: bool = True) -> None:
        """Whether an ask raises ``NevergradEarlyStopping`` once the budget, Fisher queries included, is spent.

        ``minimize`` sets it for its own loop.  Set it before a loop that drives the optimizer
        with Nevergrad's base ``Optimizer.minimize`` (Nevergrad's benchmark does), which
        otherwise counts asks only and lets ZO-NP's Fisher queries come on top of the budget.
        Not kept by pickling.
        """
        self._stop_at_budget = bool(stop)

    def minimize(self, objective_function: tp.Callable[..., tp.Loss], *args: tp.Any, **kwargs: tp.Any) -> p.Parameter:
        """Nevergrad's ``minimize``, attaching ``objective_function`` first if it is an output oracle.

        An ask raises ``NevergradEarlyStopping`` (handled by the loop) once the query budget,
        Fisher queries included, is spent: the run spends exactly the budget.
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
        return state

    # ----- what both doors share ------------------------------------------------------
    def _open_iteration(self) -> tp.Optional[OpenIteration]:
        """The latest iteration if it still has queries to ask (one begun before a recovery is cut short first)."""
        iteration = self._iterations.get(self._num_iterations - 1)
        if iteration is None or iteration.asked == iteration.size:
            return None
        if iteration.recoveries_at_start != self._recovery.count:  # its estimate will be discarded: ask no more
            iteration.limit = iteration.asked
            if iteration.told == iteration.size:
                del self._iterations[iteration.index]
            return None
        return iteration

    def _new_iteration(self) -> OpenIteration:
        """Starts an iteration; inside ``minimize``, raises ``NevergradEarlyStopping`` once the budget is spent."""
        left = self._queries_left()
        if self._stop_at_budget and left is not None and left <= 0:
            raise errors.NevergradEarlyStopping(f"Query budget {self.budget} spent (Fisher queries included)")
        return self._start_iteration()

    def _screened(self, values: np.ndarray) -> np.ndarray:
        """``values`` with NaN, inf and clipped losses replaced by NaN (left out of the estimate), with a warning."""
        good = np.isfinite(values)
        good &= values < CLIPPED_LOSS
        if good.all():
            return values
        bad = values[~good]
        told = f"{bad[0]}" if len(values) == 1 else f"{len(bad)} of {len(values)}"
        self._warn_invalid(f"Non-finite or clipped loss ({told}) left out of the ZO estimate")
        return np.where(good, values, math.nan)

    def _told(self, iteration: OpenIteration, all_finite: bool) -> None:
        """Every query of ``iteration`` is told: it leaves the open iterations and the loop steps on it."""
        del self._iterations[iteration.index]
        self._step(iteration, all_finite)

    def _warn_invalid(self, message: str) -> None:
        self._warn(message, InvalidQueryWarning)

    def _block(self, block: int) -> tp.Tuple[int, int]:
        return int(self._parts.bounds[block]), int(self._parts.bounds[block + 1])

    def _step_size(self, size: int) -> float:
        return self._parts.mu / math.sqrt(size)

    def _queries_left(self) -> tp.Optional[int]:
        """Queries left in the budget (may be negative beyond it), ``None`` without a budget."""
        return None if self.budget is None else self.budget - self.num_queries

    def _schedule_factor(self) -> float:
        """Learning-rate multiplier at the current point of the budget: 1, or the cosine schedule's."""
        if self._parts.lr_schedule == "constant" or self.budget is None:
            return 1.0
        spent = min(1.0, self.num_queries / self.budget)
        return COSINE_FLOOR + (1 - COSINE_FLOOR) * 0.5 * (1 + math.cos(math.pi * spent))

    # ----- the algorithm --------------------------------------------------------------
    def _start_iteration(self) -> OpenIteration:
        """Steps 1-4 of the module docstring: block, Fisher refresh, directions, the iteration's record."""
        parts, rng, key = self._parts, self._rng, self._num_iterations
        ### 1. the block, and the mini-batch (shared with the open iteration at the same point)
        fisher = parts.fisher
        # the random state before this iteration's draws, restored if the oracle raises in a refresh
        state = rng.get_state() if fisher is not None and self._oracle is not None else None
        block = rng.randint(self.num_blocks) if parts.block_selection == "random" else key % self.num_blocks
        previous = self._iterations.get(key - 1)
        batch = previous.batch if previous is not None and np.array_equal(previous.base, self._x) else key
        ### 2. the Fisher refresh, if one is due and affordable
        left = self._queries_left()
        if fisher is not None:
            attached = self._oracle is not None
            block, decision = fisher.plan(key, block, parts.bounds, attached, left, self.budget, self.iteration_size)
            if decision == INACTIVE:
                self._warn(
                    "ZONP has no output oracle (a plain objective returning a float): natural perturbations are "
                    "inactive and it runs as block ZO-I. Pass a nevergrad_zonp adapter to minimize, or call attach().",
                    NaturalPerturbationsInactiveWarning,
                )
            elif decision == REFRESH:
                try:
                    self.refresh_fisher(block, batch)
                except BaseException:
                    rng.set_state(state)
                    raise
                left = self._queries_left()
            fisher.used(block)
        ### 3. the directions (the last iteration of a budget keeps one query for the final iterate)
        start, stop = self._block(block)
        if parts.curvature is not None:
            parts.curvature.prepare(self._oracle, self._theta_value, block, start, stop)
        num_directions = parts.num_directions
        if left is not None and 0 < left <= self.iteration_size:
            num_directions = parts.queries.affordable(left)
        directions = parts.queries.rows(parts.sampler.draw(rng, block, start, stop, num_directions))
        probe = None
        if self._probes is not None:
            directions, probe = self._probes.directions(
                parts.sampler, rng, key, start, stop, directions, self._step_size(stop - start), parts.queries.per_direction
            )
        ### 4. the record of its queries
        iteration = OpenIteration(
            index=key,
            block=block,
            base=self._x.copy(),
            directions=directions,
            losses=np.full(len(directions) + 1, math.nan),
            recoveries_at_start=self._recovery.count,
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

    def _step(self, iteration: OpenIteration, all_finite: bool) -> None:
        """Step 5: estimate, update, recovery, on a told iteration (``all_finite``: every loss checked finite)."""
        parts, recovery = self._parts, self._recovery
        ### stale: begun on a path a recovery abandoned since, its estimate belongs to no kept iterate
        if iteration.recoveries_at_start != recovery.count:
            return
        ### recovery: a bad base loss sends the iterate back to the anchor
        base_loss, losses, directions = iteration.losses[0], iteration.losses[1:], iteration.directions
        if not math.isfinite(base_loss):
            self._recover()
            return
        recovery.accept(iteration.index, iteration.base, iteration.steps_at_start)
        if self._best is None or base_loss < self._best[0]:
            self._best = (base_loss, iteration.base)
        if iteration.probe is not None:
            assert self._probes is not None
            if math.isfinite(losses[-1]):  # (NaN when cut short before it)
                self._probes.settle(self._x, iteration.probe, base_loss, float(losses[-1]))
            losses, directions = losses[:-1], directions[:-1]
        ### the estimate, from the usable losses (formed at the current point, for a rule that needs it)
        losses, directions = parts.queries.valid(losses, directions, all_finite)
        if not len(losses) or not (parts.update.stale_estimates or np.array_equal(iteration.base, self._x)):
            return
        if self._num_steps < FLAT_CHECK_STEPS:
            self._check_flat(base_loss, losses)
        start, stop = self._block(iteration.block)
        size = stop - start
        lam = 1.0 if parts.update.unbiased_estimate else 1.0 / size
        with single_threaded_blas():
            grad = parts.queries.estimate(base_loss, losses, directions, self._step_size(size), lam, iteration.block, start, stop)
        ### the update, scaled by the schedule and the block's recovery scale
        scale = recovery.scale[iteration.block] * self._schedule_factor()
        parts.update.step(self._x, grad, iteration.block, start, stop, scale=scale)
        recovery.stepped_on(iteration.block)
        self._num_steps += 1

    def _recover(self) -> None:
        """Back to the anchor after a non-finite base loss; the blocks stepped since forget their memory."""
        blamed = self._recovery.recover(self._num_steps)
        self._warn_invalid(
            f"Non-finite base loss: back to the last iterate with a finite loss; step scale of block(s) {blamed} halved"
        )
        if self._recovery.anchor is not None:
            self._x = self._recovery.anchor.copy()
        for block in blamed:
            start, stop = self._block(block)
            self._parts.update.reset(block, start, stop)
            self._parts.sampler.reset(block, start, stop)

    def _check_flat(self, base_loss: float, losses: np.ndarray) -> None:
        """Warns once if each of the first :data:`FLAT_CHECK_STEPS` steps saw every query give exactly its base loss."""
        if len(losses) > 1 and bool(np.all(losses == base_loss)):
            self._flat_steps += 1
            if self._flat_steps == FLAT_CHECK_STEPS:
                self._warn(
                    f"In each of the first {FLAT_CHECK_STEPS} iterations every query gave exactly the base loss: the "
                    f"displacement (mu = {self._parts.mu:g}) does not change the objective (float16 or bfloat16 "
                    "parameters, a quantized chip, a block that does not reach the loss). The estimate is zero and the "
                    "iterate does not move: try a larger mu",
                    FlatQueriesWarning,
                )
