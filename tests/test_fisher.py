"""The black-box Fisher against exact autograd Fishers, for every output model."""

import numpy as np
import pytest
import torch

import nevergrad_zonp
from nevergrad_zonp.fisher import finite_difference_jacobian, fisher_from_jacobian


def exact_fisher(model: torch.nn.Module, inputs: torch.Tensor, output: str) -> np.ndarray:
    """mean_i J_i^T H_i J_i with J from autograd (float64)."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    names = list(params)

    def flat_outputs(flat: torch.Tensor) -> torch.Tensor:
        chunks, offset = {}, 0
        for name in names:
            size = params[name].numel()
            chunks[name] = flat[offset : offset + size].reshape(params[name].shape)
            offset += size
        return torch.func.functional_call(model, chunks, (inputs,))

    theta = torch.cat([params[n].reshape(-1) for n in names])
    jac = torch.autograd.functional.jacobian(flat_outputs, theta).numpy()  # (B, *event, n)
    outputs = flat_outputs(theta).detach().numpy()
    batch = outputs.shape[0]
    if output == "gaussian":
        rows = jac.reshape(-1, jac.shape[-1])
        return rows.T @ rows / batch
    total = 0
    for jac_i, logits in zip(jac.reshape(-1, outputs.shape[-1], jac.shape[-1]), outputs.reshape(-1, outputs.shape[-1])):
        p = np.exp(logits - logits.max())
        p /= p.sum()
        total = total + jac_i.T @ (np.diag(p) - np.outer(p, p)) @ jac_i
    return total / batch


def adapter_fisher(adapter: nevergrad_zonp.ModelAdapter, step: float = 1e-3) -> np.ndarray:
    n = adapter.dimension
    deltas = np.vstack([np.zeros((1, n)), step * np.eye(n)])
    out = adapter.block_outputs(adapter.theta0, 0, deltas, key=0)
    return fisher_from_jacobian(finite_difference_jacobian(out[0], out[1:], step), out[0], adapter.output)


def relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_linear_softmax_finite_difference_fisher_matches_autograd():
    torch.manual_seed(0)
    model = torch.nn.Linear(6, 4)
    inputs, targets = torch.randn(50, 6), torch.randint(0, 4, (50,))
    adapter = nevergrad_zonp.ModelAdapter(model, (inputs, targets), output="categorical", batch_size=None)
    model64 = torch.nn.Linear(6, 4).double()
    model64.load_state_dict({k: v.double() for k, v in model.state_dict().items()})
    exact = exact_fisher(model64, inputs.double(), "categorical")
    assert relative(adapter_fisher(adapter), exact) < 1e-2
    # the categorical Hessian is not the identity: the Gaussian formula would be far off
    assert relative(exact_fisher(model64, inputs.double(), "gaussian"), exact) > 0.5


def test_gaussian_fisher_of_a_linear_model_is_exact():
    torch.manual_seed(1)
    model = torch.nn.Linear(3, 2).double()
    inputs = torch.randn(20, 3, dtype=torch.float64)
    adapter = nevergrad_zonp.ModelAdapter(model, (inputs, torch.zeros(20, 2)), output="gaussian", batch_size=None)
    np.testing.assert_allclose(adapter_fisher(adapter), exact_fisher(model, inputs, "gaussian"), rtol=1e-6, atol=1e-8)


def test_complex_outputs_count_real_and_imaginary_parts_as_gaussian():
    rng = np.random.RandomState(0)
    jac = rng.normal(size=(5, 3, 4)) + 1j * rng.normal(size=(5, 3, 4))
    outputs = rng.normal(size=(5, 3)) + 1j * rng.normal(size=(5, 3))
    stacked = np.concatenate([jac.real, jac.imag], axis=1)
    expected = np.einsum("bon,bom->nm", stacked, stacked) / 5
    np.testing.assert_allclose(fisher_from_jacobian(jac, outputs, "complex"), expected)
    np.testing.assert_allclose(expected, np.real(np.einsum("bon,bom->nm", jac.conj(), jac)) / 5)


def test_sequence_fisher_sums_over_time_steps():
    rng = np.random.RandomState(1)
    jac = rng.normal(size=(4, 6, 5, 3))  # batch 4, 6 steps, 5 classes, 3 parameters
    logits = rng.normal(size=(4, 6, 5))
    per_step = sum(fisher_from_jacobian(jac[:, t], logits[:, t], "categorical") for t in range(6))
    np.testing.assert_allclose(fisher_from_jacobian(jac, logits, "categorical"), per_step)


def test_categorical_fisher_ignores_shifts_of_all_logits():
    """H 1 = 0: a perturbation that shifts every logit equally carries no information."""
    rng = np.random.RandomState(2)
    logits = rng.normal(size=(8, 5))
    jac = np.repeat(rng.normal(size=(8, 1, 2)), 5, axis=1)  # every class moves the same
    np.testing.assert_allclose(fisher_from_jacobian(jac, logits, "categorical"), 0, atol=1e-12)
    fisher = fisher_from_jacobian(rng.normal(size=(8, 5, 4)), logits, "categorical")
    assert np.all(np.linalg.eigvalsh(fisher) > -1e-12)


def test_bad_fisher_inputs_are_named():
    with pytest.raises(ValueError, match="non-finite"):
        fisher_from_jacobian(np.full((2, 3, 1), np.nan), np.zeros((2, 3)), "gaussian")
    with pytest.raises(ValueError, match="shape"):
        fisher_from_jacobian(np.zeros((2, 3, 1)), np.zeros((2, 4)), "gaussian")
    with pytest.raises(ValueError, match="output model"):
        fisher_from_jacobian(np.zeros((2, 3, 1)), np.zeros((2, 3)), "poisson")
    with pytest.raises(ValueError, match="perturbed outputs"):
        finite_difference_jacobian(np.zeros((2, 3)), np.zeros((4, 2, 2)), 1e-3)


@pytest.mark.parametrize("margin", [10.0, 30.0, 40.0])
def test_the_categorical_fisher_stays_exact_and_psd_when_every_softmax_saturates(margin):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(8, 10))
    logits[np.arange(8), rng.integers(0, 10, 8)] += margin
    jacobian = rng.normal(size=(8, 10, 20))
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    mean = np.einsum("rc,rcn->rn", probs, jacobian)
    centred = [np.einsum("c,cn,cm->nm", p, j - m, j - m) for p, j, m in zip(probs, jacobian, mean)]
    exact = sum(centred) / 8  # sum_c p_c (J_c - J^T p)^T (J_c - J^T p), PSD by construction
    fisher = fisher_from_jacobian(jacobian, logits, "categorical")
    # the two-term form W^T W - (J^T p)^T (J^T p) lost it all at a margin of 40 (an indefinite matrix)
    np.testing.assert_allclose(fisher, exact, rtol=1e-9, atol=1e-12 * np.abs(exact).max())
    assert np.linalg.eigvalsh(fisher).min() >= -1e-12 * np.abs(exact).max()
