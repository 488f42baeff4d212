"""Ask a whole iteration, evaluate it in one batched call, tell it: the fast path.

Nevergrad's ``minimize`` submits one point per executor call, even with
``batch_mode=True``.  A ZO iteration (``Q + 1`` points) or an evolution-strategy
generation (its population) is better evaluated in ONE batched forward, on one
mini-batch.  :func:`minimize_vectorized` runs that loop for any Nevergrad optimizer.
"""

from __future__ import annotations

import typing as tp

import numpy as np
from nevergrad.common import errors
from nevergrad.optimization import base
from nevergrad.parametrization import parameter as p

from .optimizers.cma_presets import population_size
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


def minimize_vectorized(
    optimizer: base.Optimizer,
    objective: tp.Union[OutputOracle, BatchObjective],
    *,
    callback: tp.Optional[Callback] = None,
) -> p.Parameter:
    """Runs ``optimizer`` to its budget, evaluating each iteration/generation in one call.

    Parameters
    ----------
    optimizer: any Nevergrad optimizer with a budget.  A ZO optimizer is attached to a
        model-aware ``objective`` (mini-batches, Fisher) as ``minimize`` would do.
    objective: an adapter (its ``loss_batch(values, key)`` is used, ``key`` = the
        generation index, so every generation sees one mini-batch), or a callable taking
        the list of candidate values of one iteration and returning their losses.
    callback: called after each told group with ``(optimizer, candidates, losses)``.

    Returns the optimizer's recommendation.  The loop stops when the budget is spent
    (:func:`queries_spent`: Fisher queries included for ZO-NP), or earlier when the
    optimizer raises ``NevergradEarlyStopping``.
    """
    if optimizer.budget is None:
        raise ValueError("minimize_vectorized needs an optimizer with a budget")
    if isinstance(objective, OutputOracle) and hasattr(optimizer, "attach"):
        optimizer.attach(objective)
    batch_loss = getattr(objective, "loss_batch", None)
    group = iteration_size(optimizer)
    generation = 0
    while queries_spent(optimizer) < optimizer.budget:
        try:
            asked = [optimizer.ask()]
        except errors.NevergradEarlyStopping:
            break
        # A ZO iteration's size is known once it has started (the last one may be shorter).
        rest = getattr(optimizer, "asks_left_in_iteration", group - 1)
        rest = min(rest, optimizer.budget - queries_spent(optimizer))
        try:
            for _ in range(rest):
                asked.append(optimizer.ask())
        except errors.NevergradEarlyStopping:
            pass
        values = [candidate.value for candidate in asked]
        if batch_loss is not None:
            losses = np.asarray(batch_loss(values, key=generation), dtype=float)
        else:
            losses = np.asarray(objective(values), dtype=float)  # type: ignore[operator]
        if losses.shape != (len(asked),):
            raise ValueError(f"the objective returned {losses.shape} losses for {len(asked)} candidates")
        for candidate, loss in zip(asked, losses):
            optimizer.tell(candidate, float(loss))
        if callback is not None:
            callback(optimizer, asked, losses)
        generation += 1
    return optimizer.provide_recommendation()
