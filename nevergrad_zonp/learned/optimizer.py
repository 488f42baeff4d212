"""ZO-L2L as a Nevergrad optimizer: the ZO loop with a learned sampler and a learned update rule.

Ruan, Xiong, Reddi, Kumar and Hsieh, "Learning to Learn by Zeroth-Order Oracle", ICLR 2020
(docs/method.md, "The learned optimizer (ZO-L2L)").  :class:`LearnedZO` builds
:mod:`nevergrad_zonp.optimizers.loop`'s loop with two parts of :mod:`.parts`:

- **queries** (:class:`~.parts.QueryRNNSampler`): at every iteration the QueryRNN reads, for
  each coordinate of the block, the previous estimate and the previous update and gives a
  standard deviation ``s`` (mean square 1 over the block); with probability
  ``query_probability`` the ``Q`` directions are ``u = r * s``, ``r ~ N(0, I)``, otherwise
  isotropic ``u = r``.  The directions are not renormalised.
- **update** (:class:`~.parts.UpdateRNNRule`): the forward-difference estimate
  ``g = (1 / Q) sum_q (l_q - l_0) / d u_q`` (``d = mu / sqrt(n)``, ``lam = 1``) goes through
  the UpdateRNN, whose output, times ``update_scale``, is *added* to the block.

Everything else is the loop's: ``Q + 1`` queries per iteration on one mini-batch, budget
accounting, recovery (which also resets the blocks' RNN states), ask/tell, the fast path and
dump/load.  An iteration asked ahead whose base point the iterate has left by the time it is
told is not used (its queries are spent).  The RNN states (hidden and cell, 10 numbers each
per coordinate and network) pickle with the optimizer.
"""

from __future__ import annotations

import os
import typing as tp
import warnings

import numpy as np
from nevergrad.optimization import base

from .._checks import check_choice, check_fraction, check_integer, check_positive
from ..optimizers.blocks import block_bounds
from ..optimizers.loop import ZerothOrderLoop
from ..optimizers.parts import LoopParts
from ..optimizers.registration import register
from ..optimizers.zeroth_order import BLOCK_SELECTIONS
from .parts import LearnedHistory, QueryRNNSampler, UpdateRNNRule
from .rnn import SHIPPED_WEIGHTS, load_weights, weights_path


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

    The optimizer's parts are inspectable: ``optimizer.sampler`` (``num_learned_queries``,
    ``query_std(block)``) and ``optimizer.update_rule`` (``weights_metadata``).  Building it
    warns :class:`TrainedSettingsWarning` when ``num_directions`` or ``mu`` differ from the
    values the weights were meta-trained with.
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
        super().__init__(ZerothOrderLoop, config, as_config=True)

    def build_parts(self, dimension: int, budget: tp.Optional[int]) -> LoopParts:
        """The loop's parts: the weights' QueryRNN and UpdateRNN sharing one history, no Fisher, no schedule."""
        update_rnn, query_rnn, metadata = load_weights(self.weights)
        trained = metadata.get("config", {})
        differing = {
            name: (trained[name], value)
            for name, value in (("num_directions", self.num_directions), ("mu", self.mu))
            if name in trained and trained[name] != value
        }
        if differing:  # allowed (Q is a user's choice), but the RNNs learned their inputs' scale at the trained values
            warnings.warn(
                "LearnedZO runs with settings other than its weights were meta-trained with (trained, used): "
                + ", ".join(f"{name} {old!r}, {new!r}" for name, (old, new) in differing.items()),
                TrainedSettingsWarning,
                stacklevel=4,
            )
        bounds = block_bounds(dimension, self.max_block_size)
        history = LearnedHistory(dimension)
        return LoopParts(
            num_directions=self.num_directions,
            mu=self.mu,
            bounds=bounds,
            block_selection=self.block_selection,
            sampler=QueryRNNSampler(query_rnn, history, bounds, self.query, self.query_probability),
            update=UpdateRNNRule(update_rnn, history, dimension, self.update_scale, metadata),
        )

    def oracle_defaults(self, parts: LoopParts) -> None:
        """Nothing changes with an output oracle (no learning rate, no schedule)."""


class TrainedSettingsWarning(UserWarning):
    """A learned optimizer runs with ``num_directions`` or ``mu`` other than its weights were meta-trained with."""


ZOL2L = register(LearnedZO(), "ZOL2L")
ZOL2LNoQuery = register(LearnedZO(query=False), "ZOL2LNoQuery")
