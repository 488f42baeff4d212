"""Per-image black-box adversarial attack on a digits classifier (Ruan et al., ICLR 2020).

The benchmark of Y. Ruan, Y. Xiong, S. Reddi, S. Kumar and C.-J. Hsieh, "Learning to Learn
by Zeroth-Order Oracle", ICLR 2020: a classifier is trained by backprop, and each attack
perturbs ONE correctly classified image so that the classifier, queried only through its
outputs, misclassifies it.  The optimized parameters are the perturbation
``delta`` (one value per pixel, ``d = 784``), not the network weights.  The loss of ``delta``
for the image ``x`` of label ``y`` is the Carlini-Wagner style objective

    f(delta) = max(log p_y - max_{j != y} log p_j, -kappa) + c * ||delta||_1,

with ``log p`` the log-softmax of the classifier's logits on ``clamp(x + delta, 0, 1)``.
The margin ``log p_y - max_{j != y} log p_j`` equals the logit difference
``s_y - max_{j != y} s_j`` (the normaliser cancels), which is how it is computed.
Defaults: ``c = 0.1`` (the project's design notes) and ``kappa = 0`` (our choice: the
paper's value is not known to us; 0 is the Carlini-Wagner confidence-0 loss, which stops
pushing once the image is misclassified).  An attack starts from
``delta_0 = 1e-4 N(0, I)`` (seeded per attack).  It succeeds when the arg-max of the
logits on ``clamp(x + delta, 0, 1)`` is not ``y``; its distortion is measured on the
effective perturbation ``clamp(x + delta, 0, 1) - x`` (L1 and L2 norms).

Data and classifier (download-free): :class:`~.images.SmallCNN` trained by backprop
(Adam, :func:`~.base.pretrain`) on the train split of :func:`~.images.load_digits_28`
(scikit-learn's digits as 28x28 images).  With the default 30 epochs its test accuracy is
0.976 for seed 0 (0.976 to 0.989 over seeds 0..4), in about 2.6 s on one CPU thread.
:func:`attack_problems` then selects, under a seed, 100 correctly classified images of
the train split (to meta-train a learned optimizer, as in the paper) and 100 of the test
split (to evaluate it); the two splits are disjoint by construction, which is checked.

An :class:`AttackProblem` serves three uses:

- :meth:`AttackProblem.losses`: batched, differentiable losses ``(V,)`` of perturbations
  ``(V, 784)`` (float32 or float64), to meta-train a learned optimizer by backprop through
  its unrolled steps, and :meth:`AttackProblem.gradient`, the exact gradient, to measure
  how well a ZO estimate aligns with it;
- :meth:`AttackProblem.adapter`: a :class:`~nevergrad_zonp.adapters.HardwareAdapter` whose
  outputs are the classifier's logits, so any Nevergrad or ZO optimizer can run the
  attack, and ZO-NP's black-box Fisher is that of the logits (the L1 term is a closed-form
  ``penalty`` on the parameters, never queried and unseen by the Fisher);
- :meth:`AttackProblem.report`: loss, margin, success and distortion of a result.

Measured (seed 0, one CPU thread, torch 2.13): ``losses`` of ``V = 21`` perturbations take
0.37 ms in float32 and 0.56 ms in float64 (about 2 ms with the backward pass); the
adapter evaluates a ZO iteration of 21 queries in about 1 ms.  Isotropic ZO-Adam
(``ZerothOrder(sampler="isotropic", num_directions=20, lr=4/784, lr_schedule="constant",
max_block_size=784)``, 200 iterations = 4,200 queries, about 0.3 s per attack) succeeds
on 92 of the 100 train attacks (mean L1 distortion of the successes 17.9, L2 1.19) and
87 of the 100 test attacks (L1 16.7, L2 1.10).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import math
import threading
import typing as tp
import weakref
import zlib

import numpy as np
import torch
from torch import nn

from ..adapters.hardware import HardwareAdapter
from .images import SmallCNN, classification_task, load_digits_28

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
#: Backprop epochs of the attacked classifier (test accuracy 0.976 for seed 0, ~2.6 s).
CLASSIFIER_EPOCHS = 30
SPLITS = ("train", "test")

_DTYPES = (torch.float32, torch.float64)


# ----- the margin loss -----------------------------------------------------------------
def _check_kappa(kappa: float) -> float:
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
    return torch.clamp(margins(logits, targets), min=-_check_kappa(kappa)).mean()


def margin_loss_per_setting(logits: torch.Tensor, targets: torch.Tensor, kappa: float = DEFAULT_KAPPA) -> torch.Tensor:
    """:func:`margin_loss` of ``V`` settings at once: logits ``(V, batch, classes)`` -> ``(V,)``.

    Row ``v`` equals ``margin_loss(logits[v], targets, kappa)``.
    """
    if logits.ndim != 3:
        raise ValueError(f"logits must have shape (V, batch, classes), got {tuple(logits.shape)}")
    return torch.clamp(margins(logits, targets), min=-_check_kappa(kappa)).mean(dim=-1)


def attack_success_rate(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Fraction of the batch whose arg-max logit is not the label (a ``metric(outputs, targets)``)."""
    return float((logits.argmax(dim=-1) != targets.reshape(logits.shape[:-1])).double().mean())


def mean_margin(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean unclipped margin ``log p_y - max_{j != y} log p_j`` over the batch (a ``metric(outputs, targets)``)."""
    return float(margins(logits, targets.reshape(-1)).double().mean())


def l1_penalty(thetas: torch.Tensor, c: float = DEFAULT_C) -> torch.Tensor:
    """The distortion term ``c * ||theta_v||_1`` of every row of ``thetas (V, N)``: ``(V,)``."""
    return c * thetas.abs().sum(dim=1)


# ----- the attacked classifier ---------------------------------------------------------
def _check_epochs(epochs: int) -> int:
    if isinstance(epochs, bool) or int(epochs) != epochs or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    return int(epochs)


@contextlib.contextmanager
def _one_torch_thread() -> tp.Iterator[None]:
    """Runs the block on one torch intra-op thread, restoring the caller's setting after.

    Backprop through float32 convolutions sums in a thread-dependent order, and 30 epochs
    of Adam amplify the rounding: the same seed gave test accuracies 0.976, 0.978 and 0.969
    on 1, 2 and 4 threads.  Training on one thread makes the classifier (and so the
    selected images) independent of the caller's thread setting on a given machine; it is
    also the fastest setting for this small network (3.3 s against 10 s on 2 threads of a
    2-core machine).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@functools.lru_cache(maxsize=8)
def _trained_classifier(seed: int, epochs: int) -> tuple[nn.Module, float]:
    """Frozen trained classifier (never handed out: callers get copies) and its test accuracy."""
    train, test = load_digits_28(seed)
    with _one_torch_thread():
        task = classification_task("digits_attack", SmallCNN, train, test, seed=seed, pretrain_epochs=epochs)
        accuracy = task.evaluate()["accuracy"]
    return _frozen(task.model), accuracy


def _frozen(model: nn.Module) -> nn.Module:
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def train_attack_classifier(seed: int = 0, epochs: int = CLASSIFIER_EPOCHS) -> SmallCNN:
    """The attacked classifier: a :class:`~.images.SmallCNN` trained by backprop on the digits.

    ``classification_task(..., seed=seed, pretrain_epochs=epochs)`` on the splits of
    ``load_digits_28(seed)``: initialisation and mini-batch order are seeded, the global
    random state is untouched, and training runs on one torch thread (the caller's thread
    setting is restored after), so the result is the same on every call and every thread
    setting of one machine (other CPUs may round differently, as for all backprop
    pretraining in this package).  The training (about 0.09 s per epoch) is cached
    in-process per ``(seed, epochs)``; every call returns a NEW model (a copy of the cached
    one), so modifying it changes nothing for later calls.  The model is in eval mode with
    ``requires_grad=False`` on all parameters (gradients flow to the input images only).
    """
    template, _ = _trained_classifier(int(seed), _check_epochs(epochs))
    return copy.deepcopy(template)  # type: ignore[return-value]  # a copy draws no random numbers


_DOUBLE_COPIES: "weakref.WeakKeyDictionary[nn.Module, nn.Module]" = weakref.WeakKeyDictionary()
_DOUBLE_LOCK = threading.Lock()


def _double_copy(classifier: nn.Module) -> nn.Module:
    """Frozen float64 copy of ``classifier``, made once per classifier object (weakly cached).

    The copy is taken at first use: a classifier must not be modified afterwards.
    """
    with _DOUBLE_LOCK:
        double = _DOUBLE_COPIES.get(classifier)
        if double is None:
            double = _frozen(copy.deepcopy(classifier).double())
            _DOUBLE_COPIES[classifier] = double
        return double


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
        object.__setattr__(self, "kappa", _check_kappa(self.kappa))

    @property
    def dimension(self) -> int:
        """Number of optimized parameters: the pixels, 784."""
        return DIMENSION

    def __repr__(self) -> str:
        return f"AttackProblem(split={self.split!r}, index={self.index}, label={self.label}, c={self.c}, kappa={self.kappa})"

    # ----- differentiable evaluation ---------------------------------------------------
    def _classifier_for(self, dtype: torch.dtype) -> nn.Module:
        return _double_copy(self.classifier) if dtype == torch.float64 else self.classifier

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


# ----- the benchmark: 100 train and 100 test attacks -----------------------------------
@dataclasses.dataclass(eq=False)
class AttackSet:
    """The attack benchmark: one classifier and its train and test attack problems.

    Attributes
    ----------
    classifier: the attacked :class:`~.images.SmallCNN` (float32, frozen).
    classifier_accuracy: its accuracy on the full digits test split.
    train: attacks of images of the digits train split (to meta-train an optimizer).
    test: attacks of images of the digits test split (to evaluate it).
    seed, c, kappa, classifier_epochs: the settings that built it.
    """

    classifier: nn.Module
    classifier_accuracy: float
    train: list[AttackProblem]
    test: list[AttackProblem]
    seed: int
    c: float
    kappa: float
    classifier_epochs: int

    def split(self, name: str) -> list[AttackProblem]:
        """The problems of split ``"train"`` or ``"test"``."""
        if name not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {name!r}")
        return self.train if name == "train" else self.test


def _check_count(name: str, n: int) -> int:
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise ValueError(f"{name} must be a positive integer, got {n!r}")
    return int(n)


def _select(correct: np.ndarray, n: int, rng: np.random.Generator, split: str) -> np.ndarray:
    if n > len(correct):
        raise ValueError(f"{n} {split} images requested but only {len(correct)} are correctly classified")
    return rng.permutation(correct)[:n]


def attack_problems(
    seed: int = 0,
    n_train: int = 100,
    n_test: int = 100,
    c: float = DEFAULT_C,
    kappa: float = DEFAULT_KAPPA,
    classifier_epochs: int = CLASSIFIER_EPOCHS,
) -> AttackSet:
    """The benchmark of Ruan et al. (ICLR 2020) on the digits: ``n_train`` + ``n_test`` attacks.

    The classifier is :func:`train_attack_classifier` ``(seed, classifier_epochs)``.  The
    images are drawn without replacement, under ``seed``, among the correctly classified
    images of the train split (for ``train``) and of the test split (for ``test``) of
    ``load_digits_28(seed)``; the splits are disjoint by construction (checked: no image
    of one appears in the other).  The draws are nested: the first ``k`` problems of a set
    are the problems of the set with ``n = k``.

    Raises ``ValueError`` for a non-positive count, more images than there are correctly
    classified ones, or a negative or non-finite ``c`` or ``kappa``.
    """
    n_train, n_test = _check_count("n_train", n_train), _check_count("n_test", n_test)
    c = float(c)
    if not math.isfinite(c) or c < 0:
        raise ValueError(f"c must be a finite number >= 0, got {c}")
    kappa = _check_kappa(kappa)
    seed = int(seed)
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    classifier = train_attack_classifier(seed, classifier_epochs)
    train, test = load_digits_28(seed)
    train_bytes = {image.numpy().tobytes() for image in train[0]}
    if any(image.numpy().tobytes() in train_bytes for image in test[0]):
        raise RuntimeError("the digits train and test splits share an image: attack splits would not be disjoint")
    train_rng, test_rng = (np.random.default_rng(s) for s in np.random.SeedSequence([seed, 0x5EED]).spawn(2))
    chosen: dict[str, list[AttackProblem]] = {}
    accuracy = 0.0
    for split, (images, labels), n, rng in (("train", train, n_train, train_rng), ("test", test, n_test, test_rng)):
        with torch.no_grad():
            correct = (classifier(images).argmax(dim=1) == labels).numpy()
        if split == "test":
            accuracy = float(correct.mean())
        indices = _select(np.flatnonzero(correct), n, rng, split)
        chosen[split] = [
            AttackProblem(classifier, images[i], int(labels[i]), int(i), split, c=c, kappa=kappa) for i in indices
        ]
    return AttackSet(
        classifier=classifier,
        classifier_accuracy=accuracy,
        train=chosen["train"],
        test=chosen["test"],
        seed=seed,
        c=c,
        kappa=kappa,
        classifier_epochs=int(classifier_epochs),
    )
