"""Black-box adversarial attack benchmark (Ruan et al., ICLR 2020): data, losses, adapter, ZO attacks."""

import dataclasses
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import nevergrad_zonp
from nevergrad_zonp.tasks import (
    AttackProblem,
    attack_problems,
    margin_loss,
    margin_loss_per_setting,
    margins,
    train_attack_classifier,
)
from nevergrad_zonp.tasks.attack import DIMENSION, INITIAL_SCALE


@pytest.fixture(scope="module")
def attacks():
    return attack_problems(seed=0)


@pytest.fixture(scope="module")
def problem(attacks):
    return attacks.train[0]


def zo_attack(problem: AttackProblem, sampler: str, budget: int, lr: float, seed: int = 0):
    adapter = problem.adapter(seed=seed)
    optimizer = nevergrad_zonp.ZerothOrder(
        sampler=sampler, num_directions=20, lr=lr, max_block_size=DIMENSION, lr_schedule="constant"
    )(parametrization=adapter.parametrization, budget=budget)
    optimizer.parametrization.random_state.seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        recommendation = nevergrad_zonp.minimize_vectorized(optimizer, adapter)
    return optimizer, adapter, recommendation.value


# ----- data and classifier ---------------------------------------------------------------
def test_splits_are_disjoint_correctly_classified_and_nested(attacks):
    assert attacks.classifier_accuracy > 0.95
    assert len(attacks.train) == len(attacks.test) == 100
    assert {p.split for p in attacks.train} == {"train"} and {p.split for p in attacks.test} == {"test"}
    for problems in (attacks.train, attacks.test):
        assert len({p.index for p in problems}) == len(problems)
        images = torch.stack([p.image for p in problems])
        labels = torch.tensor([p.label for p in problems])
        with torch.no_grad():
            assert torch.equal(attacks.classifier(images).argmax(dim=1), labels)
    train_images = {p.image.numpy().tobytes() for p in attacks.train}
    assert not any(p.image.numpy().tobytes() in train_images for p in attacks.test)
    assert all(p.classifier is attacks.classifier and p.dimension == DIMENSION == 784 for p in attacks.train)
    assert attacks.split("test") is attacks.test
    # seeded and nested: a smaller set is the prefix of the larger one
    small = attack_problems(seed=0, n_train=10, n_test=5)
    assert [p.index for p in small.train] == [p.index for p in attacks.train[:10]]
    assert [p.index for p in small.test] == [p.index for p in attacks.test[:5]]
    assert small.classifier_accuracy == attacks.classifier_accuracy


def test_classifier_is_frozen_copied_per_call_and_leaves_global_rng_alone():
    first = train_attack_classifier(seed=0)
    assert not first.training and not any(p.requires_grad for p in first.parameters())
    with torch.no_grad():
        first.classifier.bias.add_(100.0)  # must not leak into the cached weights
    second = train_attack_classifier(seed=0)
    assert second is not first
    assert not torch.equal(first.classifier.bias, second.classifier.bias)
    torch.manual_seed(123)
    state, threads = torch.get_rng_state(), torch.get_num_threads()
    train_attack_classifier(seed=7, epochs=1)
    assert torch.equal(torch.get_rng_state(), state) and torch.get_num_threads() == threads


# ----- losses ----------------------------------------------------------------------------
def test_margin_loss_on_hand_computed_logits():
    logits = torch.tensor([[2.0, 5.0, 1.0], [0.0, -1.0, 3.0], [4.0, 1.0, 0.0]])
    targets = torch.tensor([1, 2, 1])
    np.testing.assert_allclose(margins(logits, targets).numpy(), [3.0, 3.0, -3.0])
    log_p = F.log_softmax(logits, dim=1)  # the definition: log p_y - max_{j != y} log p_j
    by_definition = [log_p[0, 1] - log_p[0, 0], log_p[1, 2] - log_p[1, 0], log_p[2, 1] - log_p[2, 0]]
    np.testing.assert_allclose(margins(logits, targets).numpy(), by_definition, rtol=1e-6)
    assert float(margin_loss(logits, targets)) == pytest.approx((3 + 3 + 0) / 3)
    assert float(margin_loss(logits, targets, kappa=1.0)) == pytest.approx((3 + 3 - 1) / 3)
    assert float(margin_loss(logits, targets, kappa=5.0)) == pytest.approx((3 + 3 - 3) / 3)
    stacked = torch.stack([logits, logits.flip(1), 2 * logits])
    expected = [float(margin_loss(row, targets, kappa=1.0)) for row in stacked]
    np.testing.assert_allclose(margin_loss_per_setting(stacked, targets, kappa=1.0).numpy(), expected, rtol=1e-6)


def test_adapter_loss_equals_losses_and_splits_into_margin_and_penalty(problem):
    rng = np.random.default_rng(0)
    thetas = [problem.initial_delta(0)] + [0.05 * rng.normal(size=DIMENSION) for _ in range(3)]
    stacked = torch.from_numpy(np.stack(thetas))
    exact = problem.losses(stacked).detach().numpy()
    adapter = problem.adapter()
    np.testing.assert_allclose(adapter.loss_batch(thetas), exact, rtol=1e-12)
    assert adapter(thetas[1]) == pytest.approx(exact[1], rel=1e-12)
    single = problem.losses(stacked.float()).detach()
    assert single.dtype == torch.float32
    np.testing.assert_allclose(single.numpy(), exact, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(problem.adapter(dtype=torch.float32).loss_batch(thetas), exact, rtol=1e-5, atol=1e-4)
    # loss = max(margin, -kappa) + c ||delta||_1, the penalty outside the outputs
    no_penalty = dataclasses.replace(problem, c=0.0)
    penalty = exact - no_penalty.losses(stacked).detach().numpy()
    np.testing.assert_allclose(penalty, [0.1 * np.abs(t).sum() for t in thetas], rtol=1e-9)
    margin = margins(problem.logits(stacked), torch.full((4,), problem.label)).detach().numpy()
    np.testing.assert_allclose(no_penalty.losses(stacked).detach().numpy(), np.maximum(margin, 0.0), rtol=1e-12)
    # the outputs the Fisher sees are the logits of clamp(x + delta, 0, 1)
    deltas = 0.01 * rng.normal(size=(3, 5))
    outputs = adapter.block_outputs(thetas[1], 100, deltas, 0)
    moved = np.repeat(thetas[1][None], 3, axis=0)
    moved[:, 100:105] += deltas
    np.testing.assert_allclose(outputs[:, 0], problem.logits(torch.from_numpy(moved)).detach().numpy(), rtol=1e-12)
    # the adapter's loss carries its batched twin: one call for all settings, the loop's values bit for bit
    calls = []
    twin = adapter.loss.per_setting
    adapter.loss.per_setting = lambda out, targets: calls.append(len(out)) or twin(out, targets)
    for dtype in (torch.float64, torch.float32):
        out, targets = problem.adapter(dtype=dtype)._block_query(thetas[1], 100, 0.05 * rng.normal(size=(7, 9)), 0)
        looped = np.array([float(adapter.loss(row, targets)) for row in out])
        assert adapter._losses(out, targets).tobytes() == looped.tobytes()
    assert calls == [7, 7]
    report = problem.report(thetas[1])
    assert report["loss"] == pytest.approx(exact[1], rel=1e-12)
    assert adapter.evaluate(thetas[1]) == pytest.approx({"loss": report["loss"], "success": 0.0, "margin": report["margin"]})


def test_losses_are_differentiable_and_gradient_matches_finite_differences(problem):
    rng = np.random.default_rng(1)
    delta = 0.05 * rng.normal(size=DIMENSION)
    pixels = problem.image.double().flatten().numpy() + delta
    # coordinates away from the kinks: clamp inactive and |delta_i| well above the step
    usable = np.flatnonzero((pixels > 0.05) & (pixels < 0.95) & (np.abs(delta) > 0.01))
    gradient = problem.gradient(delta)
    assert gradient.shape == (DIMENSION,) and gradient.dtype == np.float64
    step = 1e-6
    for i in usable[:: max(1, len(usable) // 5)][:5]:
        plus, minus = delta.copy(), delta.copy()
        plus[i] += step
        minus[i] -= step
        values = problem.losses(torch.from_numpy(np.stack([plus, minus]))).detach().numpy()
        assert gradient[i] == pytest.approx((values[0] - values[1]) / (2 * step), rel=1e-5, abs=1e-7)
    for dtype in (torch.float32, torch.float64):
        deltas = torch.tensor(np.stack([delta, -delta]), dtype=dtype, requires_grad=True)
        problem.losses(deltas).sum().backward()
        assert deltas.grad.dtype == dtype and torch.isfinite(deltas.grad).all() and deltas.grad.abs().sum() > 0
    np.testing.assert_allclose(deltas.grad[0].numpy(), gradient, rtol=1e-9, atol=1e-12)


# ----- zeroth-order attacks ----------------------------------------------------------------
def test_isotropic_zo_attack_succeeds_with_small_distortion(problem):
    start = problem.report(problem.initial_delta(0))
    assert not start["success"] and start["margin"] > 0
    optimizer, adapter, delta = zo_attack(problem, "isotropic", budget=21 * 200, lr=4 / DIMENSION)
    result = problem.report(delta)
    assert adapter.queries == optimizer.num_ask == 21 * 200
    assert result["loss"] < 0.5 * start["loss"]
    assert result["success"] and result["prediction"] != problem.label
    assert 0 < result["l1"] < 60 and result["l2"] < result["l1"]
    # seeded: the same run twice gives the same perturbation
    np.testing.assert_array_equal(zo_attack(problem, "isotropic", budget=21 * 200, lr=4 / DIMENSION)[2], delta)


def test_zonp_runs_with_the_fisher_of_the_logits(problem):
    budget = 2 * (DIMENSION + 1) + 21 * 10  # a refresh is made only if as many queries are left after it
    optimizer, adapter, delta = zo_attack(problem, "natural", budget=budget, lr=8 / DIMENSION)
    assert optimizer.num_fisher_updates == 1 and optimizer.num_fisher_queries == DIMENSION + 1
    assert adapter.queries == budget
    assert problem.report(delta)["loss"] < problem.report(problem.initial_delta(0))["loss"]


def test_initial_perturbation_is_seeded_per_attack(attacks):
    first, other = attacks.train[0], attacks.test[0]
    delta = first.initial_delta(3)
    np.testing.assert_array_equal(delta, first.initial_delta(3))
    assert delta.shape == (DIMENSION,) and np.std(delta) == pytest.approx(INITIAL_SCALE, rel=0.1)
    assert not np.array_equal(delta, first.initial_delta(4))
    assert not np.array_equal(delta, other.initial_delta(3))
    np.testing.assert_array_equal(first.adapter(seed=3).theta0, delta)


# ----- errors ------------------------------------------------------------------------------
def test_bad_arguments_raise_named_errors(problem):
    with pytest.raises(ValueError, match="n_train must be a positive integer"):
        attack_problems(n_train=0)
    with pytest.raises(ValueError, match="n_test must be a positive integer"):
        attack_problems(n_test=-3)
    with pytest.raises(ValueError, match="only .* are correctly classified"):
        attack_problems(n_test=449)
    with pytest.raises(ValueError, match="c must be a finite number >= 0"):
        attack_problems(c=-0.1)
    with pytest.raises(ValueError, match="kappa must be a finite number >= 0"):
        attack_problems(kappa=float("nan"))
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        train_attack_classifier(epochs=0)
    with pytest.raises(ValueError, match=r"expected \(V, 784\)"):
        problem.losses(torch.zeros(DIMENSION))
    with pytest.raises(ValueError, match=r"expected \(V, 784\)"):
        problem.losses(torch.zeros(2, 783))
    with pytest.raises(ValueError, match="NaN or inf"):
        problem.losses(torch.full((1, DIMENSION), float("nan")))
    with pytest.raises(ValueError, match="float32 or float64"):
        problem.losses(torch.zeros(1, DIMENSION, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"expected \(784,\)"):
        problem.gradient(np.zeros(10))
    with pytest.raises(ValueError, match="NaN or inf"):
        problem.report(np.full(DIMENSION, np.inf))
    with pytest.raises(ValueError, match="dtype must be"):
        problem.adapter(dtype=torch.float16)
    with pytest.raises(ValueError, match="targets must lie in 0..2"):
        margin_loss(torch.zeros(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="integer class indices"):
        margin_loss(torch.zeros(2, 3), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"shape \(batch, classes\)"):
        margin_loss(torch.zeros(2, 2, 3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="image of shape"):
        dataclasses.replace(problem, image=torch.zeros(28, 28))
    with pytest.raises(ValueError, match="label must be an integer"):
        dataclasses.replace(problem, label=10)
    with pytest.raises(ValueError, match="split must be one of"):
        dataclasses.replace(problem, split="validation")
    # NaN perturbations through the black box give NaN losses (the optimizers handle them), not errors
    assert np.isnan(problem.adapter().loss_batch([np.full(DIMENSION, np.nan)])[0])
