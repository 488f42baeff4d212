"""ZO-L2L's two parts of the ZO loop: the QueryRNN as a sampler and the UpdateRNN as an update rule.

Ruan, Xiong, Reddi, Kumar and Hsieh, "Learning to Learn by Zeroth-Order Oracle", ICLR 2020
(docs/method.md, "The learned optimizer (ZO-L2L)").  Both networks are coordinate-wise
LSTMs (:mod:`.rnn`) whose states, one per coordinate, are sliced by block.  They share a
:class:`LearnedHistory`: the UpdateRNN writes each block's latest estimate and update, the
QueryRNN reads them.
"""

from __future__ import annotations

import typing as tp

import numpy as np
import torch

from .rnn import CoordinateLSTM, State, query_std


class LearnedHistory:
    """Per coordinate, the latest ZO estimate and learned update (the QueryRNN's input), and per block the
    QueryRNN output read since the block's latest update (``outputs``)."""

    def __init__(self, dimension: int) -> None:
        self.estimate = np.zeros(dimension)
        self.update = np.zeros(dimension)
        self.outputs: tp.Dict[int, torch.Tensor] = {}

    def features(self, start: int, stop: int) -> torch.Tensor:
        """The QueryRNN's input on ``[start, stop)``: ``(n, 2)``, previous estimate and previous update."""
        return torch.from_numpy(np.stack([self.estimate[start:stop], self.update[start:stop]], axis=1))


def _rows(state: State, start: int, stop: int) -> State:
    return state[0][start:stop], state[1][start:stop]


def _store(state: State, new: State, start: int, stop: int) -> None:
    state[0][start:stop] = new[0]
    state[1][start:stop] = new[1]


class QueryRNNSampler:
    """Directions ``u = r * s`` with ``r ~ N(0, I)`` and the QueryRNN's standard deviations ``s`` (mean square 1).

    With probability ``probability`` per iteration (the paper's test-time rule: 0.5) the
    QueryRNN's ``s`` shapes the draws, otherwise they are isotropic; ``use=False`` never
    uses it (ZO-L2L without QueryRNN).  The draws are not renormalised.  The QueryRNN steps
    once per learned update of a block, as in meta-training: iterations on a block before its
    next update (asked ahead) reuse one output.  Random numbers come from the optimizer's
    random state.
    """

    normalize = False

    def __init__(
        self, network: CoordinateLSTM, history: LearnedHistory, bounds: np.ndarray, use: bool, probability: float
    ) -> None:
        self.network = network
        self.history = history
        self.bounds = bounds
        self.use = use
        self.probability = probability
        self.state = network.initial_state(int(bounds[-1]))
        self.num_learned_queries = 0  #: iterations whose directions came from the QueryRNN

    def draw(self, rng: np.random.RandomState, block: int, start: int, stop: int, num: int) -> np.ndarray:
        """``(num, stop - start)`` directions of an iteration on ``block``."""
        std: tp.Optional[np.ndarray] = None
        if self.use:
            output = self.history.outputs.get(block)  # read since the block's latest update: nothing new to read
            if output is None:
                with torch.no_grad():
                    output, state = self.network(self.history.features(start, stop), _rows(self.state, start, stop))
                _store(self.state, state, start, stop)
                self.history.outputs[block] = output
            if rng.rand() < self.probability:
                std = query_std(output).numpy()
                self.num_learned_queries += 1
        directions = rng.randn(num, stop - start)
        return directions if std is None else directions * std

    def query_std(self, block: int) -> np.ndarray:
        """The standard deviations the next iteration on ``block`` would use (without stepping the QueryRNN)."""
        cached = self.history.outputs.get(block)
        if cached is not None:
            return query_std(cached).numpy()
        start, stop = int(self.bounds[block]), int(self.bounds[block + 1])
        with torch.no_grad():
            output, _ = self.network(self.history.features(start, stop), _rows(self.state, start, stop))
        return query_std(output).numpy()

    def covariance(self, block: int, size: int) -> np.ndarray:
        """The covariance of the next iteration's draws: ``p diag(s^2) + (1 - p) I`` (``I`` without the QueryRNN)."""
        if not self.use:
            return np.eye(size)
        return self.probability * np.diag(self.query_std(block) ** 2) + (1 - self.probability) * np.eye(size)

    def restricted(self, directions: np.ndarray, continuous: np.ndarray) -> np.ndarray:
        """``directions`` with the discrete coordinates zeroed (not renormalised)."""
        directions[:, ~continuous] = 0.0
        return directions

    def reset(self, block: int, start: int, stop: int) -> None:
        """After a recovery: the block's QueryRNN state back to its start, read afresh."""
        self.state[0][start:stop] = 0.0
        self.state[1][start:stop] = 0.0
        self.history.outputs.pop(block, None)


class UpdateRNNRule:
    """The update ``theta += scale * update_scale * UpdateRNN(g)``, coordinate-wise, with no learning rate.

    Given the unbiased estimate (``lam = 1``, as in meta-training).  Estimates formed at a
    point the iterate has left since (iterations asked ahead) are not used: the networks were
    meta-trained on one estimate per step, at the current point.  A non-finite output (not
    possible for a finite estimate: the LSTM is bounded) leaves the parameters unchanged.
    """

    lr = None
    unbiased_estimate = True
    stale_estimates = False

    def __init__(
        self, network: CoordinateLSTM, history: LearnedHistory, dimension: int, update_scale: float, metadata: dict
    ) -> None:
        self.network = network
        self.history = history
        self.update_scale = update_scale
        self.weights_metadata = metadata  #: the weights file's metadata (family, meta-training settings)
        self.state = network.initial_state(dimension)

    def step(self, params: np.ndarray, grad: np.ndarray, block: int, start: int, stop: int, scale: float = 1.0) -> None:
        """In-place learned update of ``params[start:stop]`` from the estimate ``grad``."""
        with torch.no_grad():
            output, state = self.network(
                torch.from_numpy(np.ascontiguousarray(grad))[:, None], _rows(self.state, start, stop)
            )
        update = output.numpy()
        if not np.all(np.isfinite(update)):
            return
        _store(self.state, state, start, stop)
        params[start:stop] += (scale * self.update_scale) * update
        self.history.estimate[start:stop] = grad
        self.history.update[start:stop] = update  # the QueryRNN's input as in meta-training (unscaled)
        self.history.outputs.pop(block, None)  # a new history: the next iteration on the block reads it

    def reset(self, block: int, start: int, stop: int) -> None:
        """After a recovery: the block's UpdateRNN state and history back to their start."""
        self.state[0][start:stop] = 0.0
        self.state[1][start:stop] = 0.0
        self.history.estimate[start:stop] = 0.0
        self.history.update[start:stop] = 0.0
