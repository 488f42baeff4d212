"""SNES / xNES (nevergrad_zonp.optimizers.nes) and the CMA-ES presets."""

from __future__ import annotations

import math
import typing as tp
import warnings

import nevergrad as ng
import numpy as np
import pytest
from nevergrad.common import errors
from nevergrad.optimization import base
from nevergrad.optimization.test_optimizerlib import check_optimizer

from nevergrad_zonp.functions import ellipsoid, rosenbrock, run_to_target, sphere
from nevergrad_zonp.optimizers import cma_presets, nes
from nevergrad_zonp.optimizers import cma_es, population_size
from nevergrad_zonp.optimizers.iterations import CLIPPED_LOSS
from nevergrad_zonp.optimizers.nes import NaturalEvolutionStrategy, rank_utilities
from nevergrad_zonp.optimizers.registration import register

NAMES = ["SNES", "XNES"]
DIM = 10




def make(name: str, init: np.ndarray, seed: int, **kwargs: tp.Any) -> base.Optimizer:
    optimizer = ng.optimizers.registry[name](ng.p.Array(init=init), **kwargs)
    optimizer.parametrization.random_state.seed(seed)
    return optimizer


def evaluations_to_target(
    optimizer: base.Optimizer, function: tp.Callable[[np.ndarray], float], target: float, budget: int
) -> int:
    """Generation by generation (ask lambda, tell lambda); evaluations until a loss <= target."""
    evaluations, _ = run_to_target(optimizer, function, target, budget)
    if evaluations is not None:
        return evaluations
    raise AssertionError(f"no loss <= {target} within {budget} evaluations (mean {optimizer.mean})")


@pytest.mark.parametrize("name", NAMES)
def test_nevergrad_check_optimizer(name: str) -> None:
    check_optimizer(ng.optimizers.registry[name], budget=300, verify_value=True)


@pytest.mark.parametrize("name", NAMES)
def test_registered_once_and_reregistration_keeps_the_entry(name: str) -> None:
    registered = ng.optimizers.registry[name]
    assert isinstance(registered, NaturalEvolutionStrategy)
    assert registered is getattr(nes, name)
    assert registered.covariance == {"SNES": "separable", "XNES": "full"}[name]
    assert register(NaturalEvolutionStrategy(covariance=registered.covariance), name) is registered


@pytest.mark.parametrize("dimension", [1, 2, 10, 100])
def test_default_constants_follow_the_paper(dimension: int) -> None:
    log_n = math.log(dimension)
    separable = NaturalEvolutionStrategy(covariance="separable")(dimension).constants
    full = NaturalEvolutionStrategy(covariance="full")(dimension).constants
    popsize = 4 + math.floor(3 * log_n)
    assert separable.popsize == full.popsize == popsize
    assert separable.eta_mu == full.eta_mu == 1.0
    assert separable.eta_sigma == pytest.approx((3 + log_n) / (5 * math.sqrt(dimension)))
    assert separable.eta_b is None
    eta_full = 3 * (3 + log_n) / (5 * dimension * math.sqrt(dimension))
    assert full.eta_sigma == full.eta_b == pytest.approx(eta_full)


def test_settings_override_defaults_and_mirrored_population_is_even() -> None:
    constants = NaturalEvolutionStrategy(covariance="full", popsize=7, eta_sigma=0.2, eta_b=0.3)(5).constants
    assert (constants.popsize, constants.eta_sigma, constants.eta_b) == (7, 0.2, 0.3)
    optimizer = NaturalEvolutionStrategy(popsize=7, mirrored=True)(5)
    assert optimizer.iteration_size == population_size(optimizer) == 8
    with pytest.raises(ValueError, match="eta_b"):
        NaturalEvolutionStrategy(covariance="separable", eta_b=0.1)
    with pytest.raises(ValueError, match="popsize"):
        NaturalEvolutionStrategy(popsize=1)


def test_rank_utilities() -> None:
    losses = np.array([3.0, 1.0, 2.0, 5.0, 4.0, 0.0, 7.0, 8.0, 9.0, 6.0])
    utilities = rank_utilities(losses)
    raw = np.maximum(0, np.log(6) - np.log(np.arange(1, 11)))
    np.testing.assert_allclose(utilities[np.argsort(losses)], raw / raw.sum() - 0.1)
    assert abs(utilities.sum()) < 1e-12
    ties = rank_utilities(np.array([0.0, CLIPPED_LOSS, CLIPPED_LOSS, CLIPPED_LOSS]))
    assert ties[1] == ties[2] == ties[3] < 0 < ties[0]
    np.testing.assert_allclose(rank_utilities(np.ones(6)), 0, atol=1e-15)


@pytest.mark.parametrize("name", NAMES)
def test_seeded_runs_are_identical(name: str) -> None:
    def recommendation(seed: int) -> np.ndarray:
        optimizer = make(name, np.ones(4), seed, budget=200)
        return optimizer.minimize(sphere).value

    np.testing.assert_array_equal(recommendation(3), recommendation(3))
    assert not np.array_equal(recommendation(3), recommendation(4))


@pytest.mark.parametrize("name", NAMES)
def test_dump_load_mid_generation_continues_the_same_trajectory(name: str, tmp_path: tp.Any) -> None:
    def run(dump_after: int | None) -> list[np.ndarray]:
        optimizer = make(name, np.ones(5), 0)
        points = []
        for step in range(120):
            if step == dump_after:
                optimizer.dump(tmp_path / "nes.pkl")
                optimizer = ng.optimizers.registry[name].load(tmp_path / "nes.pkl")
            candidate = optimizer.ask()
            optimizer.tell(candidate, rosenbrock(candidate.value))
            points.append(candidate.value)
        points.append(optimizer.recommend().value)
        return points

    dump_after = 61
    assert dump_after % make(name, np.ones(5), 0).iteration_size != 0
    np.testing.assert_array_equal(run(None), run(dump_after))


@pytest.mark.parametrize("name", NAMES)
def test_out_of_order_tells_and_stale_candidates(name: str) -> None:
    """The first lambda tells form the generation in any order; later ones are stale."""
    means = []
    for order in ("forward", "reversed"):
        optimizer = make(name, np.ones(4), 1, num_workers=3)
        size = optimizer.iteration_size
        candidates = [optimizer.ask() for _ in range(size + 2)]
        generation, stale = candidates[:size], candidates[size:]
        for candidate in generation if order == "forward" else generation[::-1]:
            optimizer.tell(candidate, sphere(candidate.value))
        mean = optimizer.mean
        assert not np.array_equal(mean, np.zeros(4))
        for candidate in stale:
            optimizer.tell(candidate, -1.0)
        np.testing.assert_array_equal(optimizer.mean, mean)
        means.append(mean)
        fresh = [optimizer.ask() for _ in range(size)]
        for candidate in fresh[:-1]:
            optimizer.tell(candidate, sphere(candidate.value))
        np.testing.assert_array_equal(optimizer.mean, mean)  # the stale tells did not count
        optimizer.tell(fresh[-1], sphere(fresh[-1].value))
        assert not np.array_equal(optimizer.mean, mean)
    np.testing.assert_allclose(means[0], means[1], rtol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_mirrored_samples_come_in_opposite_pairs(name: str) -> None:
    covariance = {"SNES": "separable", "XNES": "full"}[name]
    optimizer = NaturalEvolutionStrategy(covariance=covariance, mirrored=True)(6)
    optimizer.parametrization.random_state.seed(0)
    for _ in range(3):
        mean = optimizer.mean
        candidates = [optimizer.ask() for _ in range(optimizer.iteration_size)]
        data = np.array([c.get_standardized_data(reference=optimizer.parametrization) for c in candidates])
        np.testing.assert_allclose(data[0::2] + data[1::2] - 2 * mean, 0, atol=1e-12)
        assert not np.allclose(data[0], data[2])
        for candidate in candidates:
            optimizer.tell(candidate, sphere(candidate.value - 3))


@pytest.mark.parametrize("name", NAMES)
def test_failed_losses_rank_last_and_keep_the_search_finite(name: str) -> None:
    def fragile_sphere(x: np.ndarray) -> float:
        return float("nan") if x[0] > 1.5 else sphere(x - 1)

    optimizer = make(name, np.full(4, 2.0), 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", errors.LossTooLargeWarning)
        all_failed = [optimizer.ask() for _ in range(optimizer.iteration_size)]
        for candidate in all_failed:
            optimizer.tell(candidate, float("nan"))
        np.testing.assert_allclose(optimizer.mean, np.zeros(4), atol=1e-12)
        evaluations_to_target(optimizer, fragile_sphere, 1e-6, budget=4000)
    assert np.all(np.isfinite(optimizer.mean)) and np.all(np.isfinite(optimizer.sigma))
    assert sphere(optimizer.recommend().value - 1) < 1e-4


@pytest.mark.parametrize("name", NAMES)
def test_minus_inf_counts_as_failed_on_both_paths(name: str) -> None:
    # -inf is a broken evaluation (log of 0), not the best point: ranked last, as NaN and inf, and never recommended
    def broken(x: np.ndarray) -> float:
        return -math.inf if x[0] > 1.5 else sphere(x)

    per_candidate, fast = make(name, np.full(3, 1.0), 0), make(name, np.full(3, 1.0), 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        candidates = [per_candidate.ask() for _ in range(per_candidate.iteration_size)]
        for candidate in candidates:
            per_candidate.tell(candidate, broken(candidate.value))
        request = fast.ask_iteration()
        fast.tell_iteration(request, [broken(value) for value in request.values()])
    np.testing.assert_array_equal(per_candidate.mean, fast.mean)
    finite = [candidate.value for candidate in candidates if math.isfinite(broken(candidate.value))]
    assert 0 < len(finite) < len(candidates)
    best = min(finite, key=sphere)  # a generation with failures recommends its best finite sample
    np.testing.assert_array_equal(per_candidate.recommend().value, best)
    np.testing.assert_array_equal(fast.recommend().value, best)


def test_tell_not_asked_is_refused() -> None:
    for name in NAMES:
        optimizer = ng.optimizers.registry[name](3)
        with pytest.raises(errors.TellNotAskedNotSupportedError):
            optimizer.tell(optimizer.parametrization.spawn_child(new_value=np.ones(3)), 1.0)


def test_xnes_refuses_a_dimension_whose_matrices_do_not_fit() -> None:
    with pytest.raises(ValueError, match=r"dimension 1000 needs 48000000 bytes"):
        nes.check_full_covariance_memory(1000, available=10**6)
    assert nes.check_full_covariance_memory(1000, available=10**9) == 48_000_000
    with pytest.raises(ValueError, match="dimension 1000000 needs"):
        ng.optimizers.registry["XNES"](10**6)
    assert ng.optimizers.registry["SNES"](10**6).iteration_size == 4 + math.floor(3 * math.log(10**6))


CONVERGENCE = [
    # name, function, start, evaluations allowed (about twice those seen over seeds 0-4)
    ("SNES", sphere, np.ones(DIM), 5_000),
    ("SNES", ellipsoid, np.ones(DIM), 7_000),
    ("XNES", sphere, np.ones(DIM), 14_000),
    ("XNES", ellipsoid, np.ones(DIM), 20_000),
    ("XNES", rosenbrock, np.zeros(DIM), 25_000),
]


@pytest.mark.parametrize(("name", "function", "start", "budget"), CONVERGENCE)
def test_converges_to_1e_minus_8_in_10d(
    name: str, function: tp.Callable[[np.ndarray], float], start: np.ndarray, budget: int
) -> None:
    evaluations_to_target(make(name, start, 0), function, 1e-8, budget)


def test_snes_makes_progress_on_rosenbrock() -> None:
    """SNES cannot rotate its search distribution: it only creeps along Rosenbrock's valley."""
    optimizer = make("SNES", np.zeros(DIM), 0)
    evaluations_to_target(optimizer, rosenbrock, 7.0, budget=6_000)


@pytest.mark.parametrize("diagonal", [False, True])
def test_cma_presets_are_plain_cma_es_with_population_q_plus_1(diagonal: bool) -> None:
    configured = cma_es(9, sigma0=0.5, diagonal=diagonal)
    assert type(configured) is ng.optimizers.ParametrizedCMA
    config = configured.config()
    assert config["popsize"] == 10 and config["scale"] == 0.5 and config["diagonal"] is diagonal
    assert not (config["elitist"] or config["high_speed"] or config["fcmaes"] or config["random_init"])
    optimizer = configured(DIM)
    assert population_size(optimizer) == 10
    assert optimizer.es.popsize == 10 and optimizer.es.sigma == 0.5
    assert optimizer.es.opts["CMA_diagonal"] is diagonal
    assert ("diagonal" if diagonal else "full") in configured.name


def test_cma_preset_recommends_the_mean_and_keeps_it_across_a_restart() -> None:
    def run(recommendation: str):
        optimizer = cma_es(9, sigma0=0.5, recommendation=recommendation)(DIM, budget=2_000)
        optimizer.parametrization.random_state.seed(0)
        noise = np.random.RandomState(1)
        for _ in range(30):
            candidates = [optimizer.ask() for _ in range(10)]
            for candidate in candidates:
                optimizer.tell(candidate, sphere(candidate.value - 1) + noise.rand())
        return optimizer

    optimizer = run("mean")
    np.testing.assert_array_equal(optimizer.recommend().value, optimizer.es.mean)
    mean = optimizer.recommend().value
    assert not np.array_equal(mean, optimizer.es.result.xbest)
    optimizer._es = None  # what Nevergrad does when a cma stopping test fires: a new strategy at the origin
    candidates = [optimizer.ask() for _ in range(5)]
    assert np.array_equal(optimizer.es.mean, np.zeros(DIM))
    np.testing.assert_array_equal(optimizer.recommend().value, mean)
    for candidate in candidates + [optimizer.ask() for _ in range(5)]:
        optimizer.tell(candidate, sphere(candidate.value - 1))
    np.testing.assert_array_equal(optimizer.recommend().value, optimizer.es.mean)  # the new strategy's, once it moved
    best = run("best")
    np.testing.assert_array_equal(best.recommend().value, best.es.result.xbest)
    np.testing.assert_array_equal(cma_es(4)(DIM).recommend().value, np.zeros(DIM))
    with pytest.raises(ValueError, match="recommendation"):
        cma_es(4, recommendation="median")


def test_population_size() -> None:
    assert population_size(ng.optimizers.registry["XNES"](DIM)) == 4 + math.floor(3 * math.log(DIM))
    assert population_size(cma_es(4)(DIM, num_workers=8)) == 8
    with pytest.raises(TypeError, match="population size"):
        population_size(ng.optimizers.OnePlusOne(DIM))
    with pytest.raises(ValueError):
        cma_presets.cma_es(0)
