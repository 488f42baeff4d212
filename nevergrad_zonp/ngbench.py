"""The package's tasks as Nevergrad ``ExperimentFunction`` s, for Nevergrad's own benchmark.

Nevergrad's benchmark (``python -m nevergrad.benchmark``) runs every optimizer of an
experiment on its functions and draws fight matrices and convergence curves.
:class:`TaskFunction` wraps a task of :mod:`nevergrad_zonp.tasks` (the equalization chip,
the copying chip, the digits CNN, the optical image classifier): its parametrization is the
chip's (or model's) parameter vector, its function the training loss of a mini-batch, and
each call on the next mini-batch as in the comparison harness (a ZO method's queries on the
one it assigned them), and its ``evaluation_function`` (what the benchmark reports) the loss
on the whole training split.
It is also the output oracle of the task's :class:`~nevergrad_zonp.ModelAdapter`, so that
ZONP and LPP get their Fisher: Nevergrad's benchmark calls the base ``Optimizer.minimize``,
which does not attach an oracle and counts asks only, so :func:`attached` wraps a configured
optimizer of this package into one that attaches the function it is built for and stops
once the budget, ZO-NP's Fisher queries included, is spent.

The experiments themselves are registered by ``nevergrad_zonp/ngbench_experiments.py``, the
file given to ``--imports`` (docs/guides/nevergrad-benchmark.md); only that file imports
``nevergrad.benchmark``, whose own imports need the ``benchmark`` extra.
"""

from __future__ import annotations

import functools
import threading
import typing as tp
import weakref

import numpy as np
import nevergrad as ng
from nevergrad.functions import ExperimentFunction
from nevergrad.optimization import base
from nevergrad.parametrization import parameter as p

from .adapters import ModelAdapter
from .optimizers import ZerothOrderLoop
from .tasks.base import Task, pretrain
from .tasks.copying import copying_task
from .tasks.equalization import equalization_task
from .tasks.images import digits_task
from .tasks.onn import onn_classifier_task


@tp.runtime_checkable
class _Attachable(tp.Protocol):
    def attach(self, oracle: tp.Any) -> None: ...


#: name -> (task builder, its keyword arguments, backprop pretraining epochs, mini-batch size)
TASKS: tp.Dict[str, tp.Tuple[tp.Callable[..., Task], tp.Dict[str, tp.Any], int, int]] = {
    "equalization": (equalization_task, {"n_train": 2000, "n_test": 2000}, 2, 100),
    "copying": (copying_task, {"delay": 20}, 15, 100),
    "digits": (digits_task, {}, 0, 50),
    "onn16": (onn_classifier_task, {"k": 16}, 10, 100),
}
_PRETRAIN_LR = {"copying": 2e-3}


@functools.lru_cache(maxsize=8)
def _built(task: str, seed: int) -> Task:
    """The task of ``seed``, pretrained as the comparison suites do (built once per process)."""
    build, kwargs, epochs, _ = TASKS[task]
    built = build(seed=seed, **kwargs)
    if epochs:
        pretrain(built, epochs=epochs, lr=_PRETRAIN_LR.get(task, 1e-2), seed=seed)
    return built


#: TaskFunction parametrizations -> their functions, for :func:`attached` (weak: a finished run frees them)
_ORACLES: "weakref.WeakKeyDictionary[p.Parameter, TaskFunction]" = weakref.WeakKeyDictionary()


class TaskFunction(ExperimentFunction):
    """A task of this package as a Nevergrad experiment function (see the module docstring).

    Parameters
    ----------
    task: ``"equalization"``, ``"copying"``, ``"digits"`` or ``"onn16"`` (:data:`TASKS`).
    seed: the task's seed (data split, initial model, chip).
    """

    def __init__(self, task: str = "equalization", seed: int = 0) -> None:
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; known: {sorted(TASKS)}")
        built = _built(task, int(seed))
        on = "chip" if built.chip is not None else "model"
        self.adapter = ModelAdapter.from_task(built, on=on, batch_size=TASKS[task][3], seed=int(seed))
        self.task = built
        self._lock = threading.Lock()
        self._calls = 0
        parametrization = self.adapter.parametrization
        parametrization.set_name(f"{task}{seed}")
        super().__init__(self._loss, parametrization)
        _ORACLES[self.parametrization] = self
        # the output-oracle members ZONP and LPP use
        self.output = self.adapter.output
        self.assign_batch = self.adapter.assign_batch
        self.block_outputs = self.adapter.block_outputs
        self.block_losses = self.adapter.block_losses
        self.layer_spans = self.adapter.layer_spans
        self.layer_fisher = self.adapter.layer_fisher

    def _loss(self, x: np.ndarray) -> float:
        """The loss on the next mini-batch (or on the one a ZO method assigned to ``x``)."""
        with self._lock:
            key = self._calls
            self._calls += 1
        return float(self.adapter.loss_batch([x], key=key)[0])

    def evaluation_function(self, *recommendations: p.Parameter) -> float:
        """The loss of the recommendation on the whole training split (the chip keeps its programmed state)."""
        value = np.asarray(recommendations[0].value, dtype=np.float64)
        return float(self.adapter.evaluate(value, data=self.task.train)["loss"])


def task_function(parametrization: p.Parameter) -> tp.Optional[TaskFunction]:
    """The :class:`TaskFunction` whose parametrization this is, if any."""
    return _ORACLES.get(parametrization)


class Attached(base.ConfiguredOptimizer):
    """A configured optimizer that attaches the :class:`TaskFunction` of its parametrization (if any) when built."""

    def __init__(self, configured: base.ConfiguredOptimizer, name: str) -> None:
        self._configured = configured
        super().__init__(configured._OptimizerClass, {"configured": configured, "name": name}, as_config=False)
        self.set_name(name)

    def __call__(
        self, parametrization: tp.Any, budget: tp.Optional[int] = None, num_workers: int = 1
    ) -> base.Optimizer:
        optimizer = self._configured(parametrization, budget=budget, num_workers=num_workers)
        oracle = task_function(optimizer.parametrization)
        if oracle is not None and isinstance(optimizer, _Attachable):
            optimizer.attach(oracle)
        if isinstance(optimizer, ZerothOrderLoop):  # the budget counts the Fisher queries, as everywhere in this package
            optimizer.stop_at_budget()
        return optimizer


def attached(name: str) -> tp.Union[str, base.ConfiguredOptimizer]:
    """The optimizer ``name`` of Nevergrad's registry, wrapped by :class:`Attached` if it is one of this package's ZO methods."""
    configured = ng.optimizers.registry[name]
    if type(configured).__module__.startswith("nevergrad_zonp"):
        return Attached(configured, name)
    return name
