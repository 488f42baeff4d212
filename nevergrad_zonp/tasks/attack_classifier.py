"""The attacked classifier: a small CNN trained by backprop on the digits, cached, handed out as copies.

:func:`train_attack_classifier` trains a :class:`~.images.SmallCNN` (Adam,
:func:`~.base.pretrain`) on the train split of :func:`~.images.load_digits_28`
(scikit-learn's digits as 28x28 images), :data:`CLASSIFIER_EPOCHS` epochs by default, on
one torch thread, once per ``(seed, epochs)`` in a process; every call returns a new frozen
copy.  :func:`double_copy` is the frozen float64 copy of a classifier with which an attack
evaluates float64 perturbations (:mod:`nevergrad_zonp.tasks.attack_objective`).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import threading
import typing as tp
import weakref

import torch
from torch import nn

from .images import SmallCNN, classification_task, load_digits_28

#: Backprop epochs of the attacked classifier.
CLASSIFIER_EPOCHS = 30


def _check_epochs(epochs: int) -> int:
    if isinstance(epochs, bool) or int(epochs) != epochs or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    return int(epochs)


@contextlib.contextmanager
def _one_torch_thread() -> tp.Iterator[None]:
    """Runs the block on one torch intra-op thread, restoring the caller's setting after.

    Backprop through float32 convolutions sums in a thread-dependent order, and epochs of
    Adam amplify the rounding, so the same seed gives different classifiers on different
    thread counts.  Training on one thread makes the classifier (and so the selected
    images) independent of the caller's thread setting on a given machine.
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
    pretraining in this package).  The training is cached in-process per
    ``(seed, epochs)``; every call returns a NEW model (a copy of the cached one), so
    modifying it changes nothing for later calls.  The model is in eval mode with
    ``requires_grad=False`` on all parameters (gradients flow to the input images only).
    Raises ``ValueError`` if ``epochs`` is not a positive integer.
    """
    template, _ = _trained_classifier(int(seed), _check_epochs(epochs))
    return copy.deepcopy(template)  # type: ignore[return-value]  # a copy draws no random numbers


_DOUBLE_COPIES: "weakref.WeakKeyDictionary[nn.Module, nn.Module]" = weakref.WeakKeyDictionary()
_DOUBLE_LOCK = threading.Lock()


def double_copy(classifier: nn.Module) -> nn.Module:
    """Frozen float64 copy of ``classifier``, made once per classifier object (weakly cached).

    The copy is taken at first use: a classifier must not be modified afterwards.
    """
    with _DOUBLE_LOCK:
        double = _DOUBLE_COPIES.get(classifier)
        if double is None:
            double = _frozen(copy.deepcopy(classifier).double())
            _DOUBLE_COPIES[classifier] = double
        return double
