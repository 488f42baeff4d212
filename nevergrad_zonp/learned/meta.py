"""Meta-training of the ZO-L2L networks by unrolled zeroth-order optimisation (docs/method.md, "The
learned optimizer (ZO-L2L)").

Two stages, as in Ruan et al. (ICLR 2020):

1. **UpdateRNN** alone (isotropic queries), Adam, learning rate 1e-3, 20 epochs;
2. **QueryRNN** with the UpdateRNN frozen (its queries always used while training), Adam,
   learning rate 5e-3, 40 epochs, plus the penalty ``0.005 ||o||^2`` on its outputs that
   keeps it near isotropic.

An epoch unrolls ``optimizees_per_epoch`` (10) optimisations of ``steps`` (200) ZO
iterations each, drawn from a *family* of optimizees; we run the 10 side by side (the RNNs
are coordinate-wise, so they form one batch; one meta-update per truncation averages their
meta-losses) rather than one after the other.  Truncated backpropagation through time: a
meta-update every ``truncation`` (20) steps, then the graph is cut.  Each step is exactly the
optimizer's (:class:`~.optimizer.LearnedZO`): ``Q`` directions, forward differences with
displacement ``mu / sqrt(d)`` per unit of the direction, estimate ``g = (1/Q) sum (l_q - l_0)/d u_q``,
update ``x += UpdateRNN(g)``, with the whole vector as one block (``LearnedZO`` with
``max_block_size >= d``) and, in stage 2, the QueryRNN's directions at every step (the
optimizer uses them with probability ``query_probability``).

Meta-loss (``meta_loss="decrease"``, the paper's): ``sum_t t * (f(x_t) - f(x_{t-1}))``
over the steps of a window (``t`` the step's index in the unroll), with ``f(x_{t-1})``
taken as a constant as in the authors' code, so the meta-gradient is ``sum_t t grad f(x_t)``:
later losses weigh more; ``"sum"`` is the plain ``sum_t f(x_t)`` of Andrychowicz et al. (2016).
The meta-gradient needs ``df/dx`` along the unroll: in simulation it is the optimizee's
autograd gradient (``meta_gradient="autograd"``, default); ``"zo"`` replaces every such
derivative by a forward-difference estimate with ``zo_meta_directions`` Gaussian
directions, for optimizees that can only be queried.  Meta-gradients are clipped to
``[-clip, clip]`` element-wise.  Float64 throughout; with one torch thread the result is a
function of the seed (``reproducible``).

Model selection (our addition): unrolled meta-training is noisy from epoch to epoch (on the
attack family the unrolls' final loss jumped between about 4 and 20 across consecutive
epochs of stage 1), so after every epoch the networks are scored on a fixed validation
draw of ``validation_optimizees`` optimizees (drawn once, from a generator of its own, with
fixed directions) by the mean loss at the end of their unrolls, and each stage keeps its
best epoch's networks (``validation_optimizees=0``: the last epoch's).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
import typing as tp

import torch

from .._checks import integer_at_least, positive_finite
from .rnn import CoordinateLSTM, query_rnn, query_std, update_rnn


class Optimizee(tp.Protocol):
    """A differentiable objective of the meta-training family (simulation)."""

    dimension: int

    def losses(self, x: torch.Tensor) -> torch.Tensor:
        """Losses ``(V,)`` of ``V`` points ``(V, dimension)`` (float64, differentiable by autograd)."""

    def initial(self, generator: torch.Generator) -> torch.Tensor:
        """A starting point ``(dimension,)`` (float64), drawn with ``generator``."""


#: ``family(generator, count) -> count optimizees`` (of one dimension).
Family = tp.Callable[[torch.Generator, int], tp.Sequence[Optimizee]]


@dataclasses.dataclass
class MetaConfig:
    """Settings of :func:`meta_train` (defaults: the paper's, docs/method.md, "The learned
    optimizer (ZO-L2L)")."""

    epochs_update: int = 20
    epochs_query: int = 40
    optimizees_per_epoch: int = 10
    steps: int = 200
    truncation: int = 20
    lr_update: float = 1e-3
    lr_query: float = 5e-3
    num_directions: int = 20
    mu: float = 1e-3
    query_penalty: float = 0.005
    meta_loss: str = "decrease"
    meta_gradient: str = "autograd"
    zo_meta_directions: int = 20
    clip: float = 1.0
    hidden: int = 10
    seed: int = 0
    validation_optimizees: int = 10
    input_scale: float = 1.0

    def __post_init__(self) -> None:
        for name, minimum in (
            ("epochs_update", 0), ("epochs_query", 0), ("validation_optimizees", 0), ("optimizees_per_epoch", 1),
            ("steps", 1), ("truncation", 1), ("num_directions", 1), ("zo_meta_directions", 1), ("hidden", 1), ("seed", 0),
        ):
            value = getattr(self, name)
            if not integer_at_least(value, minimum):
                kind = "a non-negative" if minimum == 0 else "a positive"
                raise ValueError(f"{name} must be {kind} integer, got {value!r}")
            object.__setattr__(self, name, int(value))  # (an integral float, 4.0, is taken as 4)
        for name in ("lr_update", "lr_query", "mu", "clip", "input_scale"):
            if not positive_finite(getattr(self, name)):
                raise ValueError(f"{name} must be positive and finite, got {getattr(self, name)!r}")
        if not (self.query_penalty == 0 or positive_finite(self.query_penalty)):
            raise ValueError(f"query_penalty must be non-negative and finite, got {self.query_penalty!r}")
        if self.meta_loss not in ("decrease", "sum"):
            raise ValueError(f"meta_loss must be 'decrease' or 'sum', got {self.meta_loss!r}")
        if self.meta_gradient not in ("autograd", "zo"):
            raise ValueError(f"meta_gradient must be 'autograd' or 'zo', got {self.meta_gradient!r}")


@dataclasses.dataclass
class MetaTrainingResult:
    """Networks and history of a meta-training run."""

    update: CoordinateLSTM
    query: CoordinateLSTM
    history: tp.List[tp.Dict[str, float]]  # per epoch: stage, epoch, meta_loss, start/final/validation loss
    seconds: float


class _ZOValue(torch.autograd.Function):
    """``losses(x)`` whose backward uses forward-difference gradient estimates instead of autograd."""

    @staticmethod
    def forward(ctx, x, optimizee, directions, step):  # type: ignore[override]
        with torch.no_grad():
            values = optimizee.losses(x)
        ctx.save_for_backward(x, values)
        ctx.optimizee, ctx.directions, ctx.step = optimizee, directions, step
        return values

    @staticmethod
    def backward(ctx, grad_output):  # type: ignore[override]
        x, values = ctx.saved_tensors
        u = ctx.directions  # (V, q, d)
        with torch.no_grad():
            moved = (x[:, None, :] + ctx.step * u).reshape(-1, x.shape[1])
            slopes = (ctx.optimizee.losses(moved).reshape(u.shape[:2]) - values[:, None]) / ctx.step
            gradient = torch.einsum("vq,vqd->vd", slopes, u) / u.shape[1]
        return grad_output[:, None] * gradient, None, None, None


def _values(optimizee: Optimizee, x: torch.Tensor, config: MetaConfig, generator: torch.Generator) -> torch.Tensor:
    """``optimizee.losses(x)`` with the meta-gradient the configuration asks for."""
    if config.meta_gradient == "autograd":
        return optimizee.losses(x)
    u = torch.randn(x.shape[0], config.zo_meta_directions, x.shape[1], generator=generator, dtype=torch.float64)
    return _ZOValue.apply(x, optimizee, u, config.mu / math.sqrt(x.shape[1]))


def unroll(
    optimizees: tp.Sequence[Optimizee],
    update: CoordinateLSTM,
    query: tp.Optional[CoordinateLSTM],
    config: MetaConfig,
    generator: torch.Generator,
    meta_optimizer: tp.Optional[torch.optim.Optimizer] = None,
) -> tp.Dict[str, float]:
    """One unrolled ZO optimisation of the optimizees side by side; meta-updates if an optimizer is given.

    ``query=None`` draws isotropic directions.  Returns the summed meta-loss (per optimizee)
    and the mean loss at the start and at the end.
    """
    count, dimension = len(optimizees), optimizees[0].dimension
    if any(opt.dimension != dimension for opt in optimizees):
        raise ValueError("the optimizees of one unroll must share their dimension")
    step_size = config.mu / math.sqrt(dimension)
    x = torch.stack([opt.initial(generator) for opt in optimizees])
    update_state = update.initial_state(count * dimension)
    query_state = query.initial_state(count * dimension) if query is not None else None
    previous_estimate = torch.zeros(count, dimension, dtype=torch.float64)
    previous_update = torch.zeros(count, dimension, dtype=torch.float64)
    with torch.no_grad():
        f_previous = torch.stack([opt.losses(x[i : i + 1])[0] for i, opt in enumerate(optimizees)])
    start_loss = float(f_previous.mean())
    window = torch.zeros((), dtype=torch.float64)
    meta_total = 0.0
    train_query = query is not None and meta_optimizer is not None
    for t in range(1, config.steps + 1):
        penalty = torch.zeros((), dtype=torch.float64)
        if query is not None:
            features = torch.stack([previous_estimate, previous_update], dim=-1).reshape(-1, 2)
            output, query_state = query(features, query_state)
            output = output.reshape(count, dimension)
            std = torch.stack([query_std(row) for row in output])
            penalty = config.query_penalty * (output**2).sum() / count
        else:
            std = torch.ones(count, dimension, dtype=torch.float64)
        r = torch.randn(count, config.num_directions, dimension, generator=generator, dtype=torch.float64)
        u = r * std[:, None, :]
        base = x.detach()
        estimates = []
        for i, opt in enumerate(optimizees):
            with torch.no_grad():
                f0 = opt.losses(base[i : i + 1])[0]
            moved = base[i][None] + step_size * u[i]
            if train_query:
                f_moved = _values(opt, moved, config, generator)
            else:
                with torch.no_grad():
                    f_moved = opt.losses(moved)
            estimates.append(((f_moved - f0) / step_size) @ u[i] / config.num_directions)
        estimate = torch.stack(estimates)
        if not train_query:
            estimate = estimate.detach()
        step, update_state = update(estimate.reshape(-1, 1), update_state)
        step = step.reshape(count, dimension)
        x = x + step
        f_now = torch.stack([_values(opt, x[i : i + 1], config, generator)[0] for i, opt in enumerate(optimizees)])
        if config.meta_loss == "decrease":
            window = window + (t * (f_now - f_previous)).mean()
        else:
            window = window + f_now.mean()
        window = window + penalty
        # The previous loss enters the next term as a constant (the authors' code): the
        # meta-gradient is sum_t t grad f_t.  Kept in the graph, the sum would telescope to
        # b f_b - sum_{t<b} f_t and reward high losses at the intermediate steps.
        f_previous = f_now.detach()
        previous_estimate, previous_update = estimate.detach(), step.detach()
        if t % config.truncation == 0 or t == config.steps:
            meta_total += float(window.detach())
            if not torch.isfinite(window.detach()):
                raise FloatingPointError(
                    f"non-finite meta-loss at step {t} of an unroll (optimizee losses {f_now.detach().tolist()}): "
                    "lower the meta learning rate or the input scale"
                )
            if meta_optimizer is not None and window.requires_grad:
                meta_optimizer.zero_grad()
                window.backward()
                for group in meta_optimizer.param_groups:
                    for param in group["params"]:
                        if param.grad is not None:
                            param.grad.clamp_(-config.clip, config.clip)
                meta_optimizer.step()
            window = torch.zeros((), dtype=torch.float64)
            x, f_previous = x.detach(), f_previous.detach()
            update_state = (update_state[0].detach(), update_state[1].detach())
            if query_state is not None:
                query_state = (query_state[0].detach(), query_state[1].detach())
    return {"meta_loss": meta_total, "start_loss": start_loss, "final_loss": float(f_previous.mean())}


def meta_train(
    family: Family,
    config: tp.Optional[MetaConfig] = None,
    *,
    progress: bool = False,
    callback: tp.Optional[tp.Callable[[tp.Dict[str, float]], None]] = None,
) -> MetaTrainingResult:
    """Meta-trains a fresh UpdateRNN, then a fresh QueryRNN with it frozen, on ``family``.

    Seeded by ``config.seed`` (network initialisation, optimizee draws, directions).  With
    ``progress`` a bar shows the epochs; ``callback`` receives each epoch's record.
    """
    config = MetaConfig() if config is None else config
    generator = torch.Generator().manual_seed(config.seed)
    update = update_rnn(config.seed, config.hidden, config.input_scale)
    query = query_rnn(config.seed, config.hidden, config.input_scale)
    history: tp.List[tp.Dict[str, float]] = []
    started = time.perf_counter()
    stages = [("update", config.epochs_update), ("query", config.epochs_query)]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=config.epochs_update + config.epochs_query, desc="meta-training", unit="epoch")
    validation = None
    if config.validation_optimizees:
        validation = family(torch.Generator().manual_seed(config.seed + 7919), config.validation_optimizees)

    def validate(query_used: tp.Optional[CoordinateLSTM]) -> float:
        assert validation is not None
        fixed = torch.Generator().manual_seed(config.seed + 104729)
        with torch.no_grad():
            return unroll(validation, update, query_used, config, fixed)["final_loss"]

    for stage, epochs in stages:
        if not epochs:
            continue
        if stage == "update":
            update.requires_grad_(True)
            trained, query_used = update, None
            meta_optimizer = torch.optim.Adam(update.parameters(), lr=config.lr_update)
        else:
            update.requires_grad_(False)
            query.requires_grad_(True)
            trained, query_used = query, query
            meta_optimizer = torch.optim.Adam(query.parameters(), lr=config.lr_query)
        best_score, best_state = math.inf, copy.deepcopy(trained.state_dict())
        for epoch in range(epochs):
            optimizees = family(generator, config.optimizees_per_epoch)
            record = unroll(optimizees, update, query_used, config, generator, meta_optimizer)
            record = {"stage": stage, "epoch": epoch, **record}
            if validation is not None:
                record["validation_loss"] = validate(query_used)
                if record["validation_loss"] < best_score:
                    best_score, best_state = record["validation_loss"], copy.deepcopy(trained.state_dict())
            history.append(record)
            if callback is not None:
                callback(record)
            if bar is not None:
                bar.set_postfix(stage=stage, meta_loss=f"{record['meta_loss']:.4g}", final=f"{record['final_loss']:.4g}")
                bar.update(1)
        if validation is not None:
            trained.load_state_dict(best_state)
    if bar is not None:
        bar.close()
    update.requires_grad_(False)
    query.requires_grad_(False)
    return MetaTrainingResult(update=update, query=query, history=history, seconds=time.perf_counter() - started)


def plot_history(history: tp.Sequence[tp.Dict[str, float]], path: str) -> None:
    """Saves the meta-loss and the unrolls' final loss per epoch, both stages, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for stage, colour in (("update", "tab:blue"), ("query", "tab:orange")):
        rows = [(i, r) for i, r in enumerate(history) if r["stage"] == stage]
        if not rows:
            continue
        epochs = [i for i, _ in rows]
        axes[0].plot(epochs, [r["meta_loss"] for _, r in rows], color=colour, label=f"stage {stage}RNN")
        axes[1].plot(epochs, [r["final_loss"] for _, r in rows], color=colour, label=f"stage {stage}RNN, training draw")
        if "validation_loss" in rows[0][1]:
            axes[1].plot(epochs, [r["validation_loss"] for _, r in rows], color=colour, linestyle="--",
                         label=f"stage {stage}RNN, validation draw")
    axes[0].set_title("meta-loss per epoch")
    axes[1].set_title("optimizee loss at the end of the unroll")
    for ax in axes:
        ax.set_xlabel("epoch (both stages)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
