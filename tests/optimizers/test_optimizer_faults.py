"""Faults and mistakes on the optimizer side: an objective that raises, bad settings, bad tells, a wrong start.

- An objective that raises once (a chip's I/O error) reaches the caller, and the same call
  made again goes on where the run stopped and spends the rest of the budget, for every
  optimizer of the package, on the fast path, the per-candidate path and Nevergrad's
  ``minimize``; on a deterministic objective the run ends where a run without the fault does.
- Settings of the wrong type or value are refused at construction with their name.
- A loss of several numbers told to these single-objective optimizers is refused at once.
- An optimizer that would not start where an adapter's parameters do is refused.
"""

import re
import warnings

import nevergrad as ng
import numpy as np
import pytest

import nevergrad_zonp
from nevergrad_zonp import LearnedZO, ModelAdapter, ZerothOrder, minimize_vectorized, uses_fast_path
from nevergrad_zonp.optimizers import NaturalEvolutionStrategy, cma_es
from nevergrad_zonp.vectorized import queries_spent

from support import classification_data, small_classifier

CONFIGURED = {name: ng.optimizers.registry[name] for name in nevergrad_zonp.NAMES}
CONFIGURED["CMA-ES(full)"] = cma_es(4)
CONFIGURED["CMA-ES(diagonal)"] = cma_es(4, diagonal=True)
CONFIGURED["CMA-ES(best)"] = cma_es(4, recommendation="best")
NAMES = sorted(CONFIGURED)
FAST_NAMES = [name for name in NAMES if name != "CMA-ES(best)"]  # the best point needs every candidate told
DIMENSION, BUDGET = 2, 200
START = np.zeros(DIMENSION)


def square(x) -> float:
    return float(np.sum((np.asarray(x) - 0.5) ** 2))


def squares(values) -> list:
    return [square(x) for x in values]


class FailsOnce:
    """``function``, except that call number ``at`` raises ``OSError`` (a chip's I/O error) before evaluating."""

    def __init__(self, function, at: int = 3) -> None:
        self.function, self.at, self.calls = function, at, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.at:
            raise OSError("chip not answering")
        return self.function(*args, **kwargs)


def make(name: str, budget: int = BUDGET):
    optimizer = CONFIGURED[name](parametrization=DIMENSION, budget=budget)
    optimizer.parametrization.random_state.seed(0)
    return optimizer


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# ----- an objective that raises once -------------------------------------------------------
@pytest.mark.parametrize(
    "name, fast", [(name, True) for name in FAST_NAMES] + [(name, False) for name in NAMES]
)
def test_minimize_vectorized_called_again_after_the_objective_raised_finishes_the_run(name, fast):
    expected = minimize_vectorized(make(name), squares, fast_path=fast).value
    optimizer = make(name)
    objective = FailsOnce(squares)
    with pytest.raises(OSError, match="chip not answering"):
        minimize_vectorized(optimizer, objective, fast_path=fast)
    value = minimize_vectorized(optimizer, objective, fast_path=fast).value
    assert queries_spent(optimizer) == BUDGET and optimizer.num_tell == optimizer.num_ask
    np.testing.assert_array_equal(value, expected)  # the interrupted group was evaluated again, nothing lost
    assert np.all(np.isfinite(value)) and square(value) < square(START)
    if fast:
        assert optimizer.open_request is None


@pytest.mark.parametrize("name", FAST_NAMES)
def test_an_untold_request_is_asked_again_and_counted_once(name):
    optimizer = make(name)
    request = optimizer.ask_iteration()
    asked = optimizer.num_ask
    assert optimizer.open_request is request
    assert optimizer.ask_iteration() is request and optimizer.num_ask == asked
    optimizer.tell_iteration(request, squares(request.values()))
    assert optimizer.open_request is None and optimizer.num_tell == asked
    assert optimizer.ask_iteration().index != request.index


@pytest.mark.parametrize("name", FAST_NAMES)
def test_the_last_request_of_the_budget_is_still_told_by_the_next_call(name):
    counted = FailsOnce(squares, at=0)
    minimize_vectorized(make(name), counted, fast_path=True)
    optimizer = make(name)
    objective = FailsOnce(squares, at=counted.calls)  # the budget's last request
    with pytest.raises(OSError):
        minimize_vectorized(optimizer, objective, fast_path=True)
    assert queries_spent(optimizer) == optimizer.budget and optimizer.open_request is not None
    minimize_vectorized(optimizer, objective, fast_path=True)
    assert optimizer.open_request is None and optimizer.num_tell == optimizer.num_ask == optimizer.budget


@pytest.mark.parametrize("name", NAMES)
def test_nevergrads_minimize_called_again_after_the_objective_raised_finishes_the_run(name):
    expected = make(name).minimize(square).value
    optimizer = make(name)
    objective = FailsOnce(square)
    with pytest.raises(OSError):
        optimizer.minimize(objective)
    value = optimizer.minimize(objective).value
    assert queries_spent(optimizer) == BUDGET and optimizer.num_tell == optimizer.num_ask
    np.testing.assert_array_equal(value, expected)
    assert square(value) < square(START)


def test_a_tell_callback_that_raises_loses_no_candidate_on_the_per_candidate_path():
    expected = minimize_vectorized(make("ZOI"), squares).value
    optimizer = make("ZOI")
    optimizer.register_callback("tell", FailsOnce(lambda *args: None, at=5))
    assert not uses_fast_path(optimizer, squares)
    with pytest.raises(OSError):
        minimize_vectorized(optimizer, squares)
    np.testing.assert_array_equal(minimize_vectorized(optimizer, squares).value, expected)
    assert optimizer.num_tell == optimizer.num_ask == BUDGET


def classifier_adapter() -> ModelAdapter:
    return ModelAdapter(small_classifier(0), classification_data(), output="categorical", batch_size=20)


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("method, at", [("block_outputs", 2), ("block_outputs", 3), ("evaluation", 2), ("evaluation", 7)])
def test_zonp_on_a_model_adapter_goes_on_after_a_failed_query_or_fisher_estimate(method, at, fast):
    def run(fails: bool):
        adapter = classifier_adapter()
        optimizer = ZerothOrder(num_directions=4, fisher_period=3, fisher_refresh="sampled")(
            parametrization=adapter.parametrization, budget=300
        )
        optimizer.parametrization.random_state.seed(0)
        if not fails:
            return minimize_vectorized(optimizer, adapter, fast_path=fast).value, adapter
        name = method if method == "block_outputs" else ("block_losses" if fast else "loss_batch")
        setattr(adapter, name, FailsOnce(getattr(adapter, name), at=at))
        with pytest.raises(OSError):
            minimize_vectorized(optimizer, adapter, fast_path=fast)
        value = minimize_vectorized(optimizer, adapter, fast_path=fast).value
        assert optimizer.num_queries == 300 and optimizer.num_tell == optimizer.num_ask
        assert optimizer.num_fisher_updates > 0
        return value, adapter

    (expected, clean), (value, faulty) = run(False), run(True)
    np.testing.assert_array_equal(value, expected)  # a failed Fisher estimate is retried too
    assert faulty.queries == clean.queries == 300  # the failing call raised before evaluating anything
    assert clean.evaluate(value)["loss"] < clean.evaluate()["loss"]


# ----- settings refused by name ---------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "settings, message",
    [
        ({"budget": -5}, "budget must be a positive integer or None, got -5"),
        ({"budget": 0}, "budget must be a positive integer or None, got 0"),
        ({"budget": 2.5}, "budget must be a positive integer or None, got 2.5"),
        ({"budget": True}, "budget must be a positive integer or None, got True"),
        ({"budget": 100, "num_workers": 0}, "num_workers must be a positive integer, got 0"),
        ({"budget": 100, "num_workers": 1.5}, "num_workers must be a positive integer, got 1.5"),
        ({"budget": 100, "num_workers": True}, "num_workers must be a positive integer, got True"),
    ],
)
def test_a_bad_budget_or_num_workers_is_refused_at_construction(name, settings, message):
    with pytest.raises(ValueError, match=message):
        CONFIGURED[name](parametrization=DIMENSION, **settings)


def test_an_integral_budget_is_taken_as_an_integer():
    optimizer = CONFIGURED["ZOI"](parametrization=DIMENSION, budget=1e3)
    assert optimizer.budget == 1000 and type(optimizer.budget) is int


def test_minimize_vectorized_refuses_any_optimizer_whose_budget_is_not_a_positive_integer():
    for budget in (-5, 0, 2.5):
        with pytest.raises(ValueError, match=f"the optimizer's budget must be a positive integer, got {budget}"):
            minimize_vectorized(ng.optimizers.registry["OnePlusOne"](parametrization=DIMENSION, budget=budget), squares)


@pytest.mark.parametrize(
    "configure, settings, message",
    [
        (ZerothOrder, {"normalize": "no"}, "normalize must be True or False, got 'no'"),
        (ZerothOrder, {"num_directions": True}, "num_directions must be a positive integer, got True"),
        (ZerothOrder, {"num_directions": 2.5}, "num_directions must be a positive integer, got 2.5"),
        (ZerothOrder, {"max_block_size": False}, "max_block_size must be a positive integer, got False"),
        (ZerothOrder, {"fisher_period": "100"}, "fisher_period must be a positive integer, got '100'"),
        (ZerothOrder, {"fisher_rank": True}, r"fisher_rank must be a positive integer or None, got True"),
        (ZerothOrder, {"lr": True}, r"lr must be positive and finite or None, got True"),
        (ZerothOrder, {"mu": float("inf")}, "mu must be positive and finite, got inf"),
        (ZerothOrder, {"rho": "0.1"}, "rho must be positive and finite, got '0.1'"),
        (ZerothOrder, {"fd_step": -1e-3}, "fd_step must be positive and finite, got -0.001"),
        (ZerothOrder, {"smoothing": True}, r"smoothing \(alpha\) must be in \(0, 1\], got True"),
        (ZerothOrder, {"smoothing": "0.5"}, r"smoothing \(alpha\) must be in \(0, 1\], got '0.5'"),
        (ZerothOrder, {"sampler": 1}, "sampler must be one of .*, got 1"),
        (ZerothOrder, {"block_selection": True}, "block_selection must be one of .*, got True"),
        (ZerothOrder, {"lr_schedule": "linear"}, "lr_schedule must be one of .* or None, got 'linear'"),
        (ZerothOrder, {"fisher_refresh": None}, "fisher_refresh must be one of .*, got None"),
        (ZerothOrder, {"fisher_storage": "int8"}, "fisher_storage must be one of .*, got 'int8'"),
        (ZerothOrder, {"update": "adamw"}, "update must be one of .*, got 'adamw'"),
        (ZerothOrder, {"direction_stream": None}, "direction_stream must be one of .*, got None"),
        (NaturalEvolutionStrategy, {"covariance": "diagonal"}, "covariance must be one of .*, got 'diagonal'"),
        (NaturalEvolutionStrategy, {"popsize": 2.5}, "popsize must be an integer >= 2 or None, got 2.5"),
        (NaturalEvolutionStrategy, {"popsize": True}, "popsize must be an integer >= 2 or None, got True"),
        (NaturalEvolutionStrategy, {"eta_mu": "1"}, "eta_mu must be positive and finite, got '1'"),
        (NaturalEvolutionStrategy, {"eta_sigma": float("inf")}, "eta_sigma must be positive and finite or None, got inf"),
        (NaturalEvolutionStrategy, {"covariance": "full", "eta_b": 0.0}, "eta_b must be positive and finite or None, got 0.0"),
        (NaturalEvolutionStrategy, {"sigma0": True}, "sigma0 must be positive and finite, got True"),
        (NaturalEvolutionStrategy, {"mirrored": "yes"}, "mirrored must be True or False, got 'yes'"),
        (cma_es, {"num_directions": True}, r"num_directions \(Q\) must be a positive integer, got True"),
        (cma_es, {"num_directions": 2.5}, r"num_directions \(Q\) must be a positive integer, got 2.5"),
        (cma_es, {"num_directions": 4, "sigma0": float("nan")}, "sigma0 must be positive and finite, got nan"),
        (cma_es, {"num_directions": 4, "diagonal": "yes"}, "diagonal must be True or False, got 'yes'"),
        (cma_es, {"num_directions": 4, "recommendation": None}, "recommendation must be one of .*, got None"),
        (LearnedZO, {"num_directions": True}, "num_directions must be a positive integer, got True"),
        (LearnedZO, {"max_block_size": 2.5}, "max_block_size must be a positive integer, got 2.5"),
        (LearnedZO, {"query_probability": True}, r"query_probability must be in \[0, 1\], got True"),
        (LearnedZO, {"mu": True}, "mu must be positive and finite, got True"),
        (LearnedZO, {"update_scale": float("inf")}, "update_scale must be positive and finite, got inf"),
        (LearnedZO, {"block_selection": 0}, "block_selection must be one of .*, got 0"),
    ],
)
def test_an_option_of_the_wrong_type_or_value_is_refused_by_name(configure, settings, message):
    with pytest.raises(ValueError, match=message):
        configure(**settings)


def test_options_of_the_right_type_are_kept():
    configured = ZerothOrder(num_directions=np.int64(4), normalize=np.bool_(False), smoothing=1, lr=0.5)
    assert configured.num_directions == 4 and configured.normalize is False and configured.smoothing == 1
    assert NaturalEvolutionStrategy(popsize=6.0).popsize == 6
    assert LearnedZO(query_probability=0).query_probability == 0.0


# ----- one loss per tell ---------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_a_loss_of_several_numbers_is_refused_at_once(name):
    optimizer = make(name)
    candidate = optimizer.ask()
    for loss in ([1.0, 2.0], np.array([1.0, 2.0]), (1.0, 2.0, 3.0), np.ones((2, 2)), []):
        single = rf"{re.escape(optimizer.name)} is a single-objective optimizer: .*got {np.size(loss)} numbers"
        with pytest.raises(ValueError, match=single):
            optimizer.tell(candidate, loss)
    assert optimizer.num_tell == 0
    for loss in (np.array([1.0], dtype=np.float32), [2.0], np.float32(3.0), np.array(4.0)):
        optimizer.tell(candidate, loss)
        candidate = optimizer.ask()
    assert optimizer.num_tell == 4 and optimizer.num_objectives == 1


@pytest.mark.parametrize("name", FAST_NAMES)
def test_tell_iteration_with_losses_of_the_wrong_shape_names_both_shapes(name):
    optimizer = make(name)
    request = optimizer.ask_iteration()
    with pytest.raises(ValueError, match=rf"shape \(2, 1\).*expected shape \({request.size},\)"):
        optimizer.tell_iteration(request, np.zeros((2, 1)))
    optimizer.tell_iteration(request, squares(request.values()))  # still open after the refusal
    assert optimizer.num_tell == request.size


def test_minimize_vectorized_names_both_shapes_of_a_bad_objective():
    for fast in (True, False):
        with pytest.raises(ValueError, match=r"losses of shape \(3,\) for 11 candidates: expected shape \(11,\)"):
            minimize_vectorized(make("ZOI"), lambda values: [0.0, 0.0, 0.0], fast_path=fast)


# ----- the start: the adapter's parameters ------------------------------------------------------
MISMATCH = r"starts at a vector of norm 0 .*dimension 43.*parametrization=adapter\.parametrization"


def test_a_zo_optimizer_built_on_the_dimension_alone_is_refused_by_every_way_of_attaching_an_adapter():
    adapter = classifier_adapter()
    assert adapter.dimension == 43 and np.linalg.norm(adapter.theta0) > 0
    for attach in (
        lambda optimizer: minimize_vectorized(optimizer, adapter),
        lambda optimizer: minimize_vectorized(optimizer, adapter, fast_path=False),
        lambda optimizer: optimizer.minimize(adapter),
        lambda optimizer: optimizer.attach(adapter),
    ):
        optimizer = ng.optimizers.registry["ZONP"](parametrization=adapter.dimension, budget=100)
        with pytest.raises(ValueError, match=MISMATCH):
            attach(optimizer)
        assert optimizer.num_ask == 0 and adapter.queries == 0
    ng.optimizers.registry["ZONP"](parametrization=adapter.parametrization, budget=100).attach(adapter)
    shifted = ng.p.Array(init=adapter.theta0 + 0.1)
    with pytest.raises(ValueError, match="largest difference 0.1"):
        ng.optimizers.registry["ZOI"](parametrization=shifted, budget=100).attach(adapter)


@pytest.mark.parametrize("name", ["SNES", "XNES", "CMA-ES(diagonal)", "ZOL2L"])
def test_minimize_vectorized_refuses_any_optimizer_that_would_not_start_at_the_adapters_parameters(name):
    adapter = classifier_adapter()
    with pytest.raises(ValueError, match=MISMATCH):
        minimize_vectorized(CONFIGURED[name](parametrization=adapter.dimension, budget=100), adapter)
    with pytest.raises(ValueError, match=MISMATCH):
        minimize_vectorized(ng.optimizers.registry["OnePlusOne"](parametrization=adapter.dimension, budget=100), adapter)
    recommendation = minimize_vectorized(CONFIGURED[name](parametrization=adapter.parametrization, budget=100), adapter)
    assert adapter.queries == 100 and np.all(np.isfinite(recommendation.value))
