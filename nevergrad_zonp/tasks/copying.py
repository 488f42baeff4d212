"""Copying memory task with a unitary MZI RNN (docs/method.md, "Tasks").

Definition of M. Arjovsky, A. Shah, Y. Bengio, "Unitary evolution recurrent neural
networks", ICML 2016, section 4.1.  Tokens: 0 = blank, 1..8 = symbols, 9 = delimiter.  An
input sequence of length ``T + 20`` holds 10 symbols drawn uniformly from 1..8, then
``T - 1`` blanks, the delimiter, and 10 blanks; the target sequence is ``T + 10`` blanks
followed by the 10 input symbols.  Outputs are logits over the 9 target classes (blank
and the 8 symbols) at every step, shape ``(batch, T + 20, 9)``, output model
"categorical"; the loss is the cross-entropy averaged over steps and sequences.

A memoryless strategy (blanks for ``T + 10`` steps, then a uniform guess among the 8
symbols) scores ``10 log 8 / (T + 20)``: the baseline to beat.  The metric "accuracy" is
the fraction of the 10 recalled symbols predicted right.

Default delay ``T = 50``: long enough that the recurrence must hold the symbols over many
steps, short enough for many zeroth-order iterations on a CPU (Arjovsky et al. use
``T >= 100`` with backprop).  At ``T = 50`` backprop with Adam is unstable at lr 1e-2;
at lr 2e-3, 15 epochs of 2,000 sequences bring the test loss to 0.03 (baseline 0.30).
Model:
:class:`~nevergrad_zonp.photonics.recurrent.MZIRecurrentNetwork` with 40 ports (a
``Clements(40, 40)`` mesh and PSdiag(40) as the recurrence, modReLU(40), a complex input
map and a linear readout): 3,169 trainable parameters.  The chip is its twin with
fabrication errors in the mesh and the diagonal
(:func:`~nevergrad_zonp.photonics.chip.fabricate`).
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional

from nevergrad_zonp._checks import integer_at_least
from nevergrad_zonp.photonics.chip import FabricationErrors, fabricate
from nevergrad_zonp.photonics.recurrent import MZIRecurrentNetwork
from nevergrad_zonp.tasks.base import Task

SEQUENCE_SYMBOLS = 10
CATEGORIES = 8
BLANK = 0
DELIMITER = CATEGORIES + 1
VOCABULARY = CATEGORIES + 2
CLASSES = CATEGORIES + 1


def copying_data(n: int, *, delay: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` input and target token sequences, both of shape ``(n, delay + 20)`` (integers)."""
    if not integer_at_least(delay, 1):
        raise ValueError(f"the delay must be an integer of at least 1, got {delay!r}")
    if not integer_at_least(n, 1):
        raise ValueError(f"the number of sequences must be a positive integer, got {n!r}")
    delay, n = int(delay), int(n)
    length = delay + 2 * SEQUENCE_SYMBOLS
    symbols = torch.randint(1, CATEGORIES + 1, (n, SEQUENCE_SYMBOLS), generator=generator)
    inputs = torch.full((n, length), BLANK, dtype=torch.long)
    inputs[:, :SEQUENCE_SYMBOLS] = symbols
    inputs[:, delay + SEQUENCE_SYMBOLS - 1] = DELIMITER
    targets = torch.full((n, length), BLANK, dtype=torch.long)
    targets[:, -SEQUENCE_SYMBOLS:] = symbols
    return inputs, targets


def memoryless_baseline(delay: int) -> float:
    """Cross-entropy ``10 log 8 / (T + 20)`` of the best strategy without memory."""
    return SEQUENCE_SYMBOLS * math.log(CATEGORIES) / (delay + 2 * SEQUENCE_SYMBOLS)


def sequence_cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of logits ``(batch, time, classes)`` averaged over steps and sequences."""
    return functional.cross_entropy(outputs.flatten(0, -2), targets.flatten())


def recall_accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    """Fraction of the last 10 steps (the recalled symbols) whose most likely class is right."""
    recalled = outputs[:, -SEQUENCE_SYMBOLS:].argmax(-1)
    return float((recalled == targets[:, -SEQUENCE_SYMBOLS:]).float().mean())


def copying_task(
    delay: int = 50,
    seed: int = 0,
    *,
    n_train: int = 5000,
    n_test: int = 1000,
    ports: int = 40,
    chip_seed: int | None = None,
    errors: FabricationErrors = FabricationErrors(),
) -> Task:
    """The copying task of this module as a :class:`Task` (``ports`` sets the RNN width).

    Data and model initialisation come from ``seed``; the chip's fabrication errors from
    ``chip_seed`` (default ``seed``) with magnitudes ``errors``.
    """
    generator = torch.Generator().manual_seed(seed)
    train = copying_data(n_train, delay=delay, generator=generator)
    test = copying_data(n_test, delay=delay, generator=generator)
    model = MZIRecurrentNetwork(VOCABULARY, CLASSES, ports=ports, generator=generator)
    return Task(
        name=f"copying-T{delay}",
        model=model,
        train=train,
        test=test,
        output="categorical",
        loss=sequence_cross_entropy,
        metrics={"accuracy": recall_accuracy},
        chip=fabricate(model, seed=seed if chip_seed is None else chip_seed, errors=errors),
    )
