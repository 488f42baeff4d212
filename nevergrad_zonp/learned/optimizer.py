"""ZO-L2L as a Nevergrad optimizer: learned update rule (UpdateRNN) and learned queries (QueryRNN).

Ruan, Xiong, Reddi, Kumar and Hsieh, "Learning to Learn by Zeroth-Order Oracle", ICLR 2020
(docs/method.md, "The learned optimizer (ZO-L2L)").  It is
:class:`~nevergrad_zonp.optimizers.ZerothOrder`'s block-wise
loop with two pieces replaced:

- **queries**: at every iteration the QueryRNN reads, for each coordinate of the block, the
  previous estimate and the previous update of that coordinate and gives a standard deviation
  ``s`` (mean square 1 over the block); with probability ``query_probability`` the ``Q``
  directions are ``u = r * s``, ``r ~ N(0, I)`` (a diagonal covariance), otherwise
  isotropic ``u = r``.  The directions are not renormalised (the raw Gaussian draws).
- **update**: the forward-difference estimate ``g = (1 / Q) sum_q (l_q - l_0) / d u_q``
  (``d = mu / sqrt(n)``, the unbiased scale ``lam = 1``) goes through the UpdateRNN, whose
  output, times ``update_scale``, is *added* to the block (no learning rate).

The same ``Q + 1`` queries per iteration on one mini-batch, budget accounting, non-finite
loss handling (a bad base loss sends the iterate back and resets the blocks' RNN states),
ask/tell, the iteration-level fast path and dump/load as every ZO optimizer of the package.
One difference: an iteration asked ahead (several workers) whose base point the iterate has
left by the time it is told is not used (its queries are spent).  The QueryRNN steps once
per learned update of a block, as in meta-training: iterations asked ahead on a block
before its next update read the same history and share one output (their random draws
differ), instead of stepping the state once per iteration on the same input.
The RNN states (hidden and cell, 10 numbers each per coordinate and network) are part of the
optimizer's state and pickle with it.
"""

from __future__ import annotations

import os
import typing as tp
import warnings

import numpy as np
import torch
from nevergrad.optimization import base

from ..optimizers.registration import register
from .._checks import check_choice, check_fraction, check_integer, check_positive
from ..optimizers.zeroth_order import BLOCK_SELECTIONS, ZerothOrder, _ZerothOrder
from .rnn import SHIPPED_WEIGHTS, load_weights, query_std, weights_path


class _LearnedZO(_ZerothOrder):
    """State and hooks of :class:`LearnedZO` (see the module docstring)."""

    def __init__(
        self,
        parametrization: base.IntOrParameter,
        budget: tp.Optional[int] = None,
        num_workers: int = 1,
        *,
        config: tp.Optional["LearnedZO"] = None,
    ) -> None:
        learned = LearnedZO() if config is None else config
        loop = ZerothOrder(
            sampler="isotropic",
            num_directions=learned.num_directions,
            lr=1.0,
            update="sgd",  # not used (the UpdateRNN steps); the rule without moments to store
            mu=learned.mu,
            max_block_size=learned.max_block_size,
            block_selection=learned.block_selection,
            normalize=False,
            lr_schedule="constant",
        )
        super().__init__(parametrization, budget=budget, num_workers=num_workers, config=loop)
        self._learned = learned
        self._update_rnn, self._query_rnn, self.weights_metadata = load_weights(learned.weights)
        trained = self.weights_metadata.get("config", {})
        differing = {
            name: (trained[key], value)
            for name, key, value in (("num_directions", "num_directions", learned.num_directions), ("mu", "mu", learned.mu))
            if key in trained and trained[key] != value
        }
        if differing:  # allowed (Q is a user's choice), but the RNNs learned their inputs' scale at the trained values
            warnings.warn(
                "LearnedZO runs with settings other than its weights were meta-trained with (trained, used): "
                + ", ".join(f"{name} {old!r}, {new!r}" for name, (old, new) in differing.items()),
                TrainedSettingsWarning,
                stacklevel=2,
            )
        count = self.dimension
        self._update_state = self._update_rnn.initial_state(count)
        self._query_state = self._query_rnn.initial_state(count)
        self._previous_estimate = np.zeros(count)
        self._previous_update = np.zeros(count)
        self._num_learned_queries = 0
        # The QueryRNN steps once per learned update of a block, as in meta-training: an
        # iteration begun on a block before its previous one was told (several workers) reads
        # the same history and gets the same output, without advancing the state again.
        self._query_outputs: tp.Dict[int, torch.Tensor] = {}  # block -> output read since its latest update

    @property
    def num_learned_queries(self) -> int:
        """Iterations whose directions came from the QueryRNN (the others were isotropic)."""
        return self._num_learned_queries

    def query_std(self, block: int) -> np.ndarray:
        """The standard deviations the next iteration on ``block`` would use (without advancing the QueryRNN)."""
        cached = self._query_outputs.get(block)
        if cached is not None:  # read since the block's latest update: the next iteration reuses it
            return query_std(cached).numpy()
        start, stop = int(self._bounds[block]), int(self._bounds[block + 1])
        with torch.no_grad():
            output, _ = self._query_rnn(self._query_features(start, stop), self._state_slice(self._query_state, start, stop))
            return query_std(output).numpy()

    # ----- hooks of the ZO loop -----------------------------------------------------
    def _query_features(self, start: int, stop: int) -> torch.Tensor:
        return torch.from_numpy(
            np.stack([self._previous_estimate[start:stop], self._previous_update[start:stop]], axis=1)
        )

    @staticmethod
    def _state_slice(state: tp.Tuple[torch.Tensor, torch.Tensor], start: int, stop: int) -> tp.Tuple[torch.Tensor, torch.Tensor]:
        return state[0][start:stop], state[1][start:stop]

    @staticmethod
    def _store(state: tp.Tuple[torch.Tensor, torch.Tensor], new: tp.Tuple[torch.Tensor, torch.Tensor], start: int, stop: int) -> None:
        state[0][start:stop] = new[0]
        state[1][start:stop] = new[1]

    def _draw_directions(self, block: int, size: int, num_directions: int) -> np.ndarray:
        start, stop = int(self._bounds[block]), int(self._bounds[block + 1])
        std: tp.Optional[np.ndarray] = None
        if self._learned.query:
            # The QueryRNN reads the block's history once per learned update of the block (an
            # iteration without a new history reuses its output); the output is used with the
            # configured probability (the paper's test-time rule), isotropic queries otherwise.
            output = self._query_outputs.get(block)  # read since the block's latest update: nothing new to read
            if output is None:
                with torch.no_grad():
                    output, state = self._query_rnn(
                        self._query_features(start, stop), self._state_slice(self._query_state, start, stop)
                    )
                self._store(self._query_state, state, start, stop)
                self._query_outputs[block] = output
            if self._rng.rand() < self._learned.query_probability:
                std = query_std(output).numpy()
                self._num_learned_queries += 1
        directions = self._rng.randn(num_directions, size)
        return directions if std is None else directions * std

    def _estimate_scale(self, size: int) -> float:
        return 1.0

    def _uses_estimate(self, iteration: tp.Any) -> bool:
        # An iteration asked ahead (several workers) estimates at a point the iterate has
        # since left: the RNNs were meta-trained on one estimate per step, at the current
        # point, and a second learned step on a stale estimate overshot (a 4-d sphere with 8
        # workers ended at 1.38 instead of below 0.05).  Such estimates are dropped.
        return bool(np.array_equal(iteration.base, self._x))

    def _apply_step(self, grad: np.ndarray, block: int, start: int, stop: int, scale: float) -> None:
        with torch.no_grad():
            output, state = self._update_rnn(
                torch.from_numpy(np.ascontiguousarray(grad))[:, None], self._state_slice(self._update_state, start, stop)
            )
        update = output.numpy()
        if not np.all(np.isfinite(update)):
            return  # cannot happen for finite estimates (a bounded LSTM); never step into NaN
        self._store(self._update_state, state, start, stop)
        self._x[start:stop] += (scale * self._learned.update_scale) * update
        self._previous_estimate[start:stop] = grad
        self._previous_update[start:stop] = update  # the QueryRNN's input as in meta-training (unscaled)
        self._query_outputs.pop(block, None)  # a new history: the next iteration on the block reads it

    def _reset_block(self, block: int) -> None:
        start, stop = int(self._bounds[block]), int(self._bounds[block + 1])
        for state in (self._update_state, self._query_state):
            state[0][start:stop] = 0.0
            state[1][start:stop] = 0.0
        self._previous_estimate[start:stop] = 0.0
        self._previous_update[start:stop] = 0.0
        self._query_outputs.pop(block, None)  # the state is back at its start: read afresh


class LearnedZO(base.ConfiguredOptimizer):
    """Zeroth-order optimizer with a learned update rule and learned queries (ZO-L2L).

    Registered as ``ZOL2L`` (QueryRNN used with probability 0.5, the paper's test-time rule)
    and ``ZOL2LNoQuery`` (isotropic queries only: the ablation without the QueryRNN).

    Parameters
    ----------
    weights: str, path or None
        a weights file written by ``python -m nevergrad_zonp.learned train``, or the name of
        weights shipped with the package: ``"generic"`` (``None``, the default: meta-trained on
        random quadratics of scales 0.1 to 10, for Nevergrad problems in their standardized
        space), ``"attack_digits"`` (meta-trained on black-box attacks of the digits
        classifier, the paper's benchmark) or ``"equalization"`` (fine-tuning equalization chips).  How each was made: its metadata and docs/guides/learned.md.
    query: bool
        use the QueryRNN (``False``: isotropic directions, ZO-L2L without QueryRNN).
    query_probability: float
        probability per iteration of using the QueryRNN's directions (the paper: 0.5).
    num_directions: int
        Q, directions per iteration (the paper: 20); an iteration costs ``Q + 1`` queries.
    mu: float
        norm of the finite-difference displacement (per coordinate ``mu / sqrt(n)`` times a
        unit Gaussian); the weights were meta-trained with the value in their metadata.
    max_block_size: int
        N_max, as for :class:`~nevergrad_zonp.optimizers.ZerothOrder` (the RNNs are
        coordinate-wise, so any block size works, but meta-training uses the whole vector as
        one block: set it to at least the dimension to run as trained, e.g. 784 for attacks).
    block_selection: str
        ``"random"`` or ``"cyclic"``.
    update_scale: float
        multiplies the UpdateRNN's output (1 = as meta-trained); the one knob to tune when
        the learned optimizer is used on a family unlike the one it was meta-trained on.
    """

    def __init__(
        self,
        *,
        weights: tp.Union[str, "os.PathLike[str]", None] = None,
        query: bool = True,
        query_probability: float = 0.5,
        num_directions: int = 20,
        mu: float = 1e-3,
        max_block_size: int = 512,
        block_selection: str = "random",
        update_scale: float = 1.0,
    ) -> None:
        config = dict(locals())
        if not isinstance(query, (bool, np.bool_)):
            raise TypeError(f"query must be True or False, got {query!r}")
        check_fraction("query_probability", query_probability, zero=True)
        check_integer("num_directions", num_directions)
        check_integer("max_block_size", max_block_size)
        check_positive("mu", mu)
        check_positive("update_scale", update_scale)
        check_choice("block_selection", block_selection, BLOCK_SELECTIONS)
        if weights is not None and not weights_path(weights).is_file():
            raise FileNotFoundError(
                f"no ZO-L2L weights file at {weights} (shipped weights: {sorted(SHIPPED_WEIGHTS)})"
            )
        # a path is kept absolute (a later chdir must not lose it); a shipped name stays a name
        self.weights = None if weights is None else (
            weights if isinstance(weights, str) and weights in SHIPPED_WEIGHTS else os.path.abspath(os.fspath(weights))
        )
        self.query = bool(query)
        self.query_probability = float(query_probability)
        self.num_directions = int(num_directions)
        self.mu = float(mu)
        self.max_block_size = int(max_block_size)
        self.block_selection = block_selection
        self.update_scale = float(update_scale)
        super().__init__(_LearnedZO, config, as_config=True)


class TrainedSettingsWarning(UserWarning):
    """A learned optimizer runs with ``num_directions`` or ``mu`` other than its weights were meta-trained with."""


ZOL2L = register(LearnedZO(), "ZOL2L")
ZOL2LNoQuery = register(LearnedZO(query=False), "ZOL2LNoQuery")
