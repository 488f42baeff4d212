"""LPP (AAAI 2025): the layered sampler, its Fisher schedule, and the configuration in the ZO loop."""

import math
import pickle
import warnings

import nevergrad as ng
import numpy as np
import pytest

import nevergrad_zonp  # noqa: F401  (registers the optimizers)
from nevergrad_zonp import LayeredPerturbation, LayeredPerturbationsInactiveWarning, ZerothOrder
from nevergrad_zonp.optimizers.estimator import BlockAdam
from nevergrad_zonp.optimizers.layered import LayeredOracle, LayeredSampler, LayeredSchedule

from support import make_hardware


def random_psd(n: int, seed: int, rank: int | None = None) -> np.ndarray:
    half = np.random.RandomState(seed).normal(size=(rank or n, n)) * np.linspace(2.0, 0.2, n)
    return half.T @ half


def layered(spans=((0, 4), (4, 10)), bounds=(0, 12), rho=0.1, alpha=0.5, **kwargs) -> LayeredSampler:
    s = LayeredSampler(np.array(bounds), rho, alpha, **kwargs)
    s.set_layers(list(spans))
    return s


def expected_covariance(fishers, rho: float, alpha: float) -> np.ndarray:
    blend = np.eye(len(fishers[0]))
    for fisher in fishers:
        blend = (1 - alpha) * blend + alpha * fisher
    return (1 + rho) * np.linalg.inv(blend + rho * np.eye(len(blend)))


def seeded(init, seed: int = 0) -> ng.p.Array:
    parametrization = ng.p.Array(init=np.asarray(init, dtype=float))
    parametrization.random_state = np.random.RandomState(seed)
    return parametrization


# ----- the sampler ---------------------------------------------------------------------
def test_before_any_refresh_each_layer_is_isotropic_with_rms_one():
    s = layered(normalize=False, stream="legacy")
    draws = s.draw(np.random.RandomState(3), 0, 0, 12, 5)
    raw = np.random.RandomState(3).normal(size=(5, 12))
    for a, b in [(0, 4), (4, 10)]:
        part = raw[:, a:b]
        np.testing.assert_allclose(draws[:, a:b], part / np.sqrt(np.mean(part**2, axis=1, keepdims=True)), rtol=1e-12)
    np.testing.assert_array_equal(draws[:, 10:], raw[:, 10:])  # outside the layers: N(0, I) as drawn
    np.testing.assert_array_equal(s.covariance(0, 12), np.eye(12))
    np.testing.assert_array_equal(s.layer_covariance(1), np.eye(6))
    normalised = layered(stream="legacy").draw(np.random.RandomState(3), 0, 0, 12, 5)
    np.testing.assert_allclose(np.linalg.norm(normalised, axis=1), math.sqrt(12), rtol=1e-12)
    np.testing.assert_allclose(normalised, draws * (math.sqrt(12) / np.linalg.norm(draws, axis=1, keepdims=True)))


def test_update_gives_the_damped_inverse_of_the_smoothed_fisher():
    rho, alpha = 0.1, 0.3
    s = layered(rho=rho, alpha=alpha)
    first, second = random_psd(6, 0), random_psd(6, 1, rank=2)
    assert s.update(1, first)
    np.testing.assert_allclose(s.layer_covariance(1), expected_covariance([first], rho, alpha), rtol=1e-9)
    np.testing.assert_allclose(s.blends[1], 0.7 * np.eye(6) + 0.3 * first, rtol=1e-12)
    assert s.update(1, second)
    np.testing.assert_allclose(s.layer_covariance(1), expected_covariance([first, second], rho, alpha), rtol=1e-9)
    np.testing.assert_array_equal(s.layer_covariance(0), np.eye(4))  # the other layer is not refreshed
    # rho -> large: C_u is damped away and Sigma_u -> I
    big = layered(rho=1e8, alpha=1.0)
    assert big.update(0, random_psd(4, 2))
    np.testing.assert_allclose(big.layer_covariance(0), np.eye(4), atol=1e-6)
    # F = I keeps C_u = I and Sigma_u = (1 + rho) / (1 + rho) I = I
    identity = layered(rho=rho, alpha=alpha)
    assert identity.update(0, np.eye(4))
    np.testing.assert_allclose(identity.layer_covariance(0), np.eye(4), atol=1e-12)


def test_layer_covariance_is_a_copy():
    s = layered()
    assert s.update(0, random_psd(4, 0))
    sigma = s.layer_covariance(0)
    sigma[:] = 0.0
    assert np.all(np.diag(s.layer_covariance(0)) > 0)


@pytest.mark.parametrize(
    "fisher",
    [
        np.full((6, 6), np.nan),
        np.where(np.eye(6) > 0, np.inf, 0.0),
        np.eye(5),  # wrong shape
        np.eye(7),
        np.ones(6),
        -100.0 * np.eye(6),  # C_u + rho I not positive definite
    ],
)
def test_an_unusable_fisher_is_rejected_and_changes_nothing(fisher):
    s = layered()
    good = random_psd(6, 0)
    assert s.update(1, good)
    sigma, blend = s.layer_covariance(1), s.blends[1].copy()
    draws = s.draw(np.random.RandomState(0), 0, 0, 12, 3)
    assert not s.update(1, fisher)
    np.testing.assert_array_equal(s.layer_covariance(1), sigma)
    np.testing.assert_array_equal(s.blends[1], blend)
    assert set(s.covariances) == {1}
    s.stream.generator = None  # the same draws again: the factor was kept
    np.testing.assert_array_equal(s.draw(np.random.RandomState(0), 0, 0, 12, 3), draws)
    fresh = layered()
    assert not fresh.update(0, np.full((4, 4), np.nan))
    assert fresh.covariances == {} and fresh.blends == {}


def test_a_block_cutting_a_layer_has_the_marginal_covariance():
    s = layered(spans=((0, 4), (4, 10)), bounds=(0, 7, 12))
    assert s.update(0, random_psd(4, 0)) and s.update(1, random_psd(6, 1))
    first, second = s.layer_covariance(0), s.layer_covariance(1)
    block0 = s.covariance(0, 7)  # [0, 7): layer 0 whole, layer 1 on [4, 7)
    expected = np.zeros((7, 7))
    expected[:4, :4] = first
    expected[4:, 4:] = second[:3, :3]
    np.testing.assert_allclose(block0, expected, rtol=1e-12)
    block1 = s.covariance(1, 5)  # [7, 12): layer 1 on [7, 10), isotropic on [10, 12)
    expected = np.eye(5)
    expected[:3, :3] = second[3:, 3:]
    np.testing.assert_allclose(block1, expected, rtol=1e-12)


@pytest.mark.parametrize("block, start, stop, part", [(0, 0, 7, slice(4, 7)), (1, 7, 12, slice(0, 3))])
def test_draws_of_a_cut_layer_come_from_the_marginal(block, start, stop, part):
    """With d = c L z (L L' = S, c > 0 any scale): E[d d' / (d' S^-1 d)] = S / m, whatever the factor L.

    Layer 1 spans [4, 10): block 0 has its leading [4, 7), block 1 its trailing [7, 10).
    """
    s = layered(spans=((0, 4), (4, 10)), bounds=(0, 7, 12), normalize=False)
    assert s.update(1, 5.0 * random_psd(6, 3))
    inside = slice(0, 3) if block == 0 else slice(3, 6)
    marginal = s.layer_covariance(1)[inside, inside]
    np.testing.assert_allclose(s.covariance(block, stop - start)[part, part], marginal, rtol=1e-12)
    draws = s.draw(np.random.RandomState(0), block, start, stop, 40_000)[:, part]
    np.testing.assert_allclose(np.sqrt(np.mean(draws**2, axis=1)), 1.0, rtol=1e-5)  # each layer part: RMS 1
    inverse = np.linalg.inv(marginal)
    weights = np.einsum("ki,ij,kj->k", draws, inverse, draws)
    shape = (draws / weights[:, None]).T @ draws / len(draws)
    np.testing.assert_allclose(shape, marginal / 3, atol=0.02 * np.abs(marginal).max())
    # the full layer's sub-block, not the isotropic one
    assert np.linalg.norm(marginal / np.trace(marginal) - np.eye(3) / 3) > 0.1


def test_each_layer_part_has_rms_one_after_a_refresh_before_the_normalisation():
    s = layered(spans=((0, 4), (4, 10)), bounds=(0, 12), normalize=False)
    assert s.update(0, random_psd(4, 0)) and s.update(1, 10.0 * random_psd(6, 1))
    draws = s.draw(np.random.RandomState(1), 0, 0, 12, 50)
    for a, b in [(0, 4), (4, 10)]:
        np.testing.assert_allclose(np.sqrt(np.mean(draws[:, a:b] ** 2, axis=1)), 1.0, rtol=1e-5)
    assert not np.allclose(np.sqrt(np.mean(draws[:, 10:] ** 2, axis=1)), 1.0)  # outside: raw normals
    normalised = layered(spans=((0, 4), (4, 10)), bounds=(0, 12))
    assert normalised.update(0, random_psd(4, 0))
    np.testing.assert_allclose(np.linalg.norm(normalised.draw(np.random.RandomState(1), 0, 0, 12, 5), axis=1), math.sqrt(12))


def test_a_refresh_changes_the_draws_of_its_layer_only():
    s = layered(normalize=False, stream="legacy")
    before = s.draw(np.random.RandomState(2), 0, 0, 12, 4)
    assert s.update(1, random_psd(6, 5))
    after = s.draw(np.random.RandomState(2), 0, 0, 12, 4)
    np.testing.assert_array_equal(after[:, :4], before[:, :4])
    np.testing.assert_array_equal(after[:, 10:], before[:, 10:])
    assert not np.allclose(after[:, 4:10], before[:, 4:10])
    assert s.update(1, random_psd(6, 6))  # a second refresh replaces the cached factor
    again = s.draw(np.random.RandomState(2), 0, 0, 12, 4)
    assert not np.allclose(again[:, 4:10], after[:, 4:10])


def test_restricted_zeroes_discrete_coordinates_and_normalises_again():
    s = layered()
    directions = np.ones((2, 4))
    out = s.restricted(directions, np.array([True, False, True, True]))
    assert np.all(out[:, 1] == 0) and np.allclose(np.linalg.norm(out, axis=1), 2.0)


# ----- the schedule ------------------------------------------------------------------------
class FakeOracle:
    """An object with layers: records the Fisher requests and answers a fixed PSD matrix per layer."""

    def __init__(self, spans, fisher=None) -> None:
        self.spans = list(spans)
        self.calls = []
        self.fisher = fisher

    def layer_spans(self):
        return self.spans

    def layer_fisher(self, theta, layer, *, inputs, draws, seed):
        self.calls.append((np.array(theta, copy=True), layer, inputs, draws, seed))
        a, b = self.spans[layer]
        return random_psd(b - a, layer) if self.fisher is None else self.fisher(b - a)


def test_fake_oracle_is_a_layered_oracle():
    assert isinstance(FakeOracle([(0, 2)]), LayeredOracle)
    assert not isinstance(object(), LayeredOracle)


def test_schedule_refreshes_a_layer_at_its_first_use_and_every_period_uses():
    s = LayeredSampler(np.array([0, 4, 10, 12]), 0.1, 0.5)
    schedule = LayeredSchedule(s, period=3, inputs=7, draws=5)
    oracle = FakeOracle([(0, 4), (4, 10)])
    thetas = []

    def theta():
        thetas.append(len(thetas))
        return np.full(12, float(len(thetas)))

    for _ in range(7):  # block 0 is layer 0: uses 0..6, refreshes at uses 0, 3, 6
        schedule.prepare(oracle, theta, 0, 0, 4)
    assert [call[1] for call in oracle.calls] == [0, 0, 0]
    assert s.spans == [(0, 4), (4, 10)] and schedule.uses == {0: 7}
    assert [call[2:] for call in oracle.calls] == [(7, 5, 0), (7, 5, 1), (7, 5, 2)]  # inputs, draws, seed
    assert len(thetas) == 3  # the iterate's values are asked only for a refresh
    np.testing.assert_array_equal(oracle.calls[1][0], np.full(12, 2.0))
    schedule.prepare(oracle, theta, 2, 10, 12)  # outside the layers: no use, no refresh
    assert len(oracle.calls) == 3 and schedule.uses == {0: 7}
    assert schedule.num_refreshes == 3 and schedule.num_rejected == 0 and 0 in s.covariances and 1 not in s.covariances


def test_a_block_over_two_layers_uses_both_and_reads_the_iterate_once():
    s = LayeredSampler(np.array([0, 12]), 0.1, 0.5)
    schedule = LayeredSchedule(s, period=2, inputs=3, draws=3)
    oracle = FakeOracle([(0, 4), (4, 10)])
    reads = []

    def theta():
        reads.append(1)
        return np.arange(12.0)

    for _ in range(5):
        schedule.prepare(oracle, theta, 0, 0, 12)
    assert [call[1] for call in oracle.calls] == [0, 1, 0, 1, 0, 1]  # uses 0, 2, 4 of each
    assert len(reads) == 3 and schedule.uses == {0: 5, 1: 5} and schedule.num_refreshes == 6
    assert [call[4] for call in oracle.calls] == [0, 1, 2, 3, 4, 5]
    np.testing.assert_array_equal(oracle.calls[0][0], np.arange(12.0))


def test_a_rejected_fisher_is_counted_and_leaves_the_layer_isotropic():
    s = LayeredSampler(np.array([0, 12]), 0.1, 0.5)
    schedule = LayeredSchedule(s, period=1, inputs=3, draws=3)
    oracle = FakeOracle([(0, 4), (4, 10)], fisher=lambda n: np.full((n, n), np.nan))
    schedule.prepare(oracle, lambda: np.zeros(12), 0, 0, 12)
    assert schedule.num_refreshes == 2 and schedule.num_rejected == 2 and s.covariances == {}


def test_schedule_without_layers_warns_once_and_does_nothing():
    s = LayeredSampler(np.array([0, 12]), 0.1, 0.5)
    schedule = LayeredSchedule(s, period=1, inputs=3, draws=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for oracle in (None, object(), None):
            schedule.prepare(oracle, lambda: pytest.fail("the iterate is not needed"), 0, 0, 12)
    assert [w.category for w in caught] == [LayeredPerturbationsInactiveWarning]
    assert s.spans == [] and schedule.num_refreshes == 0


# ----- the configuration in the loop ------------------------------------------------------
def sphere(x):
    return float(np.sum((np.asarray(x) - 1.0) ** 2))


def test_without_an_oracle_lpp_warns_once_and_runs_as_zo_i():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lpp = LayeredPerturbation(num_directions=3, lr=0.05, max_block_size=4)(parametrization=seeded(np.zeros(8)), budget=120)
        ours = lpp.minimize(sphere)
    inactive = [w for w in caught if issubclass(w.category, LayeredPerturbationsInactiveWarning)]
    assert len(inactive) == 1 and "ZO-I" in str(inactive[0].message)
    zoi = ZerothOrder(sampler="isotropic", num_directions=3, lr=0.05, max_block_size=4)(
        parametrization=seeded(np.zeros(8)), budget=120
    )
    theirs = zoi.minimize(sphere)
    assert lpp.num_ask == 120 and lpp.iteration_size == 4
    np.testing.assert_allclose(ours.value, theirs.value, atol=1e-6)  # the same path (float32 draws rounded alike)
    assert sphere(ours.value) < sphere(np.zeros(8))
    assert lpp._parts.curvature.num_refreshes == 0


def test_lpp_on_an_output_oracle_without_layers_warns_and_runs():
    adapter, _ = make_hardware()
    adapter.parametrization.random_state = np.random.RandomState(0)
    opt = LayeredPerturbation(num_directions=2, max_block_size=3)(parametrization=adapter.parametrization, budget=40)
    with pytest.warns(LayeredPerturbationsInactiveWarning):
        opt.minimize(adapter)
    assert opt.num_ask == 40


class LayeredHardware:
    """The hardware stand-in with two layers of three parameters each (what LPP asks of a ModelAdapter)."""

    def __init__(self):
        self.adapter, self.network = make_hardware()
        self.adapter.parametrization.random_state = np.random.RandomState(0)
        self.oracle = FakeOracle([(0, 3), (3, 6)])
        self.adapter.layer_spans = self.oracle.layer_spans
        self.adapter.layer_fisher = self.oracle.layer_fisher


def test_lpp_refreshes_each_layer_every_period_uses_through_the_loop():
    hardware = LayeredHardware()
    opt = LayeredPerturbation(num_directions=2, max_block_size=3, block_selection="cyclic", layer_period=2, layer_inputs=4, layer_draws=6)(
        parametrization=hardware.adapter.parametrization, budget=31
    )
    opt.attach(hardware.adapter)
    bases = []
    for _ in range(10):  # blocks 0, 1, 0, 1, ...: each layer used 5 times, refreshed at its uses 0, 2, 4
        candidates = [opt.ask() for _ in range(opt.iteration_size)]
        bases.append(np.array(candidates[0].value))
        for candidate in candidates:
            opt.tell(candidate, hardware.adapter(candidate.value))
    calls = hardware.oracle.calls
    assert [call[1] for call in calls] == [0, 1, 0, 1, 0, 1]
    assert [call[2:4] for call in calls] == [(4, 6)] * 6 and [call[4] for call in calls] == list(range(6))
    # refreshed when iterations 0, 1, 4, 5, 8, 9 start: at those iterations' base points (the iterate's values)
    for call, iteration in zip(calls, [0, 1, 4, 5, 8, 9]):
        np.testing.assert_allclose(call[0], bases[iteration], atol=1e-12)
    assert not np.allclose(calls[0][0], calls[-1][0])  # the iterate moved between refreshes
    assert opt._parts.curvature.num_refreshes == 6 and set(opt.sampler.covariances) == {0, 1}
    assert opt.num_queries == opt.num_ask == 30  # Fishers cost no query


def test_lpp_minimize_spends_exactly_its_budget_and_the_fishers_cost_nothing():
    hardware = LayeredHardware()
    opt = LayeredPerturbation(num_directions=3, max_block_size=4, layer_period=3, layer_inputs=2, layer_draws=2)(
        parametrization=hardware.adapter.parametrization, budget=61
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", LayeredPerturbationsInactiveWarning)
        opt.minimize(hardware.adapter)
    assert opt.num_ask == 61 == hardware.adapter.queries
    assert opt._parts.curvature.num_refreshes > 0 and opt.num_fisher_queries == 0


def test_pickled_lpp_keeps_its_layers_and_continues_identically():
    hardware = LayeredHardware()
    opt = LayeredPerturbation(num_directions=2, max_block_size=3, layer_period=2, layer_inputs=2, layer_draws=2)(
        parametrization=hardware.adapter.parametrization, budget=200
    )
    opt.attach(hardware.adapter)

    def run(optimizer, iterations):
        out = []
        for _ in range(iterations):
            candidates = [optimizer.ask() for _ in range(optimizer.iteration_size)]
            for candidate in candidates:
                optimizer.tell(candidate, hardware.adapter(candidate.value))
            out.append(np.array(optimizer.provide_recommendation().value))
        return np.array(out)

    run(opt, 6)
    clone = pickle.loads(pickle.dumps(opt))
    assert clone.sampler.spans == [(0, 3), (3, 6)]
    np.testing.assert_array_equal(clone.sampler.layer_covariance(0), opt.sampler.layer_covariance(0))
    clone.attach(hardware.adapter)
    np.testing.assert_array_equal(run(opt, 6), run(clone, 6))


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"layer_period": 0}, "layer_period"),
        ({"layer_period": 2.5}, "layer_period"),
        ({"layer_smoothing": 0}, "layer_smoothing"),
        ({"layer_smoothing": 1.5}, "layer_smoothing"),
        ({"layer_inputs": 0}, "layer_inputs"),
        ({"layer_draws": 0}, "layer_draws"),
        ({"rho": 0.0}, "rho"),
        ({"rho": float("inf")}, "rho"),
        ({"num_directions": 0}, "num_directions"),
        ({"update": "x"}, "update"),
        ({"direction_stream": "numpy"}, "direction_stream"),
    ],
)
def test_invalid_settings_are_refused_with_their_name(kwargs, word):
    with pytest.raises(ValueError, match=word):
        LayeredPerturbation(**kwargs)


def test_defaults_are_the_papers():
    opt = LayeredPerturbation()(parametrization=seeded(np.zeros(20)), budget=50)
    schedule = opt._parts.curvature
    assert isinstance(opt.sampler, LayeredSampler) and isinstance(schedule, LayeredSchedule)
    assert schedule.sampler is opt.sampler
    assert (schedule.period, schedule.inputs, schedule.draws) == (100, 100, 100)
    assert opt.sampler.damping == 0.1 and opt.sampler.smoothing == 0.01
    assert isinstance(opt.update_rule, BlockAdam) and opt.iteration_size == 11
    assert ng.optimizers.registry["LPP"](parametrization=seeded(np.zeros(20)), budget=50).iteration_size == 11
