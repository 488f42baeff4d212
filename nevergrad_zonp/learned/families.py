"""Families of optimizees for meta-training ZO-L2L (see :mod:`nevergrad_zonp.learned.meta`).

A family is ``family(generator, count) -> optimizees``; an optimizee gives differentiable
float64 losses of ``V`` points at once and draws its starting point.

- ``quadratic``: random least-squares problems ``s ||A x - b||^2 / m`` at scales ``s``
  spread over two decades (the family of the package's generic weights, the registry
  default: Nevergrad problems live in a standardized space of natural scale 1).
- ``attack``: per-image black-box attacks on the digits classifier
  (:mod:`nevergrad_zonp.tasks.attack`), drawn from the *training* images only.
"""

from __future__ import annotations

import dataclasses
import typing as tp

import torch

from ..tasks.attack import attack_problems
from ..tasks.base import pretrain
from ..tasks.equalization import equalization_task


@dataclasses.dataclass
class QuadraticOptimizee:
    """``f(x) = scale * mean((A x - b)^2)`` with Gaussian ``A (m, d) / sqrt(d)`` and ``b``; starts at ``N(0, I)``."""

    matrix: torch.Tensor
    target: torch.Tensor
    scale: float = 1.0

    @property
    def dimension(self) -> int:
        return self.matrix.shape[1]

    def losses(self, x: torch.Tensor) -> torch.Tensor:
        residual = x @ self.matrix.T - self.target
        return self.scale * (residual**2).mean(dim=1)

    def initial(self, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(self.dimension, generator=generator, dtype=torch.float64)


def quadratic_family(
    dimension: int = 10, rows: int = 20, scales: tp.Tuple[float, float] = (1.0, 1.0)
) -> tp.Callable[[torch.Generator, int], tp.List[QuadraticOptimizee]]:
    """Random least-squares optimizees of ``dimension`` parameters and ``rows`` residuals.

    ``scales = (low, high)``: each optimizee's loss is multiplied by a factor drawn
    log-uniformly in that range (gradients of many magnitudes, as on Nevergrad problems).
    """
    low, high = scales
    if not 0 < low <= high:
        raise ValueError(f"scales must satisfy 0 < low <= high, got {scales}")

    def draw(generator: torch.Generator, count: int) -> tp.List[QuadraticOptimizee]:
        optimizees = []
        for _ in range(count):
            matrix = torch.randn(rows, dimension, generator=generator, dtype=torch.float64) / dimension**0.5
            target = torch.randn(rows, generator=generator, dtype=torch.float64)
            fraction = float(torch.rand((), generator=generator, dtype=torch.float64))
            optimizees.append(QuadraticOptimizee(matrix, target, low * (high / low) ** fraction))
        return optimizees

    return draw


@dataclasses.dataclass
class _AttackOptimizee:
    problem: tp.Any  # nevergrad_zonp.tasks.attack.AttackProblem
    scale: float

    @property
    def dimension(self) -> int:
        return int(self.problem.dimension)

    def losses(self, x: torch.Tensor) -> torch.Tensor:
        return self.problem.losses(x)

    def initial(self, generator: torch.Generator) -> torch.Tensor:
        return self.scale * torch.randn(self.dimension, generator=generator, dtype=torch.float64)


def attack_family(seed: int = 0, **attack_kwargs: tp.Any) -> tp.Callable[[torch.Generator, int], tp.List[_AttackOptimizee]]:
    """Attacks on the digits classifier of ``seed``, images drawn (with replacement) from its training images."""
    problems = attack_problems(seed=seed, **attack_kwargs).train

    def draw(generator: torch.Generator, count: int) -> tp.List[_AttackOptimizee]:
        picks = torch.randint(len(problems), (count,), generator=generator)
        return [_AttackOptimizee(problems[int(i)], 1e-4) for i in picks]

    return draw


FAMILIES = {"quadratic": quadratic_family, "attack": attack_family}
#: Family arguments of the generic weights (``python -m nevergrad_zonp.learned train --family quadratic``).
GENERIC_QUADRATIC = {"dimension": 10, "rows": 20, "scales": (0.1, 10.0)}


class ModelOptimizee:
    """Training a network on a fixed mini-batch, as a differentiable function of its flat parameters.

    ``losses(x)`` evaluates the ``V`` parameter vectors ``x (V, d)`` with one vmapped
    ``torch.func.functional_call`` in float64, differentiable by autograd; the starting point
    is the model's current parameters (the same for every draw).
    """

    def __init__(self, model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor, loss: tp.Callable) -> None:
        self.model = model.double().eval()
        self.names = [name for name, param in model.named_parameters() if param.requires_grad]
        params = dict(model.named_parameters())
        self.shapes = [params[name].shape for name in self.names]
        self.sizes = [params[name].numel() for name in self.names]
        self.start = torch.cat([params[name].detach().reshape(-1) for name in self.names]).double()
        self.inputs = inputs.double() if inputs.is_floating_point() else inputs
        self.targets = targets
        self.loss = loss

    @property
    def dimension(self) -> int:
        return int(self.start.numel())

    def _one(self, vector: torch.Tensor) -> torch.Tensor:
        pieces = torch.split(vector, self.sizes)
        settings = {name: piece.reshape(shape) for name, piece, shape in zip(self.names, pieces, self.shapes)}
        return self.loss(torch.func.functional_call(self.model, settings, (self.inputs,)), self.targets)

    def losses(self, x: torch.Tensor) -> torch.Tensor:
        return torch.vmap(self._one)(x)

    def initial(self, generator: torch.Generator) -> torch.Tensor:
        return self.start.clone()


def equalization_family(batch_size: int = 100, pretrain_epochs: int = 2) -> tp.Callable[[torch.Generator, int], tp.List[ModelOptimizee]]:
    """Fine-tuning equalization chips after backprop pretraining, the standard suite's protocol.

    Each optimizee is the chip of a fresh seed drawn from 10,000..19,999 (never a seed of the
    comparison suites), its ideal model pretrained for ``pretrain_epochs`` epochs and copied
    onto the chip, and one random mini-batch of ``batch_size`` training symbols.
    """
    def draw(generator: torch.Generator, count: int) -> tp.List[ModelOptimizee]:
        optimizees = []
        for _ in range(count):
            seed = 10_000 + int(torch.randint(10_000, (1,), generator=generator))
            task = equalization_task(seed, n_train=2000, n_test=10)
            pretrain(task, epochs=pretrain_epochs, seed=seed)  # (programs the chip)
            rows = torch.randperm(len(task.train[0]), generator=generator)[:batch_size]
            optimizees.append(ModelOptimizee(task.chip, task.train[0][rows], task.train[1][rows], task.loss))
        return optimizees

    return draw


FAMILIES["equalization"] = equalization_family
