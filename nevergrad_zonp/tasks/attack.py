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
``s_y - max_{j != y} s_j`` (the normaliser cancels), which is how it is computed
(:mod:`nevergrad_zonp.tasks.attack_objective`).
Defaults: ``c = 0.1`` (the project's design notes) and ``kappa = 0`` (our choice: the
paper's value is not known to us; 0 is the Carlini-Wagner confidence-0 loss, which stops
pushing once the image is misclassified).  An attack starts from
``delta_0 = 1e-4 N(0, I)`` (seeded per attack).  It succeeds when the arg-max of the
logits on ``clamp(x + delta, 0, 1)`` is not ``y``; its distortion is measured on the
effective perturbation ``clamp(x + delta, 0, 1) - x`` (L1 and L2 norms).

Data and classifier (download-free): :class:`~.images.SmallCNN` trained by backprop
(Adam, :func:`~.base.pretrain`), ``CLASSIFIER_EPOCHS = 30`` epochs by default, on the train
split of :func:`~.images.load_digits_28` (scikit-learn's digits as 28x28 images;
:mod:`nevergrad_zonp.tasks.attack_classifier`).  :func:`attack_problems` then selects, under
a seed, 100 correctly classified images of the train split (to meta-train a learned
optimizer, as in the paper) and 100 of the test split (to evaluate it); the two splits are
disjoint by construction, which is checked.

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

This module builds the benchmark (:func:`attack_problems`, :class:`AttackSet`).  The
objective (the loss terms and :class:`AttackProblem`) is defined in
:mod:`nevergrad_zonp.tasks.attack_objective` and the classifier in
:mod:`nevergrad_zonp.tasks.attack_classifier`; their public names are importable from here.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
from torch import nn

from .attack_classifier import CLASSIFIER_EPOCHS, train_attack_classifier
from .attack_objective import (
    DEFAULT_C,
    DEFAULT_KAPPA,
    DIMENSION,
    IMAGE_SHAPE,
    INITIAL_SCALE,
    NUM_CLASSES,
    SPLITS,
    AttackProblem,
    attack_success_rate,
    check_kappa,
    l1_penalty,
    margin_loss,
    margin_loss_per_setting,
    margins,
    mean_margin,
)
from .images import load_digits_28

__all__ = [
    "CLASSIFIER_EPOCHS",
    "DEFAULT_C",
    "DEFAULT_KAPPA",
    "DIMENSION",
    "IMAGE_SHAPE",
    "INITIAL_SCALE",
    "NUM_CLASSES",
    "SPLITS",
    "AttackProblem",
    "AttackSet",
    "attack_problems",
    "attack_success_rate",
    "l1_penalty",
    "margin_loss",
    "margin_loss_per_setting",
    "margins",
    "mean_margin",
    "train_attack_classifier",
]


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
    kappa = check_kappa(kappa)
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
