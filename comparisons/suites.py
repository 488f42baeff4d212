"""Comparison suites as data: which tasks, methods, budgets, seeds and protocol to run.

A :class:`Suite` is a plain dataclass, so a new comparison is a few lines: list its
:class:`TaskSpec` (a task constructor from :mod:`nevergrad_zonp.tasks` and its keyword
arguments) and the method names of :data:`comparisons.methods.METHODS`.

Protocol of every run (docs/method.md, "The problem and the protocol"): the task is built from the
run's seed; if
``pretrain_epochs > 0`` its ideal model is trained by backprop
(:func:`nevergrad_zonp.tasks.base.pretrain`) and, where the task has a chip, the trained
parameters are programmed onto the chip (:func:`~nevergrad_zonp.photonics.transfer_parameters`);
then zeroth-order training runs on the chip where there is one, else on the model, until
the query budget (Jacobian queries included) is spent.

The built-in suites (:data:`SUITES`):

- ``quick``: the ``standard`` suite's equalization chip at half its budget, the five methods
  ZONP, ZOI, ZOco, SNES and CMA-ES with the step sizes ``standard`` tuned, 3 seeds; minutes
  on 2 CPU cores.
- ``standard``: both chips and the digits CNN at budgets where ZO-NP gets its Fisher, 10 seeds.
- ``paper``: the paper's four tasks (FashionMNIST CNN, equalization, copying memory,
  CIFAR-10 Mixer; docs/method.md, "Tasks"), Q = 100, 8 seeds; FashionMNIST and CIFAR-10 are
  read from local folders given on the command line.
"""

from __future__ import annotations

import dataclasses
import math
import os
import typing as tp

from nevergrad_zonp.optimizers.zeroth_order import DIRECTION_STREAMS
from nevergrad_zonp.tasks.base import Task
from nevergrad_zonp.tasks.cifar import cifar10_task
from nevergrad_zonp.tasks.copying import copying_task
from nevergrad_zonp.tasks.equalization import equalization_task
from nevergrad_zonp.tasks.images import digits_task, mnist_task
from nevergrad_zonp.tasks.onn import data_suffix, onn_classifier_task

from .methods import METHODS

TaskBuilder = tp.Callable[..., Task]


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """One task of a suite and how it is trained.

    Attributes
    ----------
    name: identifier in result files and tables.
    build: module-level task constructor called as ``build(seed=seed, **kwargs)`` (a
        module-level function, so that specs pickle to worker processes).
    kwargs: further keyword arguments of ``build`` (data paths, sizes).
    metric: the task metric reported in tables and plots (a key of ``Task.metrics``).
    maximize: whether a larger ``metric`` is better (accuracy) or worse (error rates).
    pretrain_epochs: backprop epochs on the ideal model before ZO (0: ZO from the start).
    pretrain_lr: Adam learning rate of that pretraining.
    batch_size: mini-batch size of the ZO queries.
    num_directions: Q, directions per ZO iteration (CMA-ES population ``Q + 1``).
    zo_settings: further keyword arguments of every ZO method's :class:`~nevergrad_zonp.ZerothOrder`
        on this task (e.g. ``fisher_period``, so that ZONP's refreshes fit the task's block size
        and Q); the same for ZONP, ZOI and ZOco.
    budget: this task's query budget, if not the suite's.
    methods: the suite's methods that run on this task (``None``: all of them), e.g. to
        keep expensive extras to the cheapest task.
    """

    name: str
    build: TaskBuilder
    kwargs: tp.Mapping[str, tp.Any] = dataclasses.field(default_factory=dict)
    metric: str = "accuracy"
    maximize: bool = True
    pretrain_epochs: int = 0
    pretrain_lr: float = 1e-2
    batch_size: int = 100
    num_directions: int = 10
    zo_settings: tp.Mapping[str, tp.Any] = dataclasses.field(default_factory=dict)
    budget: int | None = None
    methods: tuple[str, ...] | None = None

    def settings(self) -> dict[str, tp.Any]:
        """JSON-friendly description (the builder by its qualified name)."""
        values = dataclasses.asdict(self)
        if self.methods is not None:
            values["methods"] = list(self.methods)
        values["build"] = f"{self.build.__module__}.{self.build.__qualname__}"
        values["kwargs"] = {key: str(value) if isinstance(value, os.PathLike) else value for key, value in self.kwargs.items()}
        values["zo_settings"] = dict(self.zo_settings)
        return values


@dataclasses.dataclass(frozen=True)
class Suite:
    """Methods x tasks x seeds at one query budget, with step sizes tuned on a grid.

    Attributes
    ----------
    name: identifier of the suite.
    tasks: the tasks.
    methods: names in :data:`comparisons.methods.METHODS`.
    budget: queries per run, Jacobian (Fisher) queries included (a task may set its own).
    seeds: seeds of the reported runs.
    tuning_seeds: seeds of the tuning runs (none of them among ``seeds``).
    grid_size: points of every method's initial log-spaced step-size grid.
    step_ranges: ``{step name: (lowest, highest)}`` of the initial grids (``"lr"`` for the
        ZO methods' Adam learning rate, ``"sigma0"`` for the evolution strategies,
        ``"update_scale"`` for the learned optimizer: the factor on its UpdateRNN's output,
        1 = as meta-trained on attacks).
    max_extensions: how many times a grid whose best point is at an edge is extended by
        one point beyond that edge (same log spacing); a choice still at an edge after
        that is marked in ``tuning.json`` and the report.
    checkpoints: curve points per run after the start (at ``budget * i / checkpoints``
        queries, the last one at the end of the run).
    fixed_steps: ``{task name: {method: step size}}`` chosen elsewhere; a method listed
        there runs no tuning and uses that step size (``steps_rule`` says where it comes
        from, and the report quotes it).
    steps_rule: how ``fixed_steps`` were chosen.
    seed_groups: ``{label: seeds}``, subsets of ``seeds`` that the report also shows apart
        (e.g. seeds on which a setting was chosen and seeds held out from every choice).
    """

    name: str
    tasks: tuple[TaskSpec, ...]
    methods: tuple[str, ...]
    budget: int
    seeds: tuple[int, ...]
    tuning_seeds: tuple[int, ...] = (1000, 1001, 1002)
    grid_size: int = 3
    step_ranges: tp.Mapping[str, tuple[float, float]] = dataclasses.field(
        default_factory=lambda: {"lr": (1e-3, 1e-1), "sigma0": (1e-3, 1e-1)}
    )
    checkpoints: int = 10
    max_extensions: int = 3
    fixed_steps: tp.Mapping[str, tp.Mapping[str, float]] = dataclasses.field(default_factory=dict)
    steps_rule: str = ""
    seed_groups: tp.Mapping[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        shared = set(self.tuning_seeds) & set(self.seeds)
        if shared:
            raise ValueError(f"tuning seeds {sorted(shared)} must not be among the reported seeds {self.seeds}")
        if not self.tuning_seeds:
            raise ValueError("at least one tuning seed is needed")
        if self.grid_size < 2 or self.checkpoints < 1 or self.budget < 1 or self.max_extensions < 0:
            raise ValueError("grid_size must be at least 2, checkpoints and budget positive, max_extensions >= 0")
        names = [task.name for task in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"task names must be unique, got {names}")
        for task in self.tasks:
            unknown = sorted(set(task.methods or ()) - set(self.methods))
            if unknown:
                raise ValueError(f"task {task.name!r} names methods {unknown} that suite {self.name!r} does not have")
        for label, seeds in self.seed_groups.items():
            if not set(seeds) <= set(self.seeds):
                raise ValueError(f"seed group {label!r} has seeds {sorted(set(seeds) - set(self.seeds))} the suite does not report")
        for task_name, steps in self.fixed_steps.items():
            if task_name not in names:
                raise ValueError(f"fixed_steps names task {task_name!r}, which suite {self.name!r} does not have")
            if not all(math.isfinite(step) and step > 0 for step in steps.values()):
                raise ValueError(f"fixed step sizes must be positive and finite, got {dict(steps)}")
        if self.fixed_steps and not self.steps_rule:
            raise ValueError("fixed_steps need a steps_rule saying how they were chosen")

    def fixed_step(self, task: TaskSpec, method: str) -> float | None:
        """The step size ``method`` runs with on ``task`` without tuning, if the suite fixes one."""
        return self.fixed_steps.get(task.name, {}).get(method)

    def methods_for(self, task: TaskSpec) -> tuple[str, ...]:
        """The suite's methods that run on ``task`` (its ``methods``, in the suite's order)."""
        return tuple(name for name in self.methods if task.methods is None or name in task.methods)

    @property
    def num_runs(self) -> int:
        """Runs before any grid extension: the initial grid on every tuning seed (unless the step is fixed) plus one run per seed."""
        tuning = self.grid_size * len(self.tuning_seeds)
        return sum(
            len(self.seeds) + (0 if self.fixed_step(task, name) is not None or not METHODS[name].tuned else tuning)
            for task in self.tasks
            for name in self.methods_for(task)
        )

    def restricted_to(self, names: tp.Iterable[str] | None = None, methods: tp.Iterable[str] | None = None) -> "Suite":
        """The same suite on the tasks named ``names`` and the methods ``methods`` only (``None``: all).

        Seeds, grids and budgets are unchanged, so the runs are those of the whole suite:
        run a part now and the rest later into the same folder.
        """
        suite = self
        if names is not None:
            names = list(names)
            known = [task.name for task in self.tasks]
            unknown = sorted(set(names) - set(known))
            if unknown:
                raise ValueError(f"suite {self.name!r} has no task {unknown}; its tasks are {known}")
            suite = dataclasses.replace(suite, tasks=tuple(task for task in self.tasks if task.name in names))
        if methods is not None:
            methods = list(methods)
            # a method without a step size (NGOpt) needs no grid: it may join any suite, on every task
            extra = tuple(dict.fromkeys(
                name for name in methods if name not in self.methods and name in METHODS and not METHODS[name].tuned
            ))
            unknown = sorted(set(methods) - set(self.methods) - set(extra))
            if unknown:
                raise ValueError(f"suite {self.name!r} has no method {unknown}; its methods are {list(self.methods)}")
            kept = tuple(name for name in self.methods if name in methods) + extra
            tasks = tuple(
                task if task.methods is None
                else dataclasses.replace(task, methods=tuple(n for n in task.methods if n in kept) + extra)
                for task in suite.tasks
            )
            suite = dataclasses.replace(suite, methods=kept, tasks=tasks)
        return suite

    def with_direction_stream(self, stream: str) -> "Suite":
        """The same suite with every ZO method's directions drawn from ``stream`` (``"torch"`` or ``"legacy"``).

        Runs on another stream are other runs: give them their own results folder (a run's
        file name does not hold its stream, and a run of the other stream would replace it).
        """
        if stream not in DIRECTION_STREAMS:
            raise ValueError(f"direction stream must be one of {DIRECTION_STREAMS}, got {stream!r}")
        tasks = tuple(
            dataclasses.replace(task, zo_settings={**task.zo_settings, "direction_stream": stream}) for task in self.tasks
        )
        return dataclasses.replace(self, tasks=tasks)

    def settings(self) -> dict[str, tp.Any]:
        """JSON-friendly description of the whole suite."""
        values = dataclasses.asdict(self)
        values["tasks"] = [task.settings() for task in self.tasks]
        values["step_ranges"] = {key: list(value) for key, value in self.step_ranges.items()}
        values["tuning_seeds"] = list(self.tuning_seeds)
        values["fixed_steps"] = {task: dict(steps) for task, steps in self.fixed_steps.items()}
        values["seed_groups"] = {label: list(seeds) for label, seeds in self.seed_groups.items()}
        return values


BASELINES = ("ZOI", "ZOco", "SNES", "CMA-ES")
#: Reported seeds of the studies built on the ``standard`` suite (update rule, ablations).
STUDY_SEEDS = (0, 1, 2, 3, 4)


#: ``zo_settings`` of the suites whose runs are reported (standard, update-rule, the ablation,
#: the attacks): their directions come from the legacy stream they were recorded with.
LEGACY_STREAM: dict[str, tp.Any] = {"direction_stream": "legacy"}


def _embedded_equalization(**settings: tp.Any) -> TaskSpec:
    """The equalization chip of the embedded suites: 2,000 training and test symbols, 2 epochs of pretraining."""
    return TaskSpec(
        name="equalization",
        build=equalization_task,
        kwargs={"n_train": 2000, "n_test": 2000},
        metric="ser",
        maximize=False,
        pretrain_epochs=2,
        **settings,
    )


#: The step sizes the ``standard`` suite's tuning chose on its equalization chip (tuning seeds
#: 1000-1002; ``comparisons/reported/standard/tuning.json``), which the ``quick`` suite reuses.
STANDARD_EQUALIZATION_STEPS: dict[str, float] = {"ZONP": 0.0173, "ZOI": 0.003, "ZOco": 0.003, "SNES": 0.003, "CMA-ES": 0.003}


def quick_suite() -> Suite:
    """The ``standard`` suite's equalization chip at half its budget, five methods, 3 seeds: minutes on 2 cores.

    The MZI network of 564 parameters (2 blocks) is pretrained by backprop on the ideal
    model for 2 epochs, programmed onto its chip (fabrication errors), then trained by ZO at
    Q = 10 for 15,000 queries (half the ``standard`` suite's 30,000) with a block's Fisher
    refreshed at its first use and every 200 uses: every block gets its Fisher and the
    refreshes take about 15 % of the queries, the regime ZO-NP is made for.  No tuning
    runs: each method uses the step size the ``standard`` suite's tuning chose for it on this
    chip (at 30,000 queries).  The directions come from the package's default stream.
    """
    standard = standard_suite()
    (equalization,) = (task for task in standard.tasks if task.name == "equalization")
    settings = {key: value for key, value in equalization.zo_settings.items() if key != "direction_stream"}
    return Suite(
        name="quick",
        tasks=(dataclasses.replace(equalization, zo_settings={**settings, "fisher_period": 200}, methods=None),),
        methods=("ZONP", *BASELINES),
        budget=15_000,
        seeds=(0, 1, 2),
        tuning_seeds=standard.tuning_seeds,
        fixed_steps={"equalization": STANDARD_EQUALIZATION_STEPS},
        steps_rule=(
            "each method's step size is the one the `standard` suite's tuning chose for it on this chip at 30,000 "
            "queries (lowest median final training loss over tuning seeds 1000-1002 on a log grid extended at its "
            "edges), not re-tuned at this budget."
        ),
    )


def standard_suite() -> Suite:
    """ZO-NP exercised as the paper does, on embedded data: both chips and digits at Q = 100.

    Every task refreshes a block's Fisher at its first use and after every ``fisher_period``
    uses of that block (``fisher_refresh = "per_block"``, the package default; the ablation
    study compares the rules).

    - equalization chip (564 parameters, 2 blocks of 282), 2 epochs of backprop pretraining,
      Q = 10, 30,000 queries, ``fisher_period = 160``: about 16 refreshes of 283 queries,
      14.7 % of the queries;
    - copying-memory chip (3,170 parameters, 7 blocks of 453) at delay T = 20 (sequences of
      40 steps; a run at T = 50 took 226 s), 15 epochs of pretraining, Q = 10, 24,000
      queries, ``fisher_period = 300``: 7 refreshes of 454 queries (13.2 %), one per block
      at its first use (a block is used about 270 times; at least 7 x 454 queries are needed
      for every block to get a Fisher, so no budget under 21,200 keeps it under 15 %);
    - digits CNN from scratch at the paper's image setting, Q = 100, mini-batches of 50,
      200,000 queries (Fisher about 5 % of the queries at the default period 100).

    10 reported seeds (the report shows seeds 0-4, on which the refresh rule was chosen, and
    the held-out seeds 5-9 apart too), 3 tuning seeds, 3-point grids extended at edges (at
    most 2 points).
    The learned optimizer runs with its generic weights (``ZOL2L``, the registry's) and with
    the weights meta-trained on attacks (``ZOL2L-attack``: how a learned rule transfers) and
    on equalization chips of other seeds (``ZOL2L-equalization``: meta-trained on a training task),
    on the equalization chip only: the suite's two hours go to the five methods on all three tasks.
    """
    core = ("ZONP", *BASELINES)
    # The reported runs (comparisons/reported/standard) drew their directions from numpy's
    # legacy stream, the default until the faster "torch" stream; pinned, so that this suite
    # reproduces them bit for bit.  (The stream changes the random numbers, not the method.)
    per_block = {"fisher_refresh": "per_block", **LEGACY_STREAM}
    return Suite(
        name="standard",
        tasks=(
            _embedded_equalization(zo_settings={"fisher_period": 160, **per_block}),
            TaskSpec(
                name="copying",
                build=copying_task,
                kwargs={"delay": 20},
                pretrain_epochs=15,
                pretrain_lr=2e-3,
                zo_settings={"fisher_period": 300, **per_block},
                budget=24_000,
                methods=core,
            ),
            TaskSpec(
                name="digits",
                build=digits_task,
                batch_size=50,
                num_directions=100,
                budget=200_000,
                methods=core,
                zo_settings=dict(per_block),
            ),
        ),
        methods=("ZONP", *BASELINES, "ZOL2L", "ZOL2L-attack", "ZOL2L-equalization"),
        budget=30_000,
        seeds=tuple(range(10)),
        seed_groups={
            "the seeds on which the per_block refresh rule was chosen": (0, 1, 2, 3, 4),
            "held out from every choice of the suite": (5, 6, 7, 8, 9),
        },
        tuning_seeds=(1000, 1001, 1002),
        grid_size=3,
        step_ranges={"lr": (3e-3, 0.1), "sigma0": (3e-3, 0.1), "update_scale": (0.03, 1.0)},
        max_extensions=2,
    )


def paper_suite(fashion_mnist: str | os.PathLike[str] | None = None, cifar10: str | os.PathLike[str] | None = None) -> Suite:
    """The paper's four tasks (docs/method.md, "Tasks") with 8 seeds.

    ``fashion_mnist`` and ``cifar10`` are local folders of the data sets (see
    :func:`~nevergrad_zonp.tasks.images.load_mnist`, :func:`~nevergrad_zonp.tasks.cifar.load_cifar10`);
    a task whose folder is not given is left out.  Q = 100 on the image tasks, 10 on the
    photonic ones; budget 200,000 queries; the photonic tasks are pretrained on the ideal
    model and fine-tuned on the chip.
    """
    tasks = []
    if fashion_mnist is not None:
        tasks.append(
            TaskSpec(
                name="fashion_mnist",
                build=mnist_task,
                kwargs={"path": str(fashion_mnist), "fashion": True},
                num_directions=100,
            )
        )
    tasks.append(
        TaskSpec(name="equalization", build=equalization_task, metric="ser", maximize=False, pretrain_epochs=3)
    )
    tasks.append(TaskSpec(name="copying", build=copying_task, pretrain_epochs=15, pretrain_lr=2e-3))
    if cifar10 is not None:
        tasks.append(TaskSpec(name="cifar10", build=cifar10_task, kwargs={"path": str(cifar10)}, num_directions=100))
    return Suite(
        name="paper",
        tasks=tuple(tasks),
        methods=("ZONP", *BASELINES, "ZOL2L"),
        budget=200_000,
        seeds=tuple(range(8)),
        grid_size=5,
        step_ranges={"lr": (1e-4, 1e-1), "sigma0": (1e-4, 1e-1), "update_scale": (0.01, 1.0)},
    )


def update_rule_suite() -> Suite:
    """Does Adam undo the natural shaping?  The ``standard`` suite's chips, ZO-NP and ZO-I with Adam and with plain SGD.

    With plain SGD the mean of ZO-NP's estimate is the damped natural gradient
    ``(F~_b + rho I)^-1 g``; Adam divides every coordinate of it by its own running scale,
    which can undo much of the shaping.  Same tasks, seeds, budgets, tuning rule and grids as
    ``standard`` (so its ZONP and ZOI runs are the ``standard`` suite's: put the two in one
    folder and they are reused), with one more grid extension for the SGD rates, whose scale
    differs from Adam's.
    """
    standard = standard_suite()
    chips = tuple(dataclasses.replace(task, methods=None) for task in standard.tasks if task.name in ("equalization", "copying"))
    return dataclasses.replace(
        standard, name="update-rule", tasks=chips, methods=("ZONP", "ZOI", "ZONPSGD", "ZOSGD"), max_extensions=3,
        seeds=STUDY_SEEDS, seed_groups={},
    )


#: The methods the ``frontier`` suite adds to the ``standard`` suite's tasks.
FRONTIER_METHODS = ("NGOpt", "LPP", "HiZOO")
#: The methods of the ``frontier`` suite's optical image classifier (those of the AAAI 2025 Table 3, and ZONP).
ONN_METHODS = ("ZONP", "LPP", "ZOco", "ZOI", "CMA-ES")


def onn_task(k: int = 16, path: str | os.PathLike[str] | None = None, fashion: bool = False) -> TaskSpec:
    """The AAAI 2025 optical image classifier (:func:`~nevergrad_zonp.tasks.onn.onn_classifier_task`).

    On the embedded digits by default, or on the MNIST (FashionMNIST if ``fashion``) idx files
    in ``path`` (the task is then named ``onn16_mnist``, ``onn16_fashion_mnist``).  10 epochs
    of backprop pretraining on the ideal model (the paper's ``epochs_bp``), then ZO on the
    chip at Q = 10 for 15,000 queries, mini-batches of 100; ZONP refreshes a block's Fisher
    at its first use and every 300 uses.  ``K = 16``: 752 parameters, 2 blocks of 376 (6
    refreshes of 377 queries, 15 % of the budget); ``K = 32``: 3,040 parameters, 6 blocks of
    506 or 507, of which 5 get a Fisher at their first use (2,538 queries, 17 % of the
    budget; the sixth's would take the Fisher queries past ZONP's 20 % cap, so that block
    keeps isotropic directions).
    """
    kwargs: dict[str, tp.Any] = {"k": k} if path is None else {"k": k, "path": str(path), "fashion": fashion}
    return TaskSpec(
        name=f"onn{k}{data_suffix(path, fashion)}",
        build=onn_classifier_task,
        kwargs=kwargs,
        pretrain_epochs=10,
        zo_settings={"fisher_period": 300, "fisher_refresh": "per_block"},
        budget=15_000,
        methods=ONN_METHODS,
    )


#: Port counts ``K`` of the ``frontier`` suite's optical image classifiers (two of the AAAI 2025 paper's three).
ONN_PORTS = (16, 32)


def frontier_suite(
    mnist: str | os.PathLike[str] | None = None, fashion_mnist: str | os.PathLike[str] | None = None
) -> Suite:
    """ZONP against the strongest alternatives: NGOpt, LPP (AAAI 2025) and HiZOO (ICLR 2025).

    The ``standard`` suite's three tasks (equalization chip, copying chip, digits CNN) with
    its settings, budgets, grids and tuning rule, NGOpt, LPP and HiZOO added to its methods,
    on the standard suite's held-out seeds 5-9 (those its stored runs reproduce with the
    current task code): put this suite in the ``standard`` suite's folder, or copy those runs
    into its own, and the runs of ZONP and the baselines are reused.  Plus the AAAI 2025
    optical image classifier (:func:`onn_task`) at ``K = 16`` and ``K = 32`` with ZONP, LPP,
    ZO-co, ZO-I and CMA-ES (new runs, the directions from the package's default stream), on
    the embedded digits and, for each folder given, on MNIST (``mnist``) and FashionMNIST
    (``fashion_mnist``) idx files, the paper's data.  NGOpt has no step size and is not
    tuned.  HiZOO runs with Adam on every task; ``HiZOOPaper`` (as published: SGD, one
    direction) on the equalization chip only.
    """
    standard = standard_suite()
    tasks = tuple(
        dataclasses.replace(
            task, methods=("ZONP", *BASELINES, *FRONTIER_METHODS, *(("HiZOOPaper",) if task.name == "equalization" else ()))
        )
        for task in standard.tasks
    )
    data = [(None, False)]
    data += [(mnist, False)] if mnist is not None else []
    data += [(fashion_mnist, True)] if fashion_mnist is not None else []
    onn = tuple(onn_task(k, path, fashion) for path, fashion in data for k in ONN_PORTS)
    return dataclasses.replace(
        standard,
        name="frontier",
        tasks=(*tasks, *onn),
        methods=("ZONP", *BASELINES, *FRONTIER_METHODS, "HiZOOPaper"),
        seeds=(5, 6, 7, 8, 9),
        seed_groups={},
    )


#: Built-in suites by name; each is a function of the local data paths it may need.
SUITES: dict[str, tp.Callable[..., Suite]] = {
    "quick": quick_suite,
    "standard": standard_suite,
    "paper": paper_suite,
    "update-rule": update_rule_suite,
    "frontier": frontier_suite,
}
