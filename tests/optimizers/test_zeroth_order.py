"""Behaviour specific to the ZO optimizer: samplers, estimator statistics, blocks, Fisher use, budget."""

import math
import warnings

import nevergrad as ng
import numpy as np
import pytest
import torch

import nevergrad_zonp
from nevergrad_zonp.optimizers.blocks import block_bounds, check_fisher_memory
from nevergrad_zonp.optimizers.estimator import zo_gradient
from nevergrad_zonp.optimizers.samplers import CoordinateSampler, NaturalSampler
from nevergrad_zonp.optimizers.zeroth_order import InvalidQueryWarning, NaturalPerturbationsInactiveWarning


def random_fisher(n: int, rank: int, seed: int) -> np.ndarray:
    jac = np.random.RandomState(seed).normal(size=(rank, n)) * np.linspace(3, 0.1, n)
    return jac.T @ jac


def normalised_natural_covariance(fisher: np.ndarray, rho: float) -> np.ndarray:
    n = len(fisher)
    return np.linalg.inv(fisher * n / np.trace(fisher) + rho * np.eye(n))


@pytest.mark.parametrize(
    "dimension, n_max, blocks, largest",
    [(2580, 512, 6, 430), (33642, 512, 66, 510), (560, 280, 2, 280), (3170, 512, 7, 453), (5, 512, 1, 5)],
)
def test_block_partition_follows_the_papers_rule(dimension, n_max, blocks, largest):
    bounds = block_bounds(dimension, n_max)
    sizes = np.diff(bounds)
    assert len(sizes) == blocks and sizes.max() == largest
    assert sizes.max() - sizes.min() <= 1 and bounds[0] == 0 and bounds[-1] == dimension


def test_impossible_block_memory_is_refused_before_allocation():
    with pytest.raises(MemoryError, match="max_block_size"):
        nevergrad_zonp.ZerothOrder(max_block_size=10**6)(parametrization=10**6, budget=10)
    with pytest.raises(MemoryError, match="GiB"):
        check_fisher_memory(block_bounds(4096, 4096), 1, 4, available=10**6)
    assert check_fisher_memory(block_bounds(4096, 512), 1, 4, available=10**9) > 8 * 512**2 * 4


def test_invalid_settings_are_refused_with_their_name():
    for kwargs, word in [
        ({"sampler": "gauss"}, "sampler"),
        ({"lr": 0.0}, "lr"),
        ({"rho": -1.0}, "rho"),
        ({"num_directions": 0}, "num_directions"),
        ({"smoothing": 1.5}, "smoothing"),
        ({"block_selection": "greedy"}, "block_selection"),
        ({"max_block_size": float("nan")}, "max_block_size must be a positive integer, got nan"),
        ({"fisher_period": float("inf")}, "fisher_period must be a positive integer, got inf"),
        ({"num_directions": 2.5}, "num_directions must be a positive integer"),
        ({"fisher_rank": float("nan")}, "fisher_rank must be a positive integer or None, got nan"),
        ({"fisher_rank": "8"}, "fisher_rank must be a positive integer or None"),
    ]:
        with pytest.raises(ValueError, match=word):
            nevergrad_zonp.ZerothOrder(**kwargs)


def test_natural_directions_have_the_normalised_inverse_fisher_covariance():
    n, rho = 12, 0.1
    fisher = random_fisher(n, rank=4, seed=0)
    sampler = NaturalSampler(damping=rho, smoothing=1.0)
    assert sampler.update(0, fisher)
    expected = normalised_natural_covariance(fisher, rho)
    draws = sampler.sample(np.random.RandomState(1), 0, n, 200_000)
    empirical = draws.T @ draws / len(draws)
    assert np.linalg.norm(empirical - expected) / np.linalg.norm(expected) < 0.02
    np.testing.assert_allclose(sampler.covariance(0, n), expected, rtol=1e-4, atol=1e-6)


def test_normalised_directions_keep_the_covariance_shape():
    """With norm sqrt(n) directions, the second moment is the covariance shape, scaled to trace n."""
    n, rho = 40, 0.1
    fisher = random_fisher(n, rank=30, seed=2)
    opt = nevergrad_zonp.ZerothOrder(rho=rho, num_directions=50_000)(parametrization=n, budget=10**6)
    opt.sampler.update(0, fisher)
    iteration = opt._start_iteration()
    draws = iteration.directions
    np.testing.assert_allclose(np.linalg.norm(draws, axis=1), np.sqrt(n))
    empirical = draws.T @ draws / len(draws)
    shape = normalised_natural_covariance(fisher, rho)
    shape *= n / np.trace(shape)
    assert np.linalg.norm(empirical - shape) / np.linalg.norm(shape) < 0.1
    # the isotropic shape is far from it: the test can tell the samplers apart
    assert np.linalg.norm(np.eye(n) - shape) / np.linalg.norm(shape) > 0.5


def test_estimator_mean_is_sigma_times_gradient_within_its_predicted_variance():
    n, rho, num, reps, lam = 10, 0.1, 4, 4000, 0.1
    rng = np.random.RandomState(0)
    sampler = NaturalSampler(damping=rho, smoothing=1.0)
    sampler.update(0, random_fisher(n, rank=3, seed=5))
    sigma = sampler.covariance(0, n)
    grad = rng.normal(size=n)
    mu = 1e-6
    estimates = []
    for _ in range(reps):
        u = sampler.sample(rng, 0, n, num)
        losses = (mu * u) @ grad + 0.5 * mu**2 * np.sum(u**2, axis=1)  # quadratic l(d) = g.d + |d|^2 / 2
        estimates.append(zo_gradient(0.0, losses, u, mu, lam))
    estimates = np.array(estimates)
    target = lam * sigma @ grad
    predicted_var = lam**2 / num * ((grad @ sigma @ grad) * np.trace(sigma) + grad @ sigma @ sigma @ grad)
    empirical_var = np.sum(estimates.var(axis=0))
    assert abs(empirical_var / predicted_var - 1) < 0.1
    assert np.sum((estimates.mean(axis=0) - target) ** 2) < 4 * predicted_var / reps
    # and the isotropic mean (lam * grad) is rejected by the same criterion
    assert np.sum((estimates.mean(axis=0) - lam * grad) ** 2) > 4 * predicted_var / reps


def test_coordinate_directions_are_scaled_unit_vectors():
    draws = CoordinateSampler().sample(np.random.RandomState(0), 0, 7, 500)
    assert np.all(np.count_nonzero(draws, axis=1) == 1) and np.all(draws.sum(axis=1) == 1)
    assert len(np.unique(draws.argmax(axis=1))) == 7  # uniform over the block, with replacement


def test_cyclic_blocks_visit_every_block_in_order():
    opt = nevergrad_zonp.ZerothOrder(sampler="isotropic", max_block_size=3, block_selection="cyclic", num_directions=2)(
        parametrization=10, budget=10**4
    )
    blocks = []
    for _ in range(8):
        candidates = [opt.ask() for _ in range(3)]
        blocks.append(opt._iterations[max(opt._iterations)].block)
        for candidate in candidates:
            opt.tell(candidate, float(np.sum(candidate.value**2)))
    assert blocks == [0, 1, 2, 3, 0, 1, 2, 3]


def test_only_the_block_is_perturbed_and_stepped():
    opt = nevergrad_zonp.ZerothOrder(sampler="isotropic", max_block_size=4, num_directions=3)(parametrization=12, budget=100)
    candidates = [opt.ask() for _ in range(4)]
    iteration = opt._iterations[0]
    lo, hi = opt.block_bounds[iteration.block], opt.block_bounds[iteration.block + 1]
    outside = np.ones(12, dtype=bool)
    outside[lo:hi] = False
    for candidate in candidates[1:]:
        delta = candidate.value - candidates[0].value
        assert np.all(delta[outside] == 0) and np.linalg.norm(delta[lo:hi]) == pytest.approx(1e-3)
    for candidate in candidates:
        opt.tell(candidate, float(np.sum((candidate.value - 1) ** 2)))
    moved = opt.ask().value != 0  # the next iteration's base point is the stepped iterate
    assert np.all(moved[lo:hi]) and not np.any(moved[outside])


def test_natural_perturbations_warn_once_without_an_oracle():
    opt = ng.optimizers.registry["ZONP"](parametrization=5, budget=600)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        opt.minimize(lambda x: float(np.sum(x**2)))
    inactive = [w for w in caught if issubclass(w.category, NaturalPerturbationsInactiveWarning)]
    assert len(inactive) == 1
    for name in ["ZOI", "ZOco"]:
        opt = ng.optimizers.registry[name](parametrization=5, budget=600)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            opt.minimize(lambda x: float(np.sum(x**2)))
        assert not [w for w in caught if issubclass(w.category, NaturalPerturbationsInactiveWarning)]


def test_nan_base_loss_skips_the_step_and_nan_directions_are_left_out():
    """The constant schedule: the first Adam step is exactly lr * g / (|g| + eps)."""
    opt = nevergrad_zonp.ZerothOrder(sampler="isotropic", num_directions=4, lr=0.1, lr_schedule="constant")(
        parametrization=3, budget=100
    )
    opt.parametrization.random_state.seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        candidates = [opt.ask() for _ in range(5)]
        opt.tell(candidates[0], float("nan"))
        for candidate in candidates[1:]:
            opt.tell(candidate, 1.0)
        np.testing.assert_array_equal(opt.recommend().value, 0.0)
        assert opt.num_steps == 0
        candidates = [opt.ask() for _ in range(5)]
        directions = opt._iterations[1].directions
        losses = [float(np.sum((c.value - 1) ** 2)) for c in candidates]
        for i, candidate in enumerate(candidates):
            opt.tell(candidate, float("inf") if i == 2 else losses[i])
    assert opt.num_steps == 1 and opt.num_recoveries == 1  # the NaN base point (the start) had no anchor to go back to
    keep = [0, 2, 3]  # candidate 2 (perturbation 1) was told inf and must be left out
    slopes = (np.array(losses[1:])[keep] - losses[0]) / (1e-3 / np.sqrt(3))
    grad = slopes @ directions[keep] / (3 * 3)
    # Adam's first step is -lr * m_hat / (sqrt(v_hat) + eps) = -lr * g / (|g| + eps), about -lr * sign(g)
    np.testing.assert_allclose(opt.ask().value, -0.1 * grad / (np.abs(grad) + 1e-8), rtol=1e-9)


class QuadraticOracle:
    """A tiny output oracle: outputs are a fixed linear map of theta (Gaussian model)."""

    output = "gaussian"

    def __init__(self, dimension: int, nan_rows: int = 0) -> None:
        self.parametrization = ng.p.Array(shape=(dimension,))
        self.map = np.random.RandomState(0).normal(size=(6, dimension)) * np.linspace(1, 5, dimension)
        self.nan_rows = nan_rows
        self.calls = 0

    def assign_batch(self, value, key):
        pass

    def block_outputs(self, theta, start, deltas, key):
        self.calls += len(deltas)
        thetas = np.repeat(theta[None], len(deltas), axis=0)
        thetas[:, start : start + deltas.shape[1]] += deltas
        out = np.einsum("od,vd->vo", self.map, thetas)[:, :, None]  # (V, batch=6, 1)
        out[:, : self.nan_rows] = np.nan
        return out

    def __call__(self, theta):
        return float(np.sum((self.map @ theta - 1) ** 2))


def test_fisher_is_refreshed_every_t_ud_iterations_and_counted_in_the_budget():
    oracle = QuadraticOracle(8)
    opt = nevergrad_zonp.ZerothOrder(fisher_period=5, num_directions=3, fisher_refresh="sampled")(
        parametrization=oracle.parametrization, budget=200
    )
    opt.minimize(oracle)
    iterations = opt._num_iterations
    refreshes = -(-iterations // 5)
    assert opt.num_fisher_updates == refreshes
    assert opt.num_fisher_queries == oracle.calls == refreshes * 9
    assert opt.num_queries == opt.num_ask + opt.num_fisher_queries <= 200
    expected = QuadraticOracle(8).map.T @ QuadraticOracle(8).map / 6
    np.testing.assert_allclose(
        opt.sampling_covariance(0), normalised_natural_covariance(expected, 0.1), rtol=1e-3, atol=1e-5
    )


def test_least_recent_refresh_estimates_every_block_once_before_any_twice():
    oracle = QuadraticOracle(28)  # 7 blocks of 4; a refresh costs 5 queries, an iteration 4
    settings = dict(fisher_period=2, num_directions=3, max_block_size=4)
    opt = nevergrad_zonp.ZerothOrder(fisher_refresh="least_recent", **settings)(oracle.parametrization, budget=200)
    opt.minimize(oracle)
    assert opt.num_blocks == 7 and opt.num_fisher_updates >= 14
    assert opt.num_blocks_with_fisher == 7
    # refreshes went round the blocks (never-estimated first, then the oldest): the latest
    # refresh of each block is one of the last 7 refresh iterations, each block a different one
    latest = sorted(opt.fisher_schedule.last_refresh)
    assert np.all(np.diff(latest) == settings["fisher_period"])
    paper = nevergrad_zonp.ZerothOrder(**settings)(oracle.parametrization, budget=40)
    paper.minimize(oracle)  # 4 refreshes of blocks drawn at random: at most 4 blocks covered
    assert paper.num_blocks_with_fisher <= 4
    with pytest.raises(ValueError, match="fisher_refresh"):
        nevergrad_zonp.ZerothOrder(fisher_refresh="oldest")


def test_a_refresh_that_would_leave_less_budget_than_it_costs_is_skipped():
    oracle = QuadraticOracle(8)  # a refresh costs 9 queries, an iteration 4
    opt = nevergrad_zonp.ZerothOrder(fisher_period=5, num_directions=3, fisher_refresh="sampled")(
        parametrization=oracle.parametrization, budget=40
    )
    opt.minimize(oracle)
    # refresh at iteration 0 (9 queries, 31 left), 5 iterations (20, 11 left): the refresh
    # at iteration 5 would leave 2 < 9 queries, so it is skipped and the budget funds steps:
    # two more iterations (3 left), then one of 1 direction and the last query on the iterate
    assert opt.num_fisher_updates == 1 and opt.num_fisher_skipped == 1
    assert opt.num_queries == 40 and opt.num_steps == 8


def test_nan_outputs_never_reach_the_fisher():
    oracle = QuadraticOracle(8, nan_rows=2)
    opt = nevergrad_zonp.ZerothOrder(fisher_period=2, num_directions=3)(parametrization=oracle.parametrization, budget=100)
    with pytest.warns(InvalidQueryWarning):
        opt.minimize(oracle)
    assert opt.num_fisher_updates > 0 and np.all(np.isfinite(opt.sampling_covariance(0)))
    all_nan = QuadraticOracle(8, nan_rows=6)
    opt = nevergrad_zonp.ZerothOrder(fisher_period=2, num_directions=3)(parametrization=all_nan.parametrization, budget=100)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opt.minimize(all_nan)
    assert opt.num_fisher_updates == 0
    np.testing.assert_allclose(opt.sampling_covariance(0), np.eye(8) / 1.1)
    assert np.all(np.isfinite(opt.recommend().value))


def test_optimizer_linear_algebra_runs_on_one_blas_thread_and_the_network_on_the_users(monkeypatch):
    threadpoolctl = pytest.importorskip("threadpoolctl")

    def blas_threads():
        return {lib["num_threads"] for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas"}

    seen = {"shape": set(), "update": set(), "oracle": set()}
    for name in ("shape", "update"):  # the draw's linear algebra (noise -> directions) and the Fisher update
        original = getattr(NaturalSampler, name)

        def recorded(self, *args, _original=original, _name=name):
            seen[_name] |= blas_threads()
            return _original(self, *args)

        monkeypatch.setattr(NaturalSampler, name, recorded)
    oracle = QuadraticOracle(8)
    original_outputs = oracle.block_outputs

    def outputs(*args):
        seen["oracle"] |= blas_threads()
        return original_outputs(*args)

    oracle.block_outputs = outputs
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        opt = nevergrad_zonp.ZerothOrder(fisher_period=5, num_directions=3)(parametrization=oracle.parametrization, budget=60)
        opt.minimize(oracle)
        after = blas_threads()
    assert opt.num_fisher_updates >= 1
    assert seen["shape"] == {1} and seen["update"] == {1}
    assert seen["oracle"] == {2} and after == {2}


def test_minimize_spends_the_budget_and_later_asks_still_work():
    opt = ng.optimizers.registry["ZOI"](parametrization=3, budget=25)
    opt.minimize(lambda x: float(np.sum(x**2)))
    assert opt.num_ask == 25 and opt.num_tell == 25  # 11 + 11 + (1 direction + base) + the final iterate
    assert opt.num_steps == 3
    beyond = opt.ask()  # Nevergrad allows asks beyond the budget
    opt.tell(beyond, float(np.sum(beyond.value**2)))
    assert opt.num_ask == 26


def test_attach_refuses_a_mismatched_parametrization():
    oracle = QuadraticOracle(8)
    with pytest.raises(ValueError, match="parameters"):
        ng.optimizers.registry["ZONP"](parametrization=5, budget=10).attach(oracle)
    with pytest.raises(ValueError, match="plain ng.p.Array"):
        ng.optimizers.registry["ZONP"](parametrization=ng.p.Array(shape=(8,)).set_mutation(sigma=2.0), budget=10).attach(
            oracle
        )
    with pytest.raises(TypeError, match="output oracle"):
        ng.optimizers.registry["ZONP"](parametrization=8, budget=10).attach(lambda x: 0.0)


def test_dump_load_with_an_oracle_reattached_continues_identically(tmp_path):
    def run(dump: bool) -> np.ndarray:
        oracle = QuadraticOracle(8)
        oracle.parametrization.random_state.seed(0)
        opt = nevergrad_zonp.ZerothOrder(fisher_period=3, num_directions=3)(parametrization=oracle.parametrization, budget=10_000)
        opt.attach(oracle)
        for i in range(300):
            if dump and i == 150:
                opt.dump(tmp_path / "zonp.pkl")
                opt = nevergrad_zonp.ZONP.load(tmp_path / "zonp.pkl")
                opt.attach(oracle)
            candidate = opt.ask()
            opt.tell(candidate, oracle(candidate.value))
        return opt.recommend().value

    np.testing.assert_array_equal(run(False), run(True))


def test_sampling_is_independent_of_torch_global_state():
    first = ng.optimizers.registry["ZOI"](parametrization=4, budget=100)
    first.parametrization.random_state.seed(0)
    torch.manual_seed(123)
    a = [first.ask().value for _ in range(11)]
    second = ng.optimizers.registry["ZOI"](parametrization=4, budget=100)
    second.parametrization.random_state.seed(0)
    torch.manual_seed(999)
    b = [second.ask().value for _ in range(11)]
    np.testing.assert_array_equal(np.array(a), np.array(b))


@pytest.mark.parametrize("storage", ["float32", "float16", "float64"])
@pytest.mark.parametrize("rank", [None, 30, 4])
def test_compact_and_low_precision_fishers_keep_the_sampling_statistics(rank, storage):
    """Rank >= the Fisher's rank (4 here) loses nothing; float16 storage keeps the covariance to ~1e-3."""
    n, rho = 30, 0.1
    fisher = random_fisher(n, rank=4, seed=0)
    sampler = NaturalSampler(damping=rho, smoothing=1.0, rank=rank, storage=storage)
    assert sampler.update(0, fisher)
    expected = normalised_natural_covariance(fisher, rho)
    tolerance = 5e-3 if storage == "float16" else 1e-5
    np.testing.assert_allclose(sampler.covariance(0, n), expected, rtol=0, atol=tolerance * np.abs(expected).max())
    draws = sampler.sample(np.random.RandomState(1), 0, n, 200_000)
    empirical = draws.T @ draws / len(draws)
    assert np.linalg.norm(empirical - expected) / np.linalg.norm(expected) < 0.02
    stored = sampler.factors[0]
    assert stored.dtype == np.dtype(storage)
    assert stored.shape == ((n, n) if rank is None else (n, min(rank, n)))
    assert sampler.block_bytes(n) == (stored.nbytes if rank is None else stored.nbytes + 8 * min(rank, n))


@pytest.mark.parametrize("storage", ["float32", "float16", "float64"])
@pytest.mark.parametrize("order", ["C", "F"])
def test_full_factor_draws_equal_scipys_triangular_solve_bit_for_bit(storage, order):
    """The draw calls LAPACK's trtrs directly: the numbers solve_triangular(L, r, lower=True, trans="T") gives."""
    from scipy.linalg import solve_triangular

    n = 37
    sampler = NaturalSampler(damping=0.1, smoothing=1.0, storage=storage)
    assert sampler.update(0, random_fisher(n, rank=12, seed=4))
    sampler.factors[0] = np.asarray(sampler.factors[0], order=order)
    work = np.float64 if storage == "float64" else np.float32
    for noise in (np.random.RandomState(5).normal(size=(n, 9)), np.random.RandomState(6).normal(size=(n, 3)).astype(np.float32)):
        expected = solve_triangular(
            sampler.factors[0].astype(work), noise.astype(work), lower=True, trans="T", check_finite=False
        ).T.astype(np.float64)
        drawn = sampler.shape(0, noise)
        assert drawn.dtype == np.float64
        np.testing.assert_array_equal(drawn, expected)
    assert sampler.shape(0, np.zeros((n, 0))).shape == (0, n)


def test_a_truncated_rank_drops_the_small_eigenvalues_only():
    n, rho, rank = 20, 0.1, 3
    fisher = random_fisher(n, rank=8, seed=3)
    compact = NaturalSampler(damping=rho, smoothing=1.0, rank=rank)
    assert compact.update(0, fisher)
    normalised = fisher * n / np.trace(fisher)
    values, vectors = np.linalg.eigh(normalised)
    top = vectors[:, -rank:]
    truncated = (top * values[-rank:]) @ top.T
    np.testing.assert_allclose(compact.covariance(0, n), np.linalg.inv(truncated + rho * np.eye(n)), rtol=1e-4, atol=1e-4)
    full = NaturalSampler(damping=rho, smoothing=1.0)
    full.update(0, fisher)
    assert np.linalg.norm(compact.covariance(0, n) - full.covariance(0, n)) > 1e-2  # the test can tell them apart


def test_a_subnormal_trace_is_kept_out():
    n, rho = 6, 0.1
    sampler = NaturalSampler(damping=rho, smoothing=1.0)
    good = random_fisher(n, rank=3, seed=0)
    assert sampler.update(0, good)
    kept = sampler.factors[0].copy()
    assert not sampler.update(0, good * (1e-310 / np.trace(good)))  # n / trace overflows: an inf factor before
    np.testing.assert_array_equal(sampler.factors[0], kept)
    assert np.all(np.isfinite(sampler.sample(np.random.RandomState(0), 0, n, 5)))


def test_compact_smoothing_blends_with_the_stored_low_rank_estimate():
    n, rho = 16, 0.1
    first, second = random_fisher(n, rank=2, seed=1), random_fisher(n, rank=2, seed=2)
    compact = NaturalSampler(damping=rho, smoothing=0.5, rank=n)  # full rank: must equal the dense form
    dense = NaturalSampler(damping=rho, smoothing=0.5)
    for fisher in (first, second):
        assert compact.update(0, fisher) and dense.update(0, fisher)
    np.testing.assert_allclose(compact.covariance(0, n), dense.covariance(0, n), rtol=1e-4, atol=1e-4)
    assert not compact.fishers  # no dense matrix kept


@pytest.mark.parametrize("rank", [4, 8])
def test_compact_smoothing_keeps_the_priors_isotropic_share_when_the_rank_covers_the_estimates(rank):
    # A review's case: rank-2 estimates, r >= the blend's rank but < n. Truncating the dense blend
    # dropped (1 - alpha) I outside the kept eigenvectors (largest variance 9.69 where 1.63 is right).
    n, rho, alpha = 12, 0.1, 0.5
    first, second = random_fisher(n, rank=2, seed=1), random_fisher(n, rank=2, seed=2)
    compact = NaturalSampler(damping=rho, smoothing=alpha, rank=rank, storage="float64")
    dense = NaturalSampler(damping=rho, smoothing=alpha, storage="float64")
    for step, fisher in enumerate((first, second)):
        assert compact.update(0, fisher) and dense.update(0, fisher)
        expected = dense.covariance(0, n)
        np.testing.assert_allclose(compact.covariance(0, n), expected, rtol=1e-9, atol=1e-12)
        draws = compact.shape(0, np.eye(n))  # the draws' linear map M: covariance M^T M
        np.testing.assert_allclose(draws.T @ draws, expected, rtol=1e-9, atol=1e-12)
        assert compact.levels[0] == pytest.approx((1 - alpha) ** (step + 1))
    optimizer = nevergrad_zonp.ZerothOrder(fisher_rank=rank, smoothing=alpha)(parametrization=n, budget=50)
    assert optimizer.sampler.rank == rank  # the combination is accepted


def test_compact_fisher_optimizer_trains_and_its_memory_check_counts_the_basis():
    blocks = block_bounds(4096, 4096)
    with pytest.raises(MemoryError, match="fisher_rank"):
        check_fisher_memory(blocks, 1, 4, available=10**7)
    compact_bytes = check_fisher_memory(blocks, 1, 4, available=10**9, rank=16)
    assert compact_bytes < 4 * 4096 * 16 + 8 * 16 + 3 * 8 * 4096**2 + 1
    for bad in ({"fisher_rank": 0}, {"fisher_rank": 2.5}, {"fisher_storage": "int8"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            nevergrad_zonp.ZerothOrder(**bad)
    opt = nevergrad_zonp.ZerothOrder(fisher_rank=5, fisher_storage="float16", num_directions=20)(parametrization=12, budget=10**4)
    opt.sampler.update(0, random_fisher(12, rank=3, seed=4))
    assert opt.sampler.factors[0].shape == (12, 5) and opt.sampler.factors[0].dtype == np.float16
    iteration = opt._start_iteration()
    assert iteration.directions.shape == (20, 12) and np.all(np.isfinite(iteration.directions))


@pytest.mark.parametrize("update", ["adam", "sgd", "sign"])
def test_update_rules_take_their_documented_step(update):
    """One iteration on a linear loss, where forward differences are exact: the step is the rule's."""
    dimension, lr, q = 6, 0.05, 4
    slope = np.linspace(-1.0, 2.0, dimension)
    # Seeded: the reconstructed estimate cancels to ~1e-6 relative on some draws (about 1 run in 30 unseeded)
    parametrization = ng.p.Array(shape=(dimension,))
    parametrization.random_state.seed(0)
    optimizer = nevergrad_zonp.ZerothOrder(sampler="isotropic", num_directions=q, lr=lr, update=update)(
        parametrization=parametrization, budget=100
    )
    request = optimizer.ask_iteration()
    assert request.start == 0 and request.deltas.shape == (q + 1, dimension)  # one block
    losses = (request.theta[None] + request.deltas) @ slope
    x0 = optimizer._x.copy()
    optimizer.tell_iteration(request, losses)
    step = request.deltas[1:]  # mu / sqrt(n) * u_q
    mu_n = 1e-3 / np.sqrt(dimension)
    directions = step / mu_n
    lam = 1.0 if update == "sgd" else 1.0 / dimension
    grad = zo_gradient(float(losses[0]), losses[1:], directions, mu_n, lam)
    expected = {
        "adam": x0 - lr * grad / (np.abs(grad) + 1e-8),  # Adam's first step: lr * g / (|g| + eps)
        "sgd": x0 - lr * grad,
        "sign": x0 - lr * np.sign(grad),
    }[update]
    np.testing.assert_allclose(optimizer._x, expected, rtol=1e-6, atol=1e-12)


def test_update_rule_is_validated_and_its_presets_are_registered():
    with pytest.raises(ValueError, match="update must be one of"):
        nevergrad_zonp.ZerothOrder(update="rmsprop")
    assert ng.optimizers.registry["ZOSGD"].update == "sgd"
    assert ng.optimizers.registry["ZOSignSGD"].update == "sign"
    assert ng.optimizers.registry["ZOSGD"].sampler == "isotropic"


def test_per_block_refresh_estimates_a_block_at_its_first_use_and_every_fisher_period_uses_of_it():
    oracle = QuadraticOracle(28)  # 7 blocks of 4
    opt = nevergrad_zonp.ZerothOrder(fisher_refresh="per_block", fisher_period=3, num_directions=3, max_block_size=4)(
        oracle.parametrization, budget=10_000
    )
    opt.attach(oracle)
    blocks, refreshed = [], []
    start, refresh = opt._start_iteration, opt.refresh_fisher

    def recording_start():
        iteration = start()
        blocks.append(iteration.block)
        return iteration

    def recording_refresh(block, *args):
        refreshed.append((len(blocks), block))  # the iteration being started, not yet appended
        return refresh(block, *args)

    opt._start_iteration, opt.refresh_fisher = recording_start, recording_refresh
    for _ in range(120):  # asks of 4 queries: 30 iterations, far from the budget
        candidate = opt.ask()
        opt.tell(candidate, oracle(candidate.value))
    uses = {block: 0 for block in range(7)}
    expected = []
    for index, block in enumerate(blocks):
        if uses[block] % 3 == 0:
            expected.append((index, block))
        uses[block] += 1
    assert len(blocks) == 30 and len(set(blocks)) >= 6 and len(expected) > len(set(blocks))  # some blocks twice
    assert refreshed == expected
    assert opt.num_fisher_updates == len(expected) and opt.num_blocks_with_fisher == len(set(blocks))
    with pytest.raises(ValueError, match="per_block"):
        nevergrad_zonp.ZerothOrder(fisher_refresh="per-block")


def _first_iteration(stream: str, sampler: str = "isotropic") -> np.ndarray:
    optimizer = nevergrad_zonp.ZerothOrder(sampler=sampler, num_directions=4, direction_stream=stream)(
        parametrization=6, budget=100
    )
    optimizer.parametrization.random_state.seed(3)  # seeded after the optimizer is built: it counts
    return np.array([optimizer.ask().value for _ in range(5)])


def test_the_legacy_direction_stream_is_numpys_random_state_as_before():
    rng = np.random.RandomState(3)
    rng.randint(1)  # the block
    noise = rng.normal(size=(4, 6))
    directions = noise * (math.sqrt(6) / np.linalg.norm(noise, axis=1, keepdims=True))
    expected = np.vstack([np.zeros(6), (1e-3 / math.sqrt(6)) * directions])
    np.testing.assert_array_equal(_first_iteration("legacy"), expected)  # bit for bit


def test_the_torch_direction_stream_is_seeded_from_the_nevergrad_random_state():
    rng = np.random.RandomState(3)
    rng.randint(1)  # the block
    generator = torch.Generator().manual_seed(int(rng.randint(2**63 - 1, dtype=np.int64)))
    noise = torch.randn((4, 6), generator=generator).double().numpy()
    directions = noise * np.sqrt(6) / np.linalg.norm(noise, axis=1, keepdims=True)
    expected = np.vstack([np.zeros(6), 1e-3 / np.sqrt(6) * directions])
    first = _first_iteration("torch")
    np.testing.assert_allclose(first, expected, rtol=1e-6, atol=1e-12)  # normalised in float32
    np.testing.assert_array_equal(first, _first_iteration("torch"))  # same seed, same draws
    assert not np.allclose(first, _first_iteration("legacy"))


def test_coordinate_directions_are_the_same_on_both_streams():
    np.testing.assert_array_equal(_first_iteration("torch", "coordinate"), _first_iteration("legacy", "coordinate"))


def test_an_unknown_direction_stream_is_refused():
    with pytest.raises(ValueError, match="direction_stream"):
        nevergrad_zonp.ZerothOrder(direction_stream="pcg64")


@pytest.mark.parametrize("stream", ["torch", "legacy"])
def test_a_pickled_optimizer_continues_with_the_same_directions(stream):
    import pickle

    optimizer = nevergrad_zonp.ZerothOrder(sampler="isotropic", num_directions=3, direction_stream=stream)(
        parametrization=5, budget=1000
    )
    optimizer.parametrization.random_state.seed(1)
    for _ in range(8):
        candidate = optimizer.ask()
        optimizer.tell(candidate, float(np.sum(candidate.value**2)))
    loaded = pickle.loads(pickle.dumps(optimizer))
    asked = [[current.ask().value for _ in range(4)] for current in (optimizer, loaded)]
    np.testing.assert_array_equal(asked[0], asked[1])


def test_every_warning_class_is_importable_from_the_package():
    import warnings as _warnings

    from nevergrad_zonp.learned.optimizer import TrainedSettingsWarning
    from nevergrad_zonp.optimizers.zeroth_order import FlatQueriesWarning, UntoldQueriesWarning

    for cls in (
        InvalidQueryWarning, FlatQueriesWarning, UntoldQueriesWarning, NaturalPerturbationsInactiveWarning,
        TrainedSettingsWarning,
    ):
        assert getattr(nevergrad_zonp, cls.__name__) is cls and cls.__name__ in nevergrad_zonp.__all__
        assert issubclass(cls, UserWarning)

    def invalid_query_warnings(ignored: bool) -> int:  # the use it is for: a filter by class
        opt = nevergrad_zonp.ZOI(parametrization=3, budget=40)
        with _warnings.catch_warnings(record=True) as caught:
            _warnings.simplefilter("always")
            if ignored:
                _warnings.filterwarnings("ignore", category=nevergrad_zonp.InvalidQueryWarning)
            for _ in range(40):
                candidate = opt.ask()
                opt.tell(candidate, math.nan)
        return sum(issubclass(w.category, nevergrad_zonp.InvalidQueryWarning) for w in caught)

    assert invalid_query_warnings(ignored=False) > 0 and invalid_query_warnings(ignored=True) == 0
