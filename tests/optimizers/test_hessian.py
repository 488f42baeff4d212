"""HiZOO (ICLR 2025): the diagonal curvature sampler, its update, and the configuration in the ZO loop."""

import math
import pickle
import warnings

import nevergrad as ng
import numpy as np
import pytest

import nevergrad_zonp  # noqa: F401  (registers the optimizers)
from nevergrad_zonp import HessianInformed
from nevergrad_zonp.optimizers.estimator import BlockAdam, BlockSGD
from nevergrad_zonp.optimizers.hessian import (
    CURVATURE_FLOOR,
    DEFAULT_HESSIAN_SMOOTHING,
    HIZOO_PAPER,
    HessianInformedDifference,
    HessianSampler,
)
from nevergrad_zonp.optimizers.zeroth_order import InvalidQueryWarning


def sampler(bounds=(0, 3, 6), smoothing=0.5, **kwargs) -> HessianSampler:
    return HessianSampler(np.array(bounds), smoothing, **kwargs)


def seeded(init: np.ndarray, seed: int = 0) -> ng.p.Array:
    parametrization = ng.p.Array(init=np.asarray(init, dtype=float))
    parametrization.random_state = np.random.RandomState(seed)
    return parametrization


def ill_conditioned(n: int = 20, condition: float = 100.0):
    scales = np.logspace(0, math.log10(condition), n)
    return scales, (lambda x: float(np.sum(scales * np.asarray(x) ** 2)))


# ----- the sampler ---------------------------------------------------------------------
def test_curvature_starts_at_one_for_every_coordinate():
    s = sampler()
    np.testing.assert_array_equal(s.curvature, np.ones(6))
    assert s.num_updates == 0
    np.testing.assert_array_equal(s.covariance(1, 3), np.eye(3))


def test_update_follows_the_smoothed_diagonal_hessian_formula():
    s = sampler(smoothing=0.3)
    s.curvature[:] = [1.0, 2.0, 0.5, 1.0, 4.0, 3.0]
    before = s.curvature.copy()
    noise = np.array([[1.0, -2.0, 0.5], [0.3, 1.0, -1.5]])
    base, plus, minus, step = 1.0, np.array([1.5, 0.9]), np.array([1.1, 1.3]), 0.1
    assert s.update(3, 6, base, plus, minus, noise, step)
    # by hand: |l+ + l- - 2 l0| / (2 h^2) per direction: |0.6| / 0.02 = 30 and |0.2| / 0.02 = 10
    d = before[3:6]
    estimate = d * (30.0 * noise[0] ** 2 + 10.0 * noise[1] ** 2) / 2
    np.testing.assert_allclose(s.curvature[3:6], 0.7 * d + 0.3 * estimate, rtol=1e-12)
    np.testing.assert_array_equal(s.curvature[:3], before[:3])  # the other block is untouched
    assert s.num_updates == 1
    # one direction: D <- (1 - a) D + a |l+ + l- - 2 l0| / (2 h^2) D z^2
    s = sampler(smoothing=0.1)
    z = np.array([[2.0, 0.0, -1.0]])
    assert s.update(0, 3, 0.0, np.array([0.02]), np.array([0.04]), z, 0.1)
    np.testing.assert_allclose(s.curvature[:3], 0.9 + 0.1 * 3.0 * z[0] ** 2, rtol=1e-12)


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_a_non_finite_estimate_leaves_the_curvature_unchanged(bad):
    s = sampler()
    s.curvature[:] = np.arange(1.0, 7.0)
    before = s.curvature.copy()
    assert not s.update(0, 3, 0.0, np.array([bad, 1.0]), np.array([1.0, 1.0]), np.ones((2, 3)), 0.1)
    np.testing.assert_array_equal(s.curvature, before)
    assert s.num_updates == 0
    assert not s.update(0, 3, bad, np.array([1.0]), np.array([1.0]), np.ones((1, 3)), 0.1)  # a bad base loss too
    np.testing.assert_array_equal(s.curvature, before)


def test_a_flat_objective_floors_the_curvature():
    s = sampler(smoothing=1.0)
    assert s.update(0, 3, 2.0, np.array([2.0]), np.array([2.0]), np.ones((1, 3)), 0.1)
    np.testing.assert_array_equal(s.curvature[:3], CURVATURE_FLOOR)
    assert np.all(np.isfinite(s.draw(np.random.RandomState(0), 0, 0, 3, 2)))


def test_draws_are_the_normalised_noise_scaled_by_the_inverse_square_root_curvature():
    n = 5
    s = HessianSampler(np.array([0, n]), 0.1, stream="legacy")
    s.curvature[:] = [1.0, 4.0, 0.25, 9.0, 100.0]
    draws = s.draw(np.random.RandomState(7), 0, 0, n, 4)
    noise = draws * np.sqrt(s.curvature)
    np.testing.assert_allclose(np.linalg.norm(noise, axis=1), math.sqrt(n), rtol=1e-12)
    raw = np.random.RandomState(7).normal(size=(4, n))  # the legacy stream: the optimizer's random state
    np.testing.assert_allclose(noise, raw * (math.sqrt(n) / np.linalg.norm(raw, axis=1, keepdims=True)), rtol=1e-12)
    unnormalised = HessianSampler(np.array([0, n]), 0.1, normalize=False, stream="legacy")
    unnormalised.curvature[:] = s.curvature
    np.testing.assert_allclose(unnormalised.draw(np.random.RandomState(7), 0, 0, n, 4), raw / np.sqrt(s.curvature))
    np.testing.assert_allclose(s.covariance(0, n), np.diag(1.0 / s.curvature))


def test_torch_stream_draws_have_covariance_diag_inverse_curvature():
    n = 4
    s = HessianSampler(np.array([0, n]), 0.1, normalize=False)
    s.curvature[:] = [1.0, 4.0, 0.25, 16.0]
    draws = s.draw(np.random.RandomState(0), 0, 0, n, 40_000)
    empirical = draws.T @ draws / len(draws)
    np.testing.assert_allclose(empirical, s.covariance(0, n), atol=0.06, rtol=0.03)
    assert s.draw(np.random.RandomState(0), 0, 0, n, 0).shape == (0, n)


def test_reset_puts_the_block_back_to_one():
    s = sampler()
    s.curvature[:] = np.arange(2.0, 8.0)
    s.reset(1, 3, 6)
    np.testing.assert_array_equal(s.curvature, [2.0, 3.0, 4.0, 1.0, 1.0, 1.0])


def test_restricted_zeroes_discrete_coordinates_only():
    s = sampler()
    directions = np.ones((2, 3))
    out = s.restricted(directions, np.array([True, False, True]))
    np.testing.assert_array_equal(out, [[1.0, 0.0, 1.0], [1.0, 0.0, 1.0]])


def test_informed_estimate_updates_then_scales_by_the_updated_curvature():
    """Steps 2 and 3: D updated from the pairs, then g = (lam/Q) sum (l+ - l-) / 2h D^-1/2 z."""
    s = sampler(bounds=(0, 3), smoothing=0.5)
    s.curvature[:] = [1.0, 4.0, 0.25]
    design = HessianInformedDifference(s)
    z = np.array([[1.0, 2.0, -1.0], [0.5, -1.0, 1.5]])
    directions = z / np.sqrt(s.curvature)
    rows = design.rows(directions)
    losses = np.array([1.2, 0.7, 0.9, 1.4])
    base, step, lam = 1.0, 0.1, 0.5
    expected_curvature = s.curvature.copy()
    second = np.abs(losses[:2] + losses[2:] - 2 * base) / (2 * step**2)
    expected_curvature = 0.5 * expected_curvature + 0.5 * expected_curvature * (second @ z**2) / 2
    grad = design.estimate(base, losses, rows, step, lam, 0, 0, 3)
    np.testing.assert_allclose(s.curvature, expected_curvature, rtol=1e-12)
    slopes = (losses[:2] - losses[2:]) / (2 * step)
    np.testing.assert_allclose(grad, lam / 2 * (slopes @ z) / np.sqrt(expected_curvature), rtol=1e-12)
    assert s.num_updates == 1


# ----- the configuration -----------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"hessian_smoothing": 0}, "hessian_smoothing"),
        ({"hessian_smoothing": 1.5}, "hessian_smoothing"),
        ({"hessian_smoothing": -0.1}, "hessian_smoothing"),
        ({"hessian_smoothing": float("nan")}, "hessian_smoothing"),
        ({"num_directions": 0}, "num_directions"),
        ({"num_directions": 1.5}, "num_directions"),
        ({"update": "x"}, "update"),
        ({"lr": 0.0}, "lr"),
        ({"mu": -1.0}, "mu"),
        ({"max_block_size": 0}, "max_block_size"),
        ({"block_selection": "greedy"}, "block_selection"),
        ({"normalize": "yes"}, "normalize"),
        ({"lr_schedule": "linear"}, "lr_schedule"),
        ({"direction_stream": "numpy"}, "direction_stream"),
    ],
)
def test_invalid_settings_are_refused_with_their_name(kwargs, word):
    with pytest.raises(ValueError, match=word):
        HessianInformed(**kwargs)


def test_defaults_and_parts():
    opt = HessianInformed()(parametrization=seeded(np.zeros(1030)), budget=100)
    assert isinstance(opt.sampler, HessianSampler) and isinstance(opt._parts.queries, HessianInformedDifference)
    assert opt._parts.queries.sampler is opt.sampler
    assert opt.sampler.smoothing == DEFAULT_HESSIAN_SMOOTHING == 1e-6
    assert isinstance(opt.update_rule, BlockAdam)
    assert opt.iteration_size == 21 and opt.num_blocks == 3  # Q = 10, N_max = 512
    np.testing.assert_array_equal(opt.sampling_covariance(0), np.eye(344))
    assert opt.fisher_schedule is None and opt.num_fisher_queries == 0


def test_hizoo_converges_on_an_ill_conditioned_quadratic():
    scales, f = ill_conditioned(20)
    start = np.ones(20)
    opt = HessianInformed(num_directions=4, lr=0.1, hessian_smoothing=0.1)(parametrization=seeded(start), budget=1800)
    recommendation = opt.minimize(f)
    assert f(recommendation.value) < 0.3 * f(start)
    assert opt.num_ask == 1800 and opt.sampler.num_updates == opt.num_steps > 150
    curvature = opt.sampler.curvature
    assert np.all(np.isfinite(curvature)) and np.all(curvature >= CURVATURE_FLOOR)
    # the estimate ranks the stiff coordinates above the soft ones
    assert np.mean(curvature[-5:]) > 4 * np.mean(curvature[:5])


def test_hizoo_paper_configuration_runs_with_sgd_one_direction_and_three_queries():
    assert HIZOO_PAPER == {"update": "sgd", "num_directions": 1, "lr_schedule": "constant"}
    _, f = ill_conditioned(6, condition=10.0)
    start = np.ones(6)
    opt = HessianInformed(**HIZOO_PAPER, lr=0.02)(parametrization=seeded(start), budget=300)
    assert opt.iteration_size == 3 and isinstance(opt.update_rule, BlockSGD) and opt.lr_schedule == "constant"
    recommendation = opt.minimize(f)
    assert opt.num_ask == 300 and opt.num_steps >= 99
    assert f(recommendation.value) < 0.5 * f(start)
    registered = ng.optimizers.registry["HiZOOPaper"](parametrization=seeded(start), budget=30)
    assert registered.iteration_size == 3 and isinstance(registered.update_rule, BlockSGD)
    assert ng.optimizers.registry["HiZOO"](parametrization=seeded(start), budget=30).iteration_size == 21


def test_nan_losses_keep_hizoo_working():
    _, f = ill_conditioned(8, condition=10.0)
    rng = np.random.RandomState(3)

    def flaky(x):
        return math.nan if rng.rand() < 0.15 else f(x)

    start = np.ones(8)
    opt = HessianInformed(num_directions=3, lr=0.05)(parametrization=seeded(start), budget=400)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        recommendation = opt.minimize(flaky)
    assert any(issubclass(w.category, InvalidQueryWarning) for w in caught)
    assert opt.num_ask == 400 and opt.num_steps > 10 and opt.num_recoveries > 0
    assert np.all(np.isfinite(opt.sampler.curvature)) and np.all(opt.sampler.curvature > 0)
    assert np.all(np.isfinite(recommendation.value)) and f(recommendation.value) < f(start)


def test_a_nan_base_loss_resets_the_curvature_of_the_blamed_block():
    _, f = ill_conditioned(4, condition=10.0)
    opt = HessianInformed(num_directions=2, lr=0.05, hessian_smoothing=0.5)(parametrization=seeded(np.ones(4)), budget=100)
    for _ in range(3):
        candidates = [opt.ask() for _ in range(5)]
        for candidate in candidates:
            opt.tell(candidate, f(candidate.value))
    assert not np.allclose(opt.sampler.curvature, 1.0)
    candidates = [opt.ask() for _ in range(5)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # InvalidQueryWarning, and Nevergrad's clipping warning
        for index, candidate in enumerate(candidates):
            opt.tell(candidate, math.nan if index == 0 else f(candidate.value))
    assert opt.num_recoveries == 1
    np.testing.assert_array_equal(opt.sampler.curvature, 1.0)


def run_ask_tell(opt, f, iterations: int):
    recommendations = []
    for _ in range(iterations):
        candidates = [opt.ask() for _ in range(opt.iteration_size)]
        for candidate in candidates:
            opt.tell(candidate, f(candidate.value))
        recommendations.append(np.array(opt.provide_recommendation().value))
    return np.array(recommendations)


@pytest.mark.parametrize("stream", ["torch", "legacy"])
def test_pickling_mid_run_continues_identically(stream):
    _, f = ill_conditioned(12, condition=50.0)
    opt = HessianInformed(num_directions=3, max_block_size=5, direction_stream=stream, hessian_smoothing=0.2)(
        parametrization=seeded(np.ones(12)), budget=600
    )
    run_ask_tell(opt, f, 6)
    clone = pickle.loads(pickle.dumps(opt))
    np.testing.assert_array_equal(clone.sampler.curvature, opt.sampler.curvature)
    ours, theirs = run_ask_tell(opt, f, 8), run_ask_tell(clone, f, 8)
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(clone.sampler.curvature, opt.sampler.curvature)
    assert not np.allclose(ours[0], ours[-1])  # it moved (the comparison means something)


def test_curvature_update_uses_the_draws_of_each_iteration():
    """Sequentially, the noise handed to the curvature update is the normalised draw (norm sqrt(n))."""
    _, f = ill_conditioned(6, condition=1000.0)
    opt = HessianInformed(num_directions=2, hessian_smoothing=0.5, lr=0.01)(parametrization=seeded(np.ones(6)), budget=200)
    norms = []
    real = opt.sampler.update

    def spy(start, stop, base_loss, plus, minus, noise, step, *rest):
        norms.append(np.linalg.norm(noise, axis=1))
        return real(start, stop, base_loss, plus, minus, noise, step, *rest)

    opt.sampler.update = spy
    run_ask_tell(opt, f, 5)
    assert len(norms) == 5
    np.testing.assert_allclose(np.concatenate(norms), math.sqrt(6), rtol=1e-9)
    assert not np.allclose(opt.sampler.curvature, 1.0)


def test_curvature_update_of_an_iteration_asked_ahead_uses_its_own_draws():
    n, q, alpha = 6, 2, 0.5
    _, f = ill_conditioned(n, condition=1000.0)
    opt = HessianInformed(num_directions=q, hessian_smoothing=alpha, lr=0.01)(
        parametrization=seeded(np.ones(n)), budget=200, num_workers=2
    )
    first = [opt.ask() for _ in range(opt.iteration_size)]
    second = [opt.ask() for _ in range(opt.iteration_size)]  # drawn with D = 1, like the first
    values = [np.array([c.value for c in batch]) for batch in (first, second)]
    step = opt._parts.mu / math.sqrt(n)
    curvature = np.ones(n)
    for batch, points in zip((first, second), values):
        for candidate in batch:
            opt.tell(candidate, f(candidate.value))
        z = (points[1 : q + 1] - points[0]) / step  # both iterations' draws were made with D = 1
        losses = np.array([f(p) for p in points])
        second_difference = np.abs(losses[1 : q + 1] + losses[q + 1 :] - 2 * losses[0]) / (2 * step**2)
        at_draw = np.ones(n)  # the D both iterations were drawn with
        curvature = (1 - alpha) * curvature + alpha * at_draw * (second_difference @ z**2) / q
        np.testing.assert_allclose(opt.sampler.curvature, curvature, rtol=1e-6)


def test_hizoo_paper_moves_the_continuous_part_of_a_mixed_parametrization():
    parametrization = ng.p.Instrumentation(ng.p.Array(init=np.ones(4)), ng.p.TransitionChoice([0, 1, 2, 3]))
    parametrization.random_state = np.random.RandomState(0)

    def f(x, c):
        return float(np.sum(x**2)) + c

    opt = HessianInformed(**HIZOO_PAPER, lr=0.05)(parametrization=parametrization, budget=150)
    recommendation = opt.minimize(f)
    assert opt.num_steps > 0
    assert np.sum(recommendation.args[0] ** 2) < 4.0


def test_hizoo_with_two_directions_moves_a_mixed_parametrization():
    parametrization = ng.p.Instrumentation(ng.p.Array(init=np.ones(4)), ng.p.TransitionChoice([0, 1, 2, 3]))
    parametrization.random_state = np.random.RandomState(0)

    def f(x, c):
        return float(np.sum(x**2)) + c

    opt = HessianInformed(num_directions=2, lr=0.05)(parametrization=parametrization, budget=150)
    recommendation = opt.minimize(f)
    assert opt.num_ask == 150 and opt.num_steps > 10
    assert np.sum(recommendation.args[0] ** 2) < 2.0
