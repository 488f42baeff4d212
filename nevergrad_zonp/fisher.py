"""Black-box Fisher information of a network from a finite-difference Jacobian of its outputs.

ZO-NP (docs/method.md, "Blocks and the black-box Fisher") never differentiates the network.  For
the block ``b`` of
``n`` parameters being perturbed it queries the network *outputs* ``s_i(theta)`` on the
current mini-batch at ``theta`` and at ``theta + h e_j`` for every coordinate ``j`` of the
block (``n + 1`` queries), forms the forward-difference Jacobian
``J_i = [s_i(theta + h e_j) - s_i(theta)] / h`` and the Fisher information matrix

    F_b = mean_i  J_i^T H_i J_i,

where ``H_i`` is the Hessian of the negative log-likelihood of the output model in the
output space:

- categorical (logits ``s``): ``H = diag(p) - p p^T`` with ``p = softmax(s)``;
- Gaussian regression (unit variance): ``H = I``;
- complex outputs: real and imaginary parts as independent Gaussian outputs, so
  ``J^T H J = Re(J)^T Re(J) + Im(J)^T Im(J) = Re(J^H J)``;
- sequences: every axis between the batch axis and the event axis (time steps,
  positions) is summed over, so ``F = mean_i sum_t J_it^T H_it J_it``.

Shapes: ``outputs`` is ``(batch, *event)``, ``jacobian`` is ``(batch, *event, n)``.  For the
categorical model the last event axis holds the classes.
"""

from __future__ import annotations

import numpy as np

OUTPUT_MODELS = ("categorical", "gaussian", "complex")


def check_output_model(output: str) -> str:
    """Returns ``output`` if it names a supported output model, else raises ``ValueError``."""
    if output not in OUTPUT_MODELS:
        raise ValueError(f"Unknown output model {output!r}: expected one of {OUTPUT_MODELS}")
    return output


def finite_difference_jacobian(base: np.ndarray, perturbed: np.ndarray, step: float) -> np.ndarray:
    """Forward-difference Jacobian ``(batch, *event, n)`` from outputs at ``theta`` and ``theta + h e_j``.

    ``base`` is ``(batch, *event)``; ``perturbed`` is ``(n, batch, *event)``, row ``j`` holding
    the outputs with coordinate ``j`` of the block displaced by ``step``.
    """
    if perturbed.shape[1:] != base.shape:
        raise ValueError(
            f"perturbed outputs of shape {perturbed.shape} do not match base outputs {base.shape} "
            "(expected (n, *base.shape))"
        )
    return np.moveaxis((perturbed - base[None]) / step, 0, -1)


#: Below this largest ``1 - max_c p_c`` over the rows, the categorical Fisher is formed centred
#: (the two-term form loses its accuracy there: a relative error of 100 % at margins of 40).
SATURATED = 1e-10


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    expo = np.exp(shifted)
    return expo / expo.sum(axis=-1, keepdims=True)


def fisher_from_jacobian(jacobian: np.ndarray, outputs: np.ndarray, output: str) -> np.ndarray:
    """Fisher information ``mean_i J_i^T H_i J_i`` (float64, ``n x n``) for the given output model.

    Raises ``ValueError`` on inconsistent shapes or non-finite values: callers drop the
    samples whose outputs are not finite before calling.
    """
    check_output_model(output)
    if jacobian.shape[:-1] != outputs.shape:
        raise ValueError(f"jacobian shape {jacobian.shape} must be outputs shape {outputs.shape} + (n,)")
    if not (np.all(np.isfinite(jacobian)) and np.all(np.isfinite(outputs))):
        raise ValueError("Fisher estimation received non-finite outputs or Jacobian entries")
    batch, n = outputs.shape[0], jacobian.shape[-1]
    if output == "complex":
        jac = np.concatenate([jacobian.real, jacobian.imag], axis=-2).reshape(-1, n).astype(np.float64)
        return (jac.T @ jac) / batch
    jac = jacobian.reshape(-1, n).astype(np.float64)
    if output == "gaussian":
        return (jac.T @ jac) / batch
    if outputs.ndim < 2:
        raise ValueError("categorical outputs need a class axis: expected (batch, ..., classes)")
    classes = outputs.shape[-1]
    probs = _softmax(outputs.astype(np.float64)).reshape(-1, classes)
    jac3 = jacobian.reshape(-1, classes, n).astype(np.float64)
    mean_rows = np.einsum("rc,rcn->rn", probs, jac3)  # J^T p for every (sample, step)
    if float(np.max(1.0 - probs.max(axis=1))) < SATURATED:
        # Every row's softmax is saturated: W^T W - (J^T p)^T (J^T p) would cancel to rounding
        # noise (an indefinite matrix), so the centred form sum_c p_c (J_c - J^T p)^T (J_c - J^T p),
        # equal in exact arithmetic and PSD by construction.
        centred = ((jac3 - mean_rows[:, None, :]) * np.sqrt(probs)[:, :, None]).reshape(-1, n)
        return (centred.T @ centred) / batch
    weighted = (jac3 * np.sqrt(probs)[:, :, None]).reshape(-1, n)
    return (weighted.T @ weighted - mean_rows.T @ mean_rows) / batch
