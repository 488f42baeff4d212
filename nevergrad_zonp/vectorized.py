"""Ask a whole iteration, evaluate it in one batched call, tell it: the fast path.

Nevergrad's ``minimize`` submits one point per executor call, even with
``batch_mode=True``.  A ZO iteration (``Q + 1`` points) or an evolution-strategy
generation (its population) is better evaluated in ONE batched forward, on one
mini-batch.  :func:`minimize_vectorized` runs that loop for any Nevergrad optimizer.

For the ZO optimizers it goes further when it can (the iteration-level fast path): the
optimizer asks a whole iteration as a base vector and ``Q + 1`` block deltas
(``ask_iteration``) and the adapter evaluates the deltas directly (``block_losses``), so
no Nevergrad candidate and no full parameter vector is built per query.  Same iterates as
the per-candidate path, for the same seed.
"""

from __future__ import annotations

import dataclasses
import typing as tp

import numpy as np
from nevergrad.common import errors
from nevergrad.optimization import base
from nevergrad.parametrization import parameter as p

from .optimizers.iterations import check_oracle_start, population_size
from ._checks import check_integer
from .oracle import OutputOracle

BatchObjective = tp.Callable[[tp.List[tp.Any]], tp.Sequence[float]]
Callback = tp.Callable[[base.Optimizer, tp.List[p.Parameter], np.ndarray], None]


def iteration_size(optimizer: base.Optimizer) -> int:
    """Candidates that belong together: ``Q + 1`` for ZO, the population for NES and CMA-ES.

    Falls back to ``num_workers`` for optimizers with no known population.
    """
    try:
        return population_size(optimizer)
    except TypeError:
        return max(1, optimizer.num_workers)


def queries_spent(optimizer: base.Optimizer) -> int:
    """Queries an optimizer has spent: ``num_queries`` where it counts more than its asks (ZO-NP's Fisher), else ``num_ask``."""
    return int(getattr(optimizer, "num_queries", optimizer.num_ask))


@dataclasses.dataclass
class _Progress:
    """Where the per-candidate loop of :func:`minimize_vectorized` is, kept on the optimizer between calls.

    ``generation`` is the index (mini-batch key) of the next group and ``untold`` the
    candidates of the current group asked but not told yet: after an exception, the next
    call evaluates them again before asking anything new.
    """

    generation: int = 0
    untold: tp.List[p.Parameter] = dataclasses.field(default_factory=list)


#: The attribute of an optimizer holding its :class:`_Progress`.
_PROGRESS = "_minimize_vectorized_progress"


def minimize_vectorized(
    optimizer: base.Optimizer,
    objective: tp.Union[OutputOracle, BatchObjective],
    *,
    callback: tp.Optional[Callback] = None,
    fast_path: tp.Optional[bool] = None,
) -> p.Parameter:
    """Runs ``optimizer`` to its budget, evaluating each iteration/generation in one call.

    Parameters
    ----------
    optimizer: any Nevergrad optimizer with a budget.  A ZO optimizer is attached to a
        model-aware ``objective`` (mini-batches, Fisher) as ``minimize`` would do.
    objective: an adapter (its ``loss_batch(values, key)`` is used, ``key`` = the
        generation index, so every generation sees one mini-batch), or a callable taking
        the list of candidate values of one iteration and returning their losses.
    callback: called after each told group with ``(optimizer, candidates, losses)``; on
        the fast path ``candidates`` is the :class:`~nevergrad_zonp.optimizers.IterationRequest`.
    fast_path: ``None`` (default): the iteration-level fast path whenever
        :func:`uses_fast_path` says it applies; ``False``: always one Nevergrad candidate per
        query; ``True``: the fast path, or an error saying why it does not apply.

    Returns the optimizer's recommendation.  The loop stops when the budget is spent
    (:func:`queries_spent`: Fisher queries included for ZO-NP), or earlier when the
    optimizer raises ``NevergradEarlyStopping``.

    An exception from the objective (or the callback) reaches the caller, and calling
    ``minimize_vectorized`` again with the same optimizer goes on where it stopped, as
    Nevergrad's ``minimize`` does: the iteration or generation being evaluated is evaluated
    again (on the fast path ``ask_iteration`` returns the request not told yet; on the
    per-candidate path the candidates not told yet are kept on the optimizer), and the run
    spends the rest of its budget.  For a deterministic objective the result is the one of
    a run without the exception.  The optimizer counts the queries of the retried group
    once; an adapter counts every evaluation it makes, the interrupted one included.

    The optimizer's budget must be a positive integer.  With an adapter as ``objective``,
    the optimizer must start where the adapter's parameters do (build it on
    ``adapter.parametrization``): a parametrization made from the dimension alone, which
    starts at zero, is refused with a ``ValueError`` instead of dropping the model's own
    initialisation.
    """
    if optimizer.budget is None:
        raise ValueError("minimize_vectorized needs an optimizer with a budget")
    check_integer("the optimizer's budget", optimizer.budget)
    if isinstance(objective, OutputOracle):
        if hasattr(optimizer, "attach"):
            optimizer.attach(objective)
        else:
            check_oracle_start(optimizer.parametrization, objective)
    if fast_path is None:
        fast_path = uses_fast_path(optimizer, objective)
    elif fast_path and not uses_fast_path(optimizer, objective):
        raise ValueError(
            "fast_path=True needs an optimizer with ask_iteration on a plain ng.p.Array, no registered "
            "ask/tell callbacks, and an objective with block_losses (or a callable on vector lists)"
        )
    if fast_path:
        return _minimize_iterations(optimizer, objective, callback)
    batch_loss = getattr(objective, "loss_batch", None)
    group = iteration_size(optimizer)
    progress = optimizer.__dict__.setdefault(_PROGRESS, _Progress())
    # (the budget is read at every step: a callback may change it)
    while progress.untold or queries_spent(optimizer) < optimizer.budget:
        if not progress.untold:
            try:
                progress.untold.append(optimizer.ask())
            except errors.NevergradEarlyStopping:
                break
            # A ZO iteration's size is known once it has started (the last one may be shorter).
            rest = getattr(optimizer, "asks_left_in_iteration", group - 1)
            rest = min(rest, optimizer.budget - queries_spent(optimizer))
            try:
                for _ in range(rest):
                    progress.untold.append(optimizer.ask())
            except errors.NevergradEarlyStopping:
                pass
        asked = list(progress.untold)
        values = [candidate.value for candidate in asked]
        if batch_loss is not None:
            losses = np.asarray(batch_loss(values, key=progress.generation), dtype=float)
        else:
            losses = np.asarray(objective(values), dtype=float)  # type: ignore[operator]
        if losses.shape != (len(asked),):
            raise ValueError(
                f"the objective returned losses of shape {losses.shape} for {len(asked)} candidates: "
                f"expected shape ({len(asked)},)"
            )
        for candidate, loss in zip(asked, losses):
            optimizer.tell(candidate, float(loss))
            progress.untold.pop(0)
        progress.generation += 1
        if callback is not None:
            callback(optimizer, asked, losses)
    return optimizer.provide_recommendation()


def uses_fast_path(optimizer: base.Optimizer, objective: tp.Any) -> bool:
    """Whether :func:`minimize_vectorized` can run ``optimizer`` on ``objective`` iteration by iteration.

    It can when the optimizer asks whole iterations (``ask_iteration``, a ZO optimizer on a
    plain ``ng.p.Array``), no per-candidate ``ask``/``tell`` callback is registered on it
    (the fast path does not make candidates to call them with), and the objective
    evaluates block deltas (``block_losses``) or is a plain callable on lists of vectors.
    """
    if not getattr(optimizer, "supports_iterations", False):
        return False
    if any(optimizer._callbacks.get(name) for name in ("ask", "tell")):
        return False
    return hasattr(objective, "block_losses") or not hasattr(objective, "loss_batch")


def _minimize_iterations(
    optimizer: tp.Any, objective: tp.Any, callback: tp.Optional[tp.Callable[..., None]]
) -> p.Parameter:
    """The fast path of :func:`minimize_vectorized`: ``ask_iteration``, one batched evaluation, ``tell_iteration``.

    A request left untold by an exception is the optimizer's ``open_request``: the next call
    asks it again (``ask_iteration`` returns it) even when its queries reached the budget.
    """
    block_losses = getattr(objective, "block_losses", None)
    while optimizer.open_request is not None or queries_spent(optimizer) < optimizer.budget:
        try:
            request = optimizer.ask_iteration()
        except errors.NevergradEarlyStopping:
            break
        if block_losses is not None:
            losses = np.asarray(block_losses(request.theta, request.start, request.deltas, request.key), dtype=float)
        else:
            losses = np.asarray(objective(request.values()), dtype=float)
        if losses.shape != (request.size,):
            raise ValueError(
                f"the objective returned losses of shape {losses.shape} for {request.size} candidates: "
                f"expected shape ({request.size},)"
            )
        optimizer.tell_iteration(request, losses)
        if callback is not None:
            callback(optimizer, request, losses)
    return optimizer.provide_recommendation()
