"""nevergrad_zonp.ngbench: the package's tasks as Nevergrad ExperimentFunctions, and ``attached``.

Only ``nevergrad_zonp.ngbench`` is tested here: ``ngbench_experiments`` imports
``nevergrad.benchmark``, which needs the ``benchmark`` extra (torchvision).
The equalization chip (564 parameters, pretrained 2 epochs) is built once per process
(``ngbench._built``); the optimizer runs use small budgets.
"""

import numpy as np
import pytest

import nevergrad as ng
from nevergrad.functions import ExperimentFunction
from nevergrad.optimization import base

from nevergrad_zonp import ngbench
from nevergrad_zonp.optimizers import ZerothOrderLoop

#: n_b + 1 queries per Fisher refresh of a block of the equalization chip
FISHER_REFRESH_COST = 283
#: the budget of the ZONP runs: the first iteration refreshes (600 - 283 >= 283 are left after it)
ZONP_BUDGET = 600


@pytest.fixture(scope="module")
def function():
    return ngbench.TaskFunction("equalization", 0)


def _value(f):
    return np.asarray(f.parametrization.value, dtype=np.float64)


# ----- the experiment function --------------------------------------------------------------


def test_descriptors_name_task_and_seed(function):
    assert isinstance(function, ExperimentFunction)
    assert function.descriptors["task"] == "equalization"
    assert function.descriptors["seed"] == 0
    assert function.descriptors["function_class"] == "TaskFunction"
    assert function.dimension == 564
    assert function.parametrization.name == "equalization0"


def test_parametrization_maps_back_to_its_function(function):
    assert ngbench.task_function(function.parametrization) is function
    assert ngbench.task_function(ng.p.Array(shape=(3,))) is None


def test_copy_follows_the_experiment_function_contract(function):
    copied = function.copy()  # raises ExperimentFunctionCopyError if not equivalent
    assert copied is not function
    assert isinstance(copied, ngbench.TaskFunction)
    assert copied.equivalent_to(function)
    assert copied.descriptors == function.descriptors
    assert copied.parametrization is not function.parametrization
    assert ngbench.task_function(copied.parametrization) is copied
    assert ngbench.task_function(function.parametrization) is function
    # the copy is a working function on the same task
    assert copied.task is function.task
    assert np.isfinite(copied(_value(copied)))


def test_unknown_task_names_the_known_ones():
    with pytest.raises(ValueError) as info:
        ngbench.TaskFunction("no-such-task", 0)
    message = str(info.value)
    assert "no-such-task" in message
    for name in ngbench.TASKS:
        assert name in message


def test_successive_calls_use_successive_mini_batches():
    f = ngbench.TaskFunction("equalization", 0)  # a fresh call counter (the chip is cached)
    x = _value(f)
    first, second = f(x), f(x)
    assert np.isfinite(first) and np.isfinite(second)
    assert first != second  # same x, different batches
    # call k is on the batch of key k
    expected = f.adapter.loss_batch([x], key=0)[0], f.adapter.loss_batch([x], key=1)[0]
    assert first == pytest.approx(expected[0], rel=1e-12)
    assert second == pytest.approx(expected[1], rel=1e-12)
    third = f(x)
    assert third == pytest.approx(f.adapter.loss_batch([x], key=2)[0], rel=1e-12)


def test_evaluation_function_is_the_full_training_loss(function):
    parameter = function.parametrization.spawn_child()
    value = _value(function) + 0.01 * np.random.default_rng(0).standard_normal(function.dimension)
    parameter.value = value
    expected = function.adapter.evaluate(value, data=function.task.train)["loss"]
    got = function.evaluation_function(parameter)
    assert isinstance(got, float)
    assert got == pytest.approx(expected, rel=1e-12)
    assert function.evaluation_function(parameter) == got  # deterministic: no mini-batch
    # it is not the loss at the initial value
    initial = function.adapter.evaluate(_value(function), data=function.task.train)["loss"]
    assert got != initial


# ----- attached ---------------------------------------------------------------------------


def test_attached_zonp_attaches_and_spends_exactly_the_budget(function):
    configured = ngbench.attached("ZONP")
    assert isinstance(configured, ngbench.Attached)
    assert isinstance(configured, base.ConfiguredOptimizer)
    opt = configured(function.parametrization, budget=ZONP_BUDGET)
    assert isinstance(opt, ZerothOrderLoop)
    assert opt._oracle is function
    base.Optimizer.minimize(opt, function)  # as Nevergrad's benchmark drives it
    assert opt.num_fisher_queries > 0
    assert opt.num_fisher_queries % FISHER_REFRESH_COST == 0
    assert opt.num_queries == ZONP_BUDGET
    assert opt.num_ask == ZONP_BUDGET - opt.num_fisher_queries


def test_without_stop_at_budget_base_minimize_overspends(function):
    """Why ``Attached`` exists: base minimize counts asks only, the Fisher queries come on top."""
    opt = ng.optimizers.registry["ZONP"](function.parametrization, budget=ZONP_BUDGET)
    assert opt._oracle is None
    opt.attach(function)
    base.Optimizer.minimize(opt, function)
    assert opt.num_ask == ZONP_BUDGET
    assert opt.num_fisher_queries > 0
    assert opt.num_queries > ZONP_BUDGET


def test_attached_on_a_plain_parametrization_attaches_nothing():
    opt = ngbench.attached("ZONP")(ng.p.Array(shape=(5,)), budget=50)
    assert isinstance(opt, ZerothOrderLoop)
    assert opt._oracle is None


def test_attached_leaves_nevergrad_optimizers_as_names():
    assert ngbench.attached("NGOpt") == "NGOpt"
    assert ngbench.attached("CMA") == "CMA"
    assert isinstance(ngbench.attached("OnePlusOne"), str)


def test_attached_lpp_refreshes_its_layered_curvature(function):
    configured = ngbench.attached("LPP")
    assert isinstance(configured, ngbench.Attached)
    opt = configured(function.parametrization, budget=300)
    assert opt._oracle is function
    base.Optimizer.minimize(opt, function)
    assert opt._parts.curvature.num_refreshes > 0
    # LPP's layer Fishers are taken on the ideal model: they cost no query of the chip
    assert opt.num_fisher_queries == 0
    assert opt.num_queries == opt.num_ask == 300
