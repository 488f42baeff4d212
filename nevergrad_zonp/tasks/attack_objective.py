"""One black-box attack as an objective: the loss on the classifier's logits and :class:`AttackProblem`.

For the image ``x`` of label ``y``, the loss of a perturbation ``delta (784,)`` is

    f(delta) = max(log p_y - max_{j != y} log p_j, -kappa) + c * ||delta||_1,

with ``log p`` the log-softmax of the classifier's logits on ``clamp(x + delta, 0, 1)``
(the benchmark and its defaults: :mod:`nevergrad_zonp.tasks.attack`).

- :func:`margins` computes the margin ``log p_y - max_{j != y} log p_j`` as the logit
  difference ``s_y - max_{j != y} s_j`` (the normaliser cancels); :func:`margin_loss` and
  its batched twin :func:`margin_loss_per_setting` are the output part of the loss,
  :func:`l1_penalty` the distortion part, :func:`attack_success_rate` and
  :func:`mean_margin` ``metric(outputs, targets)`` functions;
- :class:`AttackProblem` is the attack of one image: differentiable batched losses and the
  exact gradient, the attack as a :class:`~nevergrad_zonp.adapters.HardwareAdapter`, and the
  report of a result.

Malformed logits, targets, perturbations or settings are refused with a ``ValueError``
that names them.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import typing as tp
import zlib

import numpy as np
import torch
from torch import nn

from ..adapters.hardware import HardwareAdapter
from .attack_classifier import double_copy

IMAGE_SHAPE = (1, 28, 28)
#: Pixels of one image: the dimension of an attack.
DIMENSION = 28 * 28
NUM_CLASSES = 10
#: Weight of the L1 distortion in the loss.
DEFAULT_C = 0.1
#: Confidence margin of the loss; 0 is our choice (the paper's value is not known to us).
DEFAULT_KAPPA = 0.0
#: Standard deviation of the initial perturbation ``delta_0 = INITIAL_SCALE * N(0, I)``.
INITIAL_SCALE = 1e-4
SPLITS = ("train", "test")

_DTYPES = (torch.float32, torch.float64)


# ----- the margin loss -----------------------------------------------------------------
def check_kappa(kappa: float) -> float:
    """``kappa`` as a float; raises ``ValueError`` unless it is finite and ``>= 0``."""
    kappa = float(kappa)
    if not math.isfinite(kappa) or kappa < 0:
        raise ValueError(f"kappa must be a finite number >= 0, got {kappa}")
    return kappa


def _check_targets(targets: torch.Tensor, batch: int, classes: int) -> torch.Tensor:
    targets = torch.as_tensor(targets)
    if targets.dtype.is_floating_point or targets.dtype.is_complex or targets.dtype == torch.bool:
        raise ValueError(f"targets must be integer class indices, got dtype {targets.dtype}")
    if targets.shape != (batch,):
        raise ValueError(f"targets of shape {tuple(targets.shape)}; expected ({batch},) to match the logits")
    if batch:
        low, high = (int(value) for value in torch.aminmax(targets))
        if low < 0 or high >= classes:
            raise ValueError(f"targets must lie in 0..{classes - 1}, got {low}..{high}")
    return targets.long()


def margins(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Margins ``log p_y - max_{j != y} log p_j`` of logits ``(..., batch, classes)``, shape ``(..., batch)``.

    Computed as the logit difference ``s_y - max_{j != y} s_j`` (equal to the log-probability
    difference: the log-softmax normaliser cancels), differentiable.  Negative where the
    arg-max is not the target (an attack has succeeded).
    """
    if logits.ndim < 2 or logits.shape[-1] < 2:
        raise ValueError(f"logits must have shape (..., batch, classes) with at least 2 classes, got {tuple(logits.shape)}")
    targets = _check_targets(targets, logits.shape[-2], logits.shape[-1])
    index = targets.reshape((1,) * (logits.ndim - 2) + (-1, 1)).expand(*logits.shape[:-1], 1)
    true = logits.gather(-1, index).squeeze(-1)
    others = logits.scatter(-1, index, -torch.inf).amax(dim=-1)
    return true - others


def margin_loss(logits: torch.Tensor, targets: torch.Tensor, kappa: float = DEFAULT_KAPPA) -> torch.Tensor:
    """Mean over the batch of ``max(log p_y - max_{j != y} log p_j, -kappa)`` (a scalar).

    Parameters
    ----------
    logits: ``(batch, classes)`` classifier outputs.
    targets: ``(batch,)`` integer labels ``y``.
    kappa: confidence, ``>= 0``: the loss stops decreasing once the margin is below ``-kappa``.

    This is the output part of the attack loss (the adapter's ``loss``); the L1 distortion
    is added separately.  Differentiable (a subgradient at the kinks).
    """
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape (batch, classes), got {tuple(logits.shape)}")
    return torch.clamp(margins(logits, targets), min=-check_kappa(kappa)).mean()


def margin_loss_per_setting(logits: torch.Tensor, targets: torch.Tensor, kappa: float = DEFAULT_KAPPA) -> torch.Tensor:
    """:func:`margin_loss` of ``V`` settings at once: logits ``(V, batch, classes)`` -> ``(V,)``.

    Row ``v`` equals ``margin_loss(logits[v], targets, kappa)``.
    """
    if logits.ndim != 3:
        raise ValueError(f"logits must have shape (V, batch, classes), got {tuple(logits.shape)}")
    return torch.clamp(margins(logits, targets), min=-check_kappa(kappa)).mean(dim=-1)


def attack_success_rate(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Fraction of the batch whose arg-max logit is not the label (a ``metric(outputs, targets)``)."""
    return float((logits.argmax(dim=-1) != targets.reshape(logits.shape[:-1])).double().mean())


def mean_margin(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean unclipped margin ``log p_y - max_{j != y} log p_j`` over the batch (a ``metric(outputs, targets)``)."""
    return float(margins(logits, targets.reshape(-1)).double().mean())


def l1_penalty(thetas: torch.Tensor, c: float = DEFAULT_C) -> torch.Tensor:
    """The distortion term ``c * ||theta_v||_1`` of every row of ``thetas (V, N)``: ``(V,)``."""
    return c * thetas.abs().sum(dim=1)


# ----- one attack ----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class AttackProblem:
    """Black-box attack of one image: find ``delta`` (784 pixels) minimising ``margin + c ||delta||_1``.

    Attributes
    ----------
    classifier: the attacked model, logits ``(batch, 10)`` from images ``(batch, 1, 28, 28)``;
        it must not be modified once the problem exists (a float64 copy is kept).
    image: the clean image ``(1, 28, 28)``, pixels in [0, 1] (stored as a float32 copy).
    label: its class ``y``, which the classifier predicts on the clean image.
    index: position of the image in its split of ``load_digits_28(seed)``.
    split: ``"train"`` or ``"test"``: the split the image comes from.
    c: weight of the L1 distortion (``>= 0``).
    kappa: confidence of the margin term (``>= 0``).
    """

    classifier: nn.Module
    image: torch.Tensor
    label: int
    index: int
    split: str
    c: float = DEFAULT_C
    kappa: float = DEFAULT_KAPPA

    def __post_init__(self) -> None:
        image = torch.as_tensor(self.image)
        if tuple(image.shape) != IMAGE_SHAPE:
            raise ValueError(f"image of shape {tuple(image.shape)}; expected {IMAGE_SHAPE}")
        image = image.detach().to(torch.float32).clone()
        if not torch.isfinite(image).all() or image.min() < 0 or image.max() > 1:
            raise ValueError("image pixels must be finite and in [0, 1]")
        if isinstance(self.label, bool) or int(self.label) != self.label or not 0 <= self.label < NUM_CLASSES:
            raise ValueError(f"label must be an integer in 0..{NUM_CLASSES - 1}, got {self.label!r}")
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {self.split!r}")
        c = float(self.c)
        if not math.isfinite(c) or c < 0:
            raise ValueError(f"c must be a finite number >= 0, got {self.c}")
        object.__setattr__(self, "image", image)
        object.__setattr__(self, "label", int(self.label))
        object.__setattr__(self, "index", int(self.index))
        object.__setattr__(self, "c", c)
        object.__setattr__(self, "kappa", check_kappa(self.kappa))

    @property
    def dimension(self) -> int:
        """Number of optimized parameters: the pixels, 784."""
        return DIMENSION

    def __repr__(self) -> str:
        return f"AttackProblem(split={self.split!r}, index={self.index}, label={self.label}, c={self.c}, kappa={self.kappa})"

    # ----- differentiable evaluation ---------------------------------------------------
    def _classifier_for(self, dtype: torch.dtype) -> nn.Module:
        return double_copy(self.classifier) if dtype == torch.float64 else self.classifier

    def _check_deltas(self, deltas: tp.Any) -> torch.Tensor:
        deltas = torch.as_tensor(deltas)
        if deltas.dtype not in _DTYPES:
            raise ValueError(f"deltas must be float32 or float64, got {deltas.dtype}")
        if deltas.ndim != 2 or deltas.shape[1] != DIMENSION or deltas.shape[0] == 0:
            raise ValueError(f"deltas of shape {tuple(deltas.shape)}; expected (V, {DIMENSION}) with V >= 1")
        if not torch.isfinite(deltas.detach()).all():
            raise ValueError("deltas contain NaN or inf")
        return deltas

    def _check_delta(self, delta: tp.Any) -> torch.Tensor:
        vector = np.asarray(delta.detach().cpu() if isinstance(delta, torch.Tensor) else delta, dtype=np.float64)
        if vector.shape != (DIMENSION,):
            raise ValueError(f"delta of shape {vector.shape}; expected ({DIMENSION},)")
        return self._check_deltas(torch.from_numpy(vector.copy())[None])

    def adversarial_images(self, deltas: torch.Tensor) -> torch.Tensor:
        """``clamp(x + delta, 0, 1)`` for every row of ``deltas (V, 784)``: ``(V, 1, 28, 28)``, dtype of ``deltas``."""
        deltas = self._check_deltas(deltas)
        return torch.clamp(self.image.to(deltas.dtype) + deltas.reshape(-1, *IMAGE_SHAPE), 0.0, 1.0)

    def logits(self, deltas: torch.Tensor) -> torch.Tensor:
        """Classifier logits ``(V, 10)`` on the perturbed images, one batched forward, differentiable."""
        images = self.adversarial_images(deltas)
        return self._classifier_for(images.dtype)(images)

    def losses(self, deltas: torch.Tensor) -> torch.Tensor:
        """Attack losses ``(V,)`` of the perturbations ``deltas (V, 784)``, in their dtype.

        ``max(margin, -kappa) + c * ||delta||_1`` per row; differentiable by autograd with
        respect to ``deltas`` (for meta-training an optimizer through its steps).  float32
        uses the classifier, float64 its float64 copy.  Raises ``ValueError`` for another
        dtype, a wrong shape or non-finite values.
        """
        deltas = self._check_deltas(deltas)
        outputs = self.logits(deltas)[:, None]  # (V, batch 1, classes)
        target = torch.tensor([self.label])
        return margin_loss_per_setting(outputs, target, self.kappa) + l1_penalty(deltas, self.c)

    def gradient(self, delta: tp.Any) -> np.ndarray:
        """Exact gradient ``(784,)`` (float64, by autograd) of the loss at ``delta``.

        A subgradient at the kinks (``delta_i = 0`` gives 0 for the L1 term, saturated
        pixels give 0 through the clamp).
        """
        with torch.enable_grad():
            deltas = self._check_delta(delta).requires_grad_(True)
            (grad,) = torch.autograd.grad(self.losses(deltas)[0], deltas)
        return grad[0].numpy()

    def initial_delta(self, seed: int = 0) -> np.ndarray:
        """Starting perturbation ``1e-4 N(0, I)`` ``(784,)``, float64.

        Seeded by ``(seed, split, index)``: the same for every call with this seed, and
        independent between the images of one seed.
        """
        entropy = [int(seed), zlib.crc32(self.split.encode()), self.index]
        if entropy[0] < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        return INITIAL_SCALE * np.random.default_rng(np.random.SeedSequence(entropy)).standard_normal(DIMENSION)

    # ----- black-box objective -----------------------------------------------------------
    def outputs(self, thetas: torch.Tensor, inputs: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """Logits ``(V, batch, 10)`` of ``clamp(inputs + theta_v, 0, 1)``: the adapter's black box.

        ``thetas (V, 784)`` are perturbations and ``inputs (batch, 1, 28, 28)`` the images
        (the batch is this problem's image); all ``V x batch`` images go through the
        classifier in one forward, in ``dtype``.  Non-finite perturbations give non-finite
        logits (the adapter turns them into NaN losses) rather than an error.
        """
        thetas = torch.as_tensor(thetas)
        if thetas.ndim != 2 or thetas.shape[1] != DIMENSION:
            raise ValueError(f"thetas of shape {tuple(thetas.shape)}; expected (V, {DIMENSION})")
        inputs = torch.as_tensor(inputs).to(dtype)
        if tuple(inputs.shape[1:]) != IMAGE_SHAPE:
            raise ValueError(f"inputs of shape {tuple(inputs.shape)}; expected (batch, *{IMAGE_SHAPE})")
        count, batch = len(thetas), len(inputs)
        perturbed = inputs[None] + thetas.to(dtype).reshape(count, 1, *IMAGE_SHAPE)
        images = torch.clamp(perturbed, 0.0, 1.0).reshape(count * batch, *IMAGE_SHAPE)
        return self._classifier_for(dtype)(images).reshape(count, batch, -1)

    def adapter(self, seed: int = 0, dtype: torch.dtype = torch.float64) -> HardwareAdapter:
        """The attack as a model-aware Nevergrad objective, the classifier queried through its logits.

        A :class:`~nevergrad_zonp.adapters.HardwareAdapter` with ``outputs`` = :meth:`outputs`
        (logits, ``output="categorical"``, so ZO-NP's Fisher is that of the classifier's
        predictive distribution), ``theta0 = initial_delta(seed)``, data = this image and
        label (``batch_size=1``), ``loss`` = :func:`margin_loss` with this ``kappa`` (its
        ``per_setting`` twin :func:`margin_loss_per_setting`: all settings in one call) and
        ``penalty = c * ||theta||_1`` (closed form on the parameters, not a query).  Its value
        at ``theta`` is ``losses(theta[None])[0]``.  ``evaluate`` reports the loss, ``success``
        (1.0 if the image is misclassified) and ``margin``; :meth:`report` adds the distortion.
        ``dtype`` is the precision of the forward (float64 by default; float32 is faster).
        """
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        loss = functools.partial(margin_loss, kappa=self.kappa)
        # the batched twin: one call per query instead of one per setting (equal bit for bit at batch 1)
        loss.per_setting = functools.partial(margin_loss_per_setting, kappa=self.kappa)  # type: ignore[attr-defined]
        return HardwareAdapter(
            functools.partial(self.outputs, dtype=dtype),
            self.initial_delta(seed),
            (self.image[None], torch.tensor([self.label])),
            output="categorical",
            loss=loss,
            batch_size=1,
            metrics={"success": attack_success_rate, "margin": mean_margin},
            seed=seed,
            penalty=functools.partial(l1_penalty, c=self.c),
        )

    # ----- reporting ---------------------------------------------------------------------
    def report(self, delta: tp.Any) -> dict[str, tp.Any]:
        """Result of the attack with perturbation ``delta (784,)``, evaluated in float64.

        Returns ``loss`` (the objective), ``margin`` (unclipped ``log p_y - max_{j != y} log p_j``),
        ``prediction`` (arg-max class), ``success`` (``prediction != label``), and ``l1``,
        ``l2``: norms of the effective perturbation ``clamp(x + delta, 0, 1) - x``.
        """
        deltas = self._check_delta(delta)
        with torch.no_grad():
            images = self.adversarial_images(deltas)
            logits = self._classifier_for(torch.float64)(images)
            loss = float(self.losses(deltas)[0])
            effective = (images[0] - self.image.double()).flatten()
        prediction = int(logits[0].argmax())
        return {
            "loss": loss,
            "margin": float(margins(logits, torch.tensor([self.label]))[0]),
            "prediction": prediction,
            "success": prediction != self.label,
            "l1": float(effective.abs().sum()),
            "l2": float(effective.norm()),
        }
