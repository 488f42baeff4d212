"""The learned zeroth-order optimizer of ZO-L2L (Ruan et al., ICLR 2020): RNNs, optimizer, meta-training.

Importing :mod:`nevergrad_zonp` registers ``ZOL2L`` and ``ZOL2LNoQuery``.  Meta-training
(:mod:`nevergrad_zonp.learned.meta`) is imported on demand:
``python -m nevergrad_zonp.learned train --help``.
"""

from .optimizer import ZOL2L, LearnedZO, ZOL2LNoQuery
from .parts import LearnedHistory, QueryRNNSampler, UpdateRNNRule
from .rnn import DEFAULT_WEIGHTS, SHIPPED_WEIGHTS, CoordinateLSTM, load_weights, query_rnn, save_weights, update_rnn

__all__ = [
    "ZOL2L",
    "ZOL2LNoQuery",
    "LearnedZO",
    "QueryRNNSampler",
    "UpdateRNNRule",
    "LearnedHistory",
    "CoordinateLSTM",
    "DEFAULT_WEIGHTS",
    "SHIPPED_WEIGHTS",
    "load_weights",
    "save_weights",
    "update_rnn",
    "query_rnn",
]
