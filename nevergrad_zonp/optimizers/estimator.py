"""The zeroth-order gradient estimate and the block-wise update rules (docs/method.md, "The
zeroth-order estimate").

With ``Q`` directions ``u_q`` and one shared base point, on one mini-batch,

    g = (lam / Q) * sum_q [(l(theta + mu u_q) - l(theta)) / mu] u_q,

costs ``Q + 1`` queries.  For exact directional derivatives and ``u ~ N(0, S)`` its mean is
``lam * S grad`` and the trace of its covariance is
``(lam^2 / Q) [(grad' S grad) tr S + grad' S^2 grad]``.

Update rules, one block per step: Adam (ZO-Adam, the default of every ZO preset), plain
SGD (ZO-SGD) and sign SGD (ZO-signSGD), the baselines of Ruan et al. (ICLR 2020).  Adam and
sign SGD do not see the scale ``lam`` of the estimate; SGD does, and is given the unbiased
scale ``lam = 1`` (``E[g] = grad`` for isotropic directions of norm ``sqrt(n)``), so its
learning rate means what it means in the ZO literature.

An update rule is a part of the ZO loop (:mod:`.loop`): ``step(params, grad, block, start,
stop, scale)`` moves ``params[start:stop]`` in place, ``reset(block, start, stop)`` forgets
the block's memory after a recovery, ``lr`` is the learning rate (``None`` for a rule
without one), ``unbiased_estimate`` says whether it is given ``lam = 1`` (else ``1 / n``)
and ``stale_estimates`` whether an estimate formed at a base point the iterate has left
since (an iteration asked ahead) is used.
"""

from __future__ import annotations

import numpy as np


def zo_gradient(base_loss: float, losses: np.ndarray, directions: np.ndarray, mu: float, lam: float) -> np.ndarray:
    """Forward-difference ZO estimate ``(lam / Q) sum_q (l_q - l_0) / mu * u_q``.

    ``losses`` has shape ``(Q,)`` and ``directions`` ``(Q, n)``; all entries must be finite.
    """
    losses = np.asarray(losses, dtype=np.float64)
    if directions.ndim != 2 or directions.shape[0] != losses.shape[0]:
        raise ValueError(f"directions {directions.shape} must be (Q, n) with Q = {losses.shape[0]} losses")
    if losses.size == 0:
        raise ValueError("at least one perturbed loss is needed")
    slopes = (losses - base_loss) / mu
    return (lam / losses.size) * (slopes @ directions)


class BlockAdam:
    """Adam (Kingma & Ba, 2015) with per-coordinate moments where each step touches one block.

    Moments ``m, v`` are kept for every coordinate; the bias correction uses the number of
    steps *that block* has taken, so a block stepped for the first time late in a run gets
    the same correction as at the start.
    """

    #: ``lam`` of the estimate this rule is given is ``1 / n``: Adam is invariant to its scale.
    unbiased_estimate = False
    #: estimates asked ahead, at a point the iterate has left since, are used
    stale_estimates = True

    def __init__(
        self, dimension: int, num_blocks: int, lr: float, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8
    ) -> None:
        if not lr > 0:
            raise ValueError(f"learning rate must be positive, got {lr}")
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.first = np.zeros(dimension)
        self.second = np.zeros(dimension)
        self.steps = np.zeros(num_blocks, dtype=np.int64)

    def reset(self, block: int, start: int, stop: int) -> None:
        """Forgets the moments of block ``block`` (``[start, stop)``): its next step is a first step."""
        self.first[start:stop] = 0.0
        self.second[start:stop] = 0.0
        self.steps[block] = 0

    def step(self, params: np.ndarray, grad: np.ndarray, block: int, start: int, stop: int, scale: float = 1.0) -> None:
        """In-place Adam update of ``params[start:stop]`` with gradient ``grad`` (block ``block``).

        ``scale`` multiplies the learning rate of this step (schedules, careful steps after a recovery).
        """
        self.steps[block] += 1
        t = self.steps[block]
        m = self.first[start:stop]
        v = self.second[start:stop]
        m *= self.beta1
        m += (1 - self.beta1) * grad
        v *= self.beta2
        v += (1 - self.beta2) * grad**2
        m_hat = m / (1 - self.beta1**t)
        v_hat = v / (1 - self.beta2**t)
        params[start:stop] -= (scale * self.lr) * m_hat / (np.sqrt(v_hat) + self.eps)


class BlockSGD:
    """Plain SGD on one block: ``params -= scale * lr * grad`` (ZO-SGD with an unbiased estimate)."""

    #: The estimate this rule is given has ``lam = 1`` (its mean is the gradient).
    unbiased_estimate = True
    #: estimates asked ahead, at a point the iterate has left since, are used
    stale_estimates = True

    def __init__(self, dimension: int, num_blocks: int, lr: float) -> None:
        if not lr > 0:
            raise ValueError(f"learning rate must be positive, got {lr}")
        self.lr = lr
        self.steps = np.zeros(num_blocks, dtype=np.int64)

    def reset(self, block: int, start: int, stop: int) -> None:
        """Nothing to forget (no moments); kept for the common interface."""

    def step(self, params: np.ndarray, grad: np.ndarray, block: int, start: int, stop: int, scale: float = 1.0) -> None:
        """In-place ``params[start:stop] -= scale * lr * grad``."""
        self.steps[block] += 1
        params[start:stop] -= (scale * self.lr) * grad


class BlockSignSGD(BlockSGD):
    """Sign SGD on one block: ``params -= scale * lr * sign(grad)`` (ZO-signSGD, Liu et al., ICLR 2019)."""

    unbiased_estimate = False

    def step(self, params: np.ndarray, grad: np.ndarray, block: int, start: int, stop: int, scale: float = 1.0) -> None:
        """In-place ``params[start:stop] -= scale * lr * sign(grad)``."""
        self.steps[block] += 1
        params[start:stop] -= (scale * self.lr) * np.sign(grad)


#: The update rules of the ``update`` setting of :class:`~.zeroth_order.ZerothOrder`.
UPDATE_RULES = {"adam": BlockAdam, "sgd": BlockSGD, "sign": BlockSignSGD}
