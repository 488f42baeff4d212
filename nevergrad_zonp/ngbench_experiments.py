"""Experiments of Nevergrad's benchmark on nevergrad-zonp's tasks (the file to give ``--imports``).

    python -m nevergrad.benchmark zonp_equalization --imports=nevergrad_zonp/ngbench_experiments.py \\
        --repetitions=2 --output=zonp_equalization.csv
    python -m nevergrad.benchmark.plotting zonp_equalization.csv

Importing it registers the experiments below in ``nevergrad.benchmark.registry``; that
import needs the ``benchmark`` extra (Nevergrad's benchmark imports its image functions,
hence torchvision).  Each experiment runs this package's ZO methods (attached to the task as
their output oracle, :func:`nevergrad_zonp.ngbench.attached`) and Nevergrad's own optimizers
on :class:`nevergrad_zonp.ngbench.TaskFunction` s, one Nevergrad candidate per query.
"""

from __future__ import annotations

import typing as tp

from nevergrad.benchmark import registry
from nevergrad.benchmark.experiments import create_seed_generator
from nevergrad.benchmark.xpbase import Experiment

from nevergrad_zonp.ngbench import TaskFunction, attached  # (its imports register the package's optimizers)

#: The optimizers of every experiment: this package's and Nevergrad's usual references.
OPTIMIZERS = ("ZONP", "ZOI", "ZOco", "LPP", "HiZOO", "NGOpt", "CMA", "OnePlusOne")


def _experiments(task: str, budgets: tp.Sequence[int], seed: tp.Optional[int]) -> tp.Iterator[Experiment]:
    seeds = create_seed_generator(seed)
    function = TaskFunction(task, seed=0)
    for budget in budgets:
        for name in OPTIMIZERS:
            yield Experiment(function, attached(name), budget=budget, num_workers=1, seed=next(seeds))


@registry.register
def zonp_equalization(seed: tp.Optional[int] = None) -> tp.Iterator[Experiment]:
    """The equalization chip (564 parameters) at 1,500 and 3,000 queries: minutes on 2 cores."""
    return _experiments("equalization", (1500, 3000), seed)


@registry.register
def zonp_tasks(seed: tp.Optional[int] = None) -> tp.Iterator[Experiment]:
    """The equalization and copying chips, the digits CNN and the optical classifier at the suites' budgets: hours."""
    for task, budget in (("equalization", 30_000), ("copying", 24_000), ("digits", 200_000), ("onn16", 15_000)):
        yield from _experiments(task, (budget,), seed)
