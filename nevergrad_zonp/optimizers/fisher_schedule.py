"""When, and for which block, ZO-NP estimates a Fisher: a part of the ZO loop (:mod:`.loop`).

A refresh estimates block ``b``'s Fisher from a finite-difference Jacobian of the network
outputs (``n_b + 1`` output queries through the attached
:class:`~nevergrad_zonp.oracle.OutputOracle`, docs/method.md "Blocks and the black-box
Fisher") and hands it to the :class:`~.samplers.NaturalSampler`, which refactorises
``F~_b + rho I``.  The rules (the ``fisher_refresh`` setting of
:class:`~nevergrad_zonp.ZerothOrder`):

- ``"per_block"``: at a block's first use and after every ``period`` uses of it, while the
  Fisher queries stay within :data:`PER_BLOCK_FISHER_SHARE` of the budget;
- ``"sampled"`` (the paper's): every ``period`` iterations, for the block sampled then;
- ``"least_recent"``: every ``period`` iterations, for the block whose Fisher is oldest,
  which that iteration then steps on;
- ``"auto"``: resolved once by :func:`resolve_fisher_refresh`.

With a budget, a refresh is skipped when fewer queries than it costs would be left after it
for the iterations that use it.
"""

from __future__ import annotations

import typing as tp

import numpy as np

from ..fisher import finite_difference_jacobian, fisher_from_jacobian
from ..oracle import OutputOracle
from .resources import single_threaded_blas
from .samplers import NaturalSampler

FISHER_REFRESHES = ("auto", "per_block", "sampled", "least_recent")
#: Share of the query budget that ``"per_block"`` spends on Fisher estimates at most (a refresh beyond it is skipped).
PER_BLOCK_FISHER_SHARE = 0.2
#: ``"auto"`` refreshes per block when one Fisher for every block costs at most this share of the budget.
AUTO_PER_BLOCK_SHARE = 0.15

#: What :meth:`FisherSchedule.plan` decides for an iteration.
REFRESH, NOT_DUE, SKIPPED, INACTIVE = "refresh", "not due", "skipped", "inactive"


def resolve_fisher_refresh(rule: str, bounds: np.ndarray, budget: tp.Optional[int]) -> str:
    """The refresh rule ``rule`` stands for on blocks ``bounds`` and a query ``budget``.

    ``"auto"``: ``"per_block"`` if there is no budget or one Fisher per block (``n_b + 1``
    queries each) takes at most :data:`AUTO_PER_BLOCK_SHARE` of it, else ``"sampled"`` (on a
    smaller budget ``"per_block"`` would spend its share on the first blocks at the starting
    point and never refresh them).  Any other ``rule`` is returned as it is.
    """
    if rule != "auto":
        return rule
    first_estimates = int(np.sum(np.diff(bounds) + 1))
    return "per_block" if budget is None or first_estimates <= AUTO_PER_BLOCK_SHARE * budget else "sampled"


class FisherSchedule:
    """The Fisher refreshes of one run: the rule, each block's history, the queries spent.

    ``last_refresh[b]`` is the iteration of block ``b``'s latest accepted estimate (-1:
    never); ``uses_since_refresh[b]`` counts iterations on ``b`` since its latest refresh
    attempt (``"per_block"`` starts it at ``period``, so a block's first use refreshes).
    """

    def __init__(
        self,
        sampler: NaturalSampler,
        rule: str,
        period: int,
        fd_step: float,
        bounds: np.ndarray,
        budget: tp.Optional[int],
    ) -> None:
        self.sampler = sampler
        self.rule = resolve_fisher_refresh(rule, bounds, budget)
        self.period = period
        self.fd_step = fd_step
        num_blocks = len(bounds) - 1
        self.last_refresh = np.full(num_blocks, -1, dtype=np.int64)
        self.uses_since_refresh = np.full(num_blocks, period, dtype=np.int64)
        self.num_queries = 0
        self.num_updates = 0
        self.num_skipped = 0

    def plan(
        self,
        key: int,
        block: int,
        bounds: np.ndarray,
        attached: bool,
        left: tp.Optional[int],
        budget: tp.Optional[int],
        iteration_size: int,
    ) -> tp.Tuple[int, str]:
        """The block iteration ``key`` steps on (drawn: ``block``) and whether it refreshes that block's Fisher first.

        Returns ``(block, decision)``, the decision one of :data:`REFRESH`, :data:`NOT_DUE`,
        :data:`SKIPPED` (due, but the budget cannot fund it) or :data:`INACTIVE` (due, but
        no output oracle is attached).  :meth:`used` counts the use once the iteration starts.
        """
        if self.rule == "per_block":
            due = bool(self.uses_since_refresh[block] >= self.period)
        else:
            due = key % self.period == 0
        decision = REFRESH if due else NOT_DUE
        if due and self.rule == "least_recent" and attached:
            block = int(np.argmin(self.last_refresh))  # the oldest Fisher (never estimated first)
        size = int(bounds[block + 1] - bounds[block])
        if due and not attached:
            decision = INACTIVE
            self.uses_since_refresh[block] = 0
        elif due and left is not None and left - (size + 1) < max(size + 1, iteration_size):
            decision = SKIPPED  # a refresh serves the iterations after it: never spend more than they can use
        elif (
            due
            and self.rule == "per_block"
            and budget is not None
            and self.num_queries + size + 1 > PER_BLOCK_FISHER_SHARE * budget
        ):
            decision = SKIPPED  # every block's first use asks for one: on a small budget that could take most of it
        if decision == SKIPPED:
            self.num_skipped += 1
        return block, decision

    def refresh(
        self,
        oracle: OutputOracle,
        theta: np.ndarray,
        block: int,
        start: int,
        stop: int,
        key: int,
        index: int,
        warn: tp.Callable[[str], None],
    ) -> bool:
        """Estimates block ``block``'s Fisher at parameters ``theta`` on mini-batch ``key`` (at iteration ``index``).

        Spends ``n_b + 1`` output queries.  Samples with non-finite outputs, or whose
        Jacobian overflows, are left out (``warn`` says how many); returns whether the
        sampler accepted an estimate.  Raises ``ValueError`` when the oracle's outputs do
        not have ``n_b + 1`` rows; an exception of the oracle reaches the caller and leaves
        the schedule as it was, but for the queries spent.
        """
        accepted = self._estimate(oracle, theta, block, start, stop, key, warn)
        if accepted:
            self.num_updates += 1
            self.last_refresh[block] = index
        self.uses_since_refresh[block] = 0  # an unusable estimate is not retried at every use
        return accepted

    def used(self, block: int) -> None:
        """Counts an iteration on ``block`` (after its refresh, if it had one)."""
        self.uses_since_refresh[block] += 1

    def _estimate(
        self,
        oracle: OutputOracle,
        theta: np.ndarray,
        block: int,
        start: int,
        stop: int,
        key: int,
        warn: tp.Callable[[str], None],
    ) -> bool:
        size = stop - start
        step = self.fd_step
        deltas = np.vstack([np.zeros((1, size)), step * np.eye(size)])
        outputs = np.asarray(oracle.block_outputs(theta, start, deltas, key))
        self.num_queries += size + 1
        if outputs.ndim < 2 or outputs.shape[0] != size + 1:
            raise ValueError(
                f"block_outputs returned shape {outputs.shape}; expected ({size + 1}, batch, ...) for a block of {size}"
            )
        base_out, perturbed = outputs[0], outputs[1:]
        batch = base_out.shape[0]
        finite = np.isfinite(base_out).reshape(batch, -1).all(axis=1)
        finite &= np.isfinite(perturbed).reshape(size, batch, -1).all(axis=(0, 2))
        if not finite.all():
            warn(f"Non-finite network outputs for {int((~finite).sum())} of {batch} samples left out of the Fisher")
        if not finite.any():
            return False
        with np.errstate(over="ignore", invalid="ignore"):  # finite outputs whose differences overflow: checked below
            jacobian = finite_difference_jacobian(base_out[finite], perturbed[:, finite], step)
        usable_rows = np.isfinite(jacobian).reshape(len(jacobian), -1).all(axis=1)
        if not usable_rows.all():
            warn(
                f"Finite-difference Jacobian overflows for {int((~usable_rows).sum())} of {len(jacobian)} samples: "
                "left out of the Fisher"
            )
            if not usable_rows.any():
                return False
            jacobian, finite = jacobian[usable_rows], np.flatnonzero(finite)[usable_rows]
        with single_threaded_blas(), np.errstate(over="ignore", invalid="ignore"):  # an overflow: unusable below
            fisher = fisher_from_jacobian(jacobian, base_out[finite], oracle.output)
            usable = self.sampler.update(block, fisher)
        if not usable:
            warn("Unusable Fisher estimate (zero or non-finite trace) kept out")
        return bool(usable)
