"""Mixed parametrizations (continuous parts beside deterministic choices and integer casts).

A Gaussian direction that crosses a discrete threshold jumps, and the jump divided by
``mu`` swamps every coordinate of the estimate: the ZO optimizers keep such coordinates
out of their Gaussian directions, move them by probes, and on a deterministic objective
recommend the best base point they evaluated.
"""

import warnings

import nevergrad as ng
import numpy as np
import pytest

import nevergrad_zonp  # noqa: F401  (registers the optimizers)
from nevergrad_zonp.optimizers.iterations import continuous_coordinates

PENALTY = {"relu": 0.5, "tanh": 0.0, "gelu": 0.2}
ZO_NAMES = ["ZONP", "ZONPPaper", "ZOI", "ZOco", "ZOSGD", "ZOSignSGD", "ZOL2L"]


def sweep_loss(x: float, lr: float, act: str = "tanh") -> float:
    return (x - 1.3) ** 2 + (np.log10(lr) + 2) ** 2 + PENALTY[act]


def sweep(seed: int, choice: bool = True, deterministic: bool = True) -> ng.p.Instrumentation:
    """A hyper-parameter sweep as Nevergrad users write them (its start: x = 0, lr = 1e-2, relu)."""
    kwargs = {"x": ng.p.Scalar(lower=-5, upper=5), "lr": ng.p.Log(lower=1e-4, upper=1.0)}
    if choice:
        kwargs["act"] = ng.p.Choice(["relu", "tanh", "gelu"], deterministic=True)
    parametrization = ng.p.Instrumentation(**kwargs)
    parametrization.random_state = np.random.RandomState(seed)
    parametrization.function.deterministic = deterministic
    return parametrization


def test_continuous_coordinates_are_told_apart_from_choices_transitions_and_integer_casts():
    parametrization = ng.p.Instrumentation(
        ng.p.Array(shape=(2,)),
        a=ng.p.Choice(["u", "v", "w"], deterministic=True),
        b=ng.p.Scalar(lower=0, upper=10).set_integer_casting(),
        c=ng.p.TransitionChoice([1, 2, 3]),
        d=ng.p.Log(lower=1e-3, upper=1.0),
    )
    mask = continuous_coordinates(parametrization)
    assert mask is not None and mask.shape == (parametrization.dimension,)
    assert int(mask.sum()) == 3  # the array's two coordinates and the log scalar; 5 discrete ones
    data = np.zeros(parametrization.dimension)
    data[~mask] = 0.37  # moving only the discrete coordinates leaves the continuous values alone
    moved = parametrization.spawn_child().set_standardized_data(data)
    start = parametrization.spawn_child().set_standardized_data(np.zeros(parametrization.dimension))
    np.testing.assert_array_equal(moved.args[0], start.args[0])
    assert moved.kwargs["d"] == start.kwargs["d"]
    assert continuous_coordinates(ng.p.Array(shape=(4,))) is None  # plain arrays: nothing changes


@pytest.mark.parametrize("name", ZO_NAMES)
def test_the_zo_family_ends_below_its_start_on_a_mixed_sweep_and_finds_the_best_choice(name):
    for seed in (0, 1):
        parametrization = sweep(seed)
        start = sweep_loss(**parametrization.value[1])
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no warning about the discrete parts ...
            warnings.simplefilter("ignore", nevergrad_zonp.NaturalPerturbationsInactiveWarning)  # (a float objective)
            optimizer = ng.optimizers.registry[name](parametrization=parametrization, budget=400)
            recommendation = optimizer.minimize(lambda **kwargs: sweep_loss(**kwargs))
        final = sweep_loss(**recommendation.kwargs)
        assert final <= start
        assert recommendation.kwargs["act"] == "tanh", (name, seed, recommendation.kwargs)
        assert final < 0.1, (name, seed, final)


@pytest.mark.parametrize("name", ["ZONP", "ZOI"])
def test_gaussian_directions_leave_the_discrete_coordinates_to_the_probe(name):
    parametrization = sweep(0)
    optimizer = ng.optimizers.registry[name](parametrization=parametrization, budget=200)
    mask = optimizer._probes.continuous
    assert mask is not None and not mask.all()
    for _ in range(5):
        candidates = [optimizer.ask() for _ in range(optimizer.iteration_size)]
        base = candidates[0].get_standardized_data(reference=parametrization)
        moves = [c.get_standardized_data(reference=parametrization) - base for c in candidates[1:]]
        for move in moves[:-1]:  # Gaussian directions: continuous coordinates only
            assert np.all(move[~mask] == 0) and np.any(move[mask] != 0)
        probe = moves[-1]  # the probe: one discrete coordinate
        assert np.all(probe[mask] == 0) and np.count_nonzero(probe) == 1
        for candidate in candidates:
            optimizer.tell(candidate, sweep_loss(**candidate.kwargs))


def test_the_recommendation_is_the_best_base_point_on_a_deterministic_objective_and_the_iterate_otherwise():
    losses = {}
    for deterministic in (True, False):
        optimizer = ng.optimizers.registry["ZOI"](parametrization=sweep(1, choice=False, deterministic=deterministic),
                                                  budget=300)
        bases = []
        for _ in range(optimizer.budget):
            candidate = optimizer.ask()
            loss = sweep_loss(**candidate.kwargs)
            if optimizer._iterations[optimizer._num_iterations - 1].asked == 1:
                bases.append(loss)
            optimizer.tell(candidate, loss)
        recommended = optimizer.provide_recommendation()
        losses[deterministic] = sweep_loss(**recommended.kwargs)
        if deterministic:
            assert losses[deterministic] == min(bases)
        else:
            np.testing.assert_allclose(  # (through the parametrization's transforms and back)
                recommended.get_standardized_data(reference=optimizer.parametrization), optimizer._recovery.anchor, rtol=1e-12
            )
    assert losses[True] <= losses[False]


def test_a_plain_array_problem_keeps_dense_gaussian_directions_and_no_probe():
    optimizer = ng.optimizers.registry["ZONP"](parametrization=5, budget=50)
    assert optimizer._probes is None
    candidates = [optimizer.ask() for _ in range(optimizer.iteration_size)]
    moves = [candidate.value - candidates[0].value for candidate in candidates[1:]]
    assert all(np.all(move != 0) for move in moves)  # the last one too: no probe
    assert optimizer._iterations[0].probe is None
