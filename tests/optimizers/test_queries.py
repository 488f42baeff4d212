"""Query designs of the ZO loop: forward differences (Q + 1 queries) and central differences (2 Q + 1)."""

import math
import warnings

import nevergrad as ng
import numpy as np
import pytest

import nevergrad_zonp
from nevergrad_zonp import HessianInformed, ZerothOrder
from nevergrad_zonp.optimizers.estimator import zo_gradient
from nevergrad_zonp.optimizers.parts import LoopParts
from nevergrad_zonp.optimizers.queries import CentralDifference, ForwardDifference, QueryDesign


def directions(q: int = 3, n: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.RandomState(seed).normal(size=(q, n))


def quadratic(n: int, seed: int = 0):
    """``f(x) = x'Ax/2 + b'x + c`` with its gradient ``Ax + b`` (A symmetric, indefinite)."""
    rng = np.random.RandomState(seed)
    half = rng.normal(size=(n, n))
    matrix = half + half.T
    linear = rng.normal(size=n)
    return (lambda x: 0.5 * x @ matrix @ x + linear @ x + 3.0), (lambda x: matrix @ x + linear)


def test_both_designs_are_query_designs_with_one_or_two_queries_per_direction():
    assert isinstance(ForwardDifference(), QueryDesign) and isinstance(CentralDifference(), QueryDesign)
    assert ForwardDifference.per_direction == 1 and CentralDifference.per_direction == 2
    assert isinstance(LoopParts(1, 1e-3, np.array([0, 2]), "random", None, None).queries, ForwardDifference)


def test_forward_rows_are_the_directions_and_central_rows_are_plus_then_minus():
    u = directions()
    np.testing.assert_array_equal(ForwardDifference().rows(u), u)
    rows = CentralDifference().rows(u)
    assert rows.shape == (6, 4)
    np.testing.assert_array_equal(rows[:3], u)
    np.testing.assert_array_equal(rows[3:], -u)
    assert CentralDifference().rows(np.zeros((0, 4))).shape == (0, 4)


@pytest.mark.parametrize(
    "queries, forward, central", [(0, 0, 0), (1, 0, 0), (2, 0, 0), (3, 1, 0), (4, 2, 1), (5, 3, 1), (7, 5, 2), (8, 6, 3)]
)
def test_affordable_directions_keep_one_query_for_the_final_iterate(queries, forward, central):
    assert ForwardDifference().affordable(queries) == forward
    assert CentralDifference().affordable(queries) == central
    for design, count in ((ForwardDifference(), forward), (CentralDifference(), central)):
        if queries >= 2:  # the base point, the rows, and one query left for the final iterate
            assert 1 + design.per_direction * count <= queries - 1


def test_forward_valid_drops_the_bad_losses_only():
    u = directions(4)
    losses = np.array([1.0, np.nan, 2.0, np.inf])
    kept, rows = ForwardDifference().valid(losses, u, all_finite=False)
    np.testing.assert_array_equal(kept, [1.0, 2.0])
    np.testing.assert_array_equal(rows, u[[0, 2]])
    kept, rows = ForwardDifference().valid(losses[[0, 2]], u[[0, 2]], all_finite=True)
    assert len(kept) == 2 and rows.shape == (2, 4)


def test_central_valid_drops_whole_pairs_with_a_bad_loss():
    design = CentralDifference()
    u = directions(3)
    rows = design.rows(u)
    losses = np.array([1.0, 2.0, 3.0, 4.0, np.nan, 6.0])  # -u_2 is bad: the pair of u_2 goes
    kept, kept_rows = design.valid(losses, rows, all_finite=False)
    np.testing.assert_array_equal(kept, [1.0, 3.0, 4.0, 6.0])
    np.testing.assert_array_equal(kept_rows, np.concatenate([u[[0, 2]], -u[[0, 2]]]))
    losses = np.array([np.inf, 2.0, 3.0, 4.0, 5.0, np.nan])  # +u_1 and -u_3: two pairs go
    kept, kept_rows = design.valid(losses, rows, all_finite=False)
    np.testing.assert_array_equal(kept, [2.0, 5.0])
    np.testing.assert_array_equal(kept_rows, np.stack([u[1], -u[1]]))
    all_bad = np.full(6, np.nan)
    kept, kept_rows = design.valid(all_bad, rows, all_finite=False)
    assert kept.shape == (0,) and kept_rows.shape == (0, 4)
    good = np.arange(6.0)
    kept, kept_rows = design.valid(good, rows, all_finite=False)
    np.testing.assert_array_equal(kept, good)
    np.testing.assert_array_equal(kept_rows, rows)


def test_central_valid_drops_the_unpaired_plus_row_a_probe_leaves():
    """A mixed parametrization's probe takes the place of -u_Q and is removed before: +u_Q has no pair."""
    design = CentralDifference()
    u = directions(3)
    rows = design.rows(u)[:-1]  # +u_1 +u_2 +u_3 -u_1 -u_2
    losses = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    kept, kept_rows = design.valid(losses, rows, all_finite=True)
    np.testing.assert_array_equal(kept, [1.0, 2.0, 4.0, 5.0])
    np.testing.assert_array_equal(kept_rows, np.concatenate([u[:2], -u[:2]]))
    plus, minus, dirs = design.split(kept, kept_rows)
    np.testing.assert_array_equal(plus, [1.0, 2.0])
    np.testing.assert_array_equal(minus, [4.0, 5.0])
    np.testing.assert_array_equal(dirs, u[:2])
    # with a bad loss too: the unpaired row first, then the pair with the NaN
    kept, kept_rows = design.valid(np.array([1.0, 2.0, 3.0, np.nan, 5.0]), rows, all_finite=False)
    np.testing.assert_array_equal(kept, [2.0, 5.0])
    np.testing.assert_array_equal(kept_rows, np.stack([u[1], -u[1]]))
    # Q = 1: nothing is left
    kept, kept_rows = design.valid(np.array([1.0]), design.rows(u[:1])[:1], all_finite=True)
    assert kept.shape == (0,) and kept_rows.shape == (0, 4)


def test_forward_estimate_is_zo_gradient():
    u = directions(3)
    losses = np.array([1.5, 0.5, 2.0])
    expected = zo_gradient(1.0, losses, u, 0.01, 0.25)
    np.testing.assert_allclose(ForwardDifference().estimate(1.0, losses, u, 0.01, 0.25, 0, 0, 4), expected)
    np.testing.assert_allclose(expected, 0.25 / 3 * ((losses - 1.0) / 0.01) @ u)


def test_central_estimate_is_the_central_difference_formula():
    design = CentralDifference()
    u = directions(3)
    rows = design.rows(u)
    losses = np.array([1.0, 2.0, 4.0, 0.5, 3.0, 1.0])
    step, lam = 0.02, 0.5
    got = design.estimate(7.0, losses, rows, step, lam, 0, 0, 4)  # the base loss plays no part
    expected = sum(lam / 3 * (losses[q] - losses[q + 3]) / (2 * step) * u[q] for q in range(3))
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    with pytest.raises(ValueError, match="pair"):
        design.estimate(1.0, np.zeros(0), np.zeros((0, 4)), step, lam, 0, 0, 4)


def test_central_differences_are_exact_directional_derivatives_on_a_quadratic():
    n = 6
    f, grad = quadratic(n)
    x = np.random.RandomState(1).normal(size=n)
    design = CentralDifference()
    step = 0.3  # large: the central difference of a quadratic has no truncation error
    # an orthogonal basis scaled to norm sqrt(n): (1/n) sum_q n (e_q'g) e_q = g exactly
    basis = np.linalg.qr(np.random.RandomState(2).normal(size=(n, n)))[0].T * math.sqrt(n)
    rows = design.rows(basis)
    losses = np.array([f(x + step * row) for row in rows])
    np.testing.assert_allclose(design.estimate(f(x), losses, rows, step, 1.0, 0, 0, n), grad(x), rtol=1e-9, atol=1e-9)
    # random directions: each slope is u'grad exactly
    u = directions(5, n, seed=3)
    rows = design.rows(u)
    losses = np.array([f(x + step * row) for row in rows])
    got = design.estimate(f(x), losses, rows, step, 1.0, 0, 0, n)
    np.testing.assert_allclose(got, (u @ grad(x)) @ u / 5, rtol=1e-9, atol=1e-9)
    # the forward design has the curvature bias h/2 u'Au on the same rows
    forward = ForwardDifference().estimate(f(x), losses[:5], u, step, 1.0, 0, 0, n)
    assert np.linalg.norm(forward - got) > 1e-3


def sphere(x: np.ndarray) -> float:
    return float(np.sum(x**2))


def test_iteration_size_is_two_q_plus_one_with_central_differences_and_q_plus_one_else():
    for q in (1, 3, 5):
        assert HessianInformed(num_directions=q)(parametrization=4, budget=50).iteration_size == 2 * q + 1
        assert ZerothOrder(num_directions=q, sampler="isotropic")(parametrization=4, budget=50).iteration_size == q + 1
    assert nevergrad_zonp.iteration_size(HessianInformed(num_directions=3)(parametrization=4, budget=50)) == 7


@pytest.mark.parametrize("budget", [100, 7, 8, 9, 23])
def test_central_design_spends_exactly_its_budget_under_minimize(budget):
    parametrization = ng.p.Array(init=np.ones(5))
    parametrization.random_state = np.random.RandomState(0)
    opt = HessianInformed(num_directions=3)(parametrization=parametrization, budget=budget)
    opt.minimize(sphere)
    assert opt.num_ask == budget == opt.num_tell
    assert opt.num_queries == budget


def test_central_iterations_ask_plus_and_minus_around_the_base_point():
    parametrization = ng.p.Array(init=np.full(4, 0.5))
    parametrization.random_state = np.random.RandomState(0)
    opt = HessianInformed(num_directions=2, mu=0.1)(parametrization=parametrization, budget=50)
    for _ in range(3):
        candidates = [opt.ask() for _ in range(opt.iteration_size)]
        values = np.array([c.value for c in candidates])
        base = values[0]
        plus, minus = values[1:3] - base, values[3:5] - base
        np.testing.assert_allclose(plus, -minus, atol=1e-12)
        assert np.all(np.linalg.norm(plus, axis=1) > 0)
        for candidate in candidates:
            opt.tell(candidate, sphere(candidate.value))
    assert opt.num_steps == 3


def test_central_loop_estimate_equals_the_formula_on_the_asked_points():
    """Through the loop (SGD, lam = 1): the step is lr times the central estimate from the told losses."""
    n, lr = 5, 0.01
    f, grad = quadratic(n, seed=4)
    parametrization = ng.p.Array(init=np.random.RandomState(5).normal(size=n))
    parametrization.random_state = np.random.RandomState(0)
    opt = ZerothOrder(sampler="isotropic", num_directions=3, update="sgd", lr=lr)(parametrization=parametrization, budget=80)
    opt._parts.queries = CentralDifference()  # the design is a part: swapped in before the first ask
    assert opt.iteration_size == 7
    candidates = [opt.ask() for _ in range(7)]
    values = np.array([c.value for c in candidates])
    for candidate in candidates:
        opt.tell(candidate, f(candidate.value))
    h = opt._parts.mu / math.sqrt(n)
    u = (values[1:4] - values[0]) / h
    np.testing.assert_allclose(values[4:7] - values[0], -h * u, atol=1e-12)
    exact = (u @ grad(values[0])) @ u / 3  # (l+ - l-) / 2h = u'grad on a quadratic
    iterate = parametrization.spawn_child().set_standardized_data(opt._x).value
    np.testing.assert_allclose(iterate, values[0] - lr * exact, rtol=1e-6, atol=1e-9)
    assert np.linalg.norm(exact) > 0.1


def test_central_design_drops_the_pair_of_a_nan_loss_in_the_loop():
    parametrization = ng.p.Array(init=np.ones(4))
    parametrization.random_state = np.random.RandomState(0)
    opt = HessianInformed(num_directions=2, update="sgd", lr=0.01)(parametrization=parametrization, budget=50)
    seen = []
    real = opt._parts.queries.estimate

    def spy(base_loss, losses, rows, *args):
        seen.append((np.array(losses), np.array(rows)))
        return real(base_loss, losses, rows, *args)

    opt._parts.queries.estimate = spy
    candidates = [opt.ask() for _ in range(5)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for index, candidate in enumerate(candidates):
            opt.tell(candidate, math.nan if index == 2 else sphere(candidate.value))  # +u_2
    (losses, rows), = seen
    assert len(losses) == 2 and np.all(np.isfinite(losses))
    np.testing.assert_allclose(rows[0], -rows[1])
