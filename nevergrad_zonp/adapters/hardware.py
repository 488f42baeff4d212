"""Adapter around a black-box network that can only be queried: parameters in, outputs out.

:class:`HardwareAdapter` turns a user callable ``outputs(thetas, inputs)`` (an optical chip,
an analog accelerator, a remote model) into a Nevergrad objective that is also an
:class:`~nevergrad_zonp.oracle.OutputOracle`:

- calling it with a parameter vector returns the mini-batch loss, on the mini-batch the
  optimizer assigned to that vector (so every query of one ZO iteration sees one batch);
- :meth:`HardwareAdapter.loss_batch` evaluates many vectors in one call (vectorized path);
- :meth:`HardwareAdapter.block_outputs` returns raw outputs for the black-box Fisher, and
  :meth:`HardwareAdapter.block_losses` the losses of settings that differ in one block
  (a whole ZO iteration asked with ``ask_iteration``).

Every training query goes through one method, which counts it: ``queries`` (parameter
settings evaluated) and ``sample_forwards`` (queries x mini-batch size).  Evaluations for
reporting (:meth:`HardwareAdapter.evaluate`) are measurements, not training cost, and are
not counted.

Data and settings are checked where they enter (see :class:`HardwareAdapter`): a mistake
is refused with a ``ValueError`` (``TypeError`` for what must be callable) that names it,
before it can turn into a wrong loss.  The checks of outputs and class labels against the
targets are in :mod:`nevergrad_zonp.adapters.targets`.
"""

from __future__ import annotations

import collections
import collections.abc
import functools
import hashlib
import threading
import typing as tp

import nevergrad as ng
import numpy as np
import torch

from .._checks import integer_at_least
from ..fisher import check_output_model
from ..losses import (
    DEFAULT_LOSSES,
    IGNORE_INDEX,
    PER_SETTING,
    Loss,
    Metric,
    accuracy,
    per_setting_categorical,
    per_setting_categorical_kept,
)
from .batches import MiniBatches, describe_rows
from .targets import Labels, check_outputs, data_labels, target_labels

OutputsFn = tp.Callable[[torch.Tensor, tp.Any], torch.Tensor]
PenaltyFn = tp.Callable[[torch.Tensor], torch.Tensor]
_KEY_MEMORY = 1 << 16


def _as_numpy(out: torch.Tensor) -> np.ndarray:
    """The outputs as a numpy array; dtypes numpy lacks (bfloat16, float8, complex32) widened exactly first."""
    try:
        return out.numpy()
    except TypeError:
        return (out.to(torch.complex64) if out.dtype.is_complex else out.float()).numpy()


class HardwareAdapter:
    """Model-aware Nevergrad objective around a queryable network.

    Parameters
    ----------
    outputs: ``outputs(thetas, inputs) -> tensor (V, batch, *event)``: the network outputs for
        ``V`` parameter settings (rows of ``thetas``, a float64 tensor ``(V, N)``) on one
        mini-batch of inputs.  Evaluating all settings in one call is what makes the
        vectorized path fast.
    theta0: initial parameter vector ``(N,)``; the optimizer starts here (standardized
        data 0) and ``parametrization`` is ``ng.p.Array(init=theta0)``.
    data: ``(inputs, targets)`` tensors, a ``Dataset`` or a ``DataLoader`` (see
        :class:`~nevergrad_zonp.adapters.batches.MiniBatches`).
    output: the output model for the Fisher: ``"categorical"``, ``"gaussian"`` or ``"complex"``.
    loss: ``loss(outputs (batch, ...), targets) -> scalar``; defaults to cross-entropy,
        mean squared error or mean squared complex error according to ``output``.  It may
        carry a batched twin as ``loss.per_setting(outputs (V, batch, ...), targets) -> (V,)``
        (the same values, one call for all settings instead of a loop).
    batch_size: mini-batch size for tensors and datasets (an integer >= 1, or ``None``).
    metrics: named ``metric(outputs, targets) -> float`` reported by :meth:`evaluate`;
        defaults to accuracy for categorical outputs.
    seed: seed of the mini-batch order (an integer >= 0).
    penalty: optional ``penalty(thetas (V, N) float64) -> (V,)``, a term of the objective
        known in closed form on the parameters themselves (a regulariser, the distortion
        of an adversarial perturbation): added to every loss, never queried or counted,
        and not part of the outputs the Fisher sees.

    Checks
    ------
    Settings of the wrong type or value are refused at construction, by name.  Data: NaN or
    inf in floating inputs or targets is refused with the samples that hold it (tensors at
    construction, a ``Dataset`` or ``DataLoader`` batch by batch as it is read; see
    :class:`~nevergrad_zonp.adapters.batches.MiniBatches`).  Outputs must fit the targets,
    checked on every query and in :meth:`evaluate` (a shape comparison): with
    ``output="categorical"`` and integer targets, logits ``(*targets.shape, classes)`` (or
    the same number of positions), otherwise one output per target; a mismatch names both
    shapes.

    Class labels (``output="categorical"``, integer targets) lie in ``[0, classes)``; a
    label outside is refused, naming the samples, the label and the number of classes.
    Tensors: negative labels at construction, labels beyond the classes (the outputs'
    last axis) at the first query; a ``Dataset`` or ``DataLoader``: at the query of the
    mini-batch that holds them.  The label :data:`IGNORE_INDEX` (-100, torch's default
    ``ignore_index``) is honoured as ``torch.nn.functional.cross_entropy`` honours it: the
    position is left out, and the loss is the mean over the other positions, in every
    path of the built-in cross-entropy (``categorical_loss`` or ``F.cross_entropy``:
    :meth:`loss_batch`, :meth:`block_losses`, :meth:`evaluate`, vmapped or not; the
    Fisher uses outputs only).  Another loss receives the targets as they are (-100
    included).  A mini-batch whose labels are all ignored has nothing to fit: its loss
    is 0 for every setting whatever the loss (plus ``penalty``), where torch's mean would
    be NaN; data whose labels are all ignored are refused.  The built-in cross-entropy
    needs integer targets: floating ones are refused.
    """

    def __init__(
        self,
        outputs: OutputsFn,
        theta0: tp.Any,
        data: tp.Any,
        *,
        output: str,
        loss: tp.Optional[Loss] = None,
        batch_size: tp.Optional[int] = 100,
        metrics: tp.Optional[tp.Dict[str, Metric]] = None,
        seed: int = 0,
        penalty: tp.Optional[PenaltyFn] = None,
    ) -> None:
        self.output = check_output_model(output)
        if not callable(outputs):
            raise TypeError(f"outputs must be callable (thetas, inputs) -> outputs, got {type(outputs).__name__}")
        if loss is not None and not callable(loss):
            raise TypeError(f"loss must be callable (outputs, targets) -> loss, or None, got {type(loss).__name__}")
        if metrics is not None and not (
            isinstance(metrics, collections.abc.Mapping)
            and all(isinstance(name, str) and callable(metric) for name, metric in metrics.items())
        ):
            raise TypeError(f"metrics must map names (str) to callables metric(outputs, targets), got {metrics!r}")
        if penalty is not None and not callable(penalty):
            raise TypeError(f"penalty must be callable, got {type(penalty).__name__}")
        self.penalty = penalty
        theta0 = np.asarray(theta0, dtype=np.float64)
        if theta0.ndim != 1 or theta0.size == 0:
            raise ValueError(f"theta0 must be a non-empty vector, got shape {theta0.shape}")
        if not np.all(np.isfinite(theta0)):
            raise ValueError("theta0 contains NaN or inf")
        self.theta0 = theta0
        self.dimension = theta0.size
        self.parametrization = ng.p.Array(init=theta0.copy())
        self.batches = MiniBatches(data, batch_size=batch_size, seed=seed)
        self.data = data
        self.loss = DEFAULT_LOSSES[output] if loss is None else loss
        # Class labels: summarised once here when the data are tensors; else per mini-batch.
        self._labels_per_batch = self.output == "categorical" and self.batches.tensors is None
        self._labels: tp.Optional[Labels] = None
        self._label_source: tp.Optional[tp.Tuple[torch.Tensor, tp.Callable[[torch.Tensor], str]]] = None
        if self.output == "categorical" and self.batches.tensors is not None:
            targets = self.batches.tensors[1]
            describe = functools.partial(describe_rows, total=len(targets), what="samples")
            self._labels = data_labels(targets, describe, self.loss)
            self._label_source = (targets, describe)
        # mini-batches may hold ignored labels: their losses average over the others
        self._may_ignore = self._labels_per_batch or (self._labels is not None and self._labels.ignored > 0)
        self.metrics = dict(metrics) if metrics is not None else ({"accuracy": accuracy} if output == "categorical" else {})
        self.default_key = 0
        self._outputs_fn = outputs
        self._lock = threading.Lock()
        self._keys: tp.OrderedDict[bytes, int] = collections.OrderedDict()
        self._queries = 0
        self._sample_forwards = 0

    # ----- counting --------------------------------------------------------------------
    @property
    def queries(self) -> int:
        """Training queries so far: parameter settings evaluated (loss or outputs)."""
        return self._queries

    @property
    def sample_forwards(self) -> int:
        """Training sample forwards so far: queries x mini-batch size."""
        return self._sample_forwards

    def reset_counters(self) -> None:
        """Sets ``queries`` and ``sample_forwards`` back to zero."""
        with self._lock:
            self._queries = 0
            self._sample_forwards = 0

    def _query(self, num_settings: int, key: int, forward: tp.Callable[[tp.Any], torch.Tensor]) -> tp.Tuple[torch.Tensor, torch.Tensor]:
        """The one place where training queries are made and counted.

        ``forward(inputs)`` evaluates ``num_settings`` parameter settings on the inputs of
        mini-batch ``key`` and returns outputs ``(num_settings, batch, *event)``.
        """
        inputs, targets = self.batches.batch(key)
        with torch.no_grad():
            out = torch.as_tensor(forward(inputs))
        batch = len(targets)
        if out.ndim < 2 or out.shape[0] != num_settings or out.shape[1] != batch:
            raise ValueError(
                f"outputs returned shape {tuple(out.shape)}; expected ({num_settings}, {batch}, ...) "
                f"for {num_settings} settings on a batch of {batch}"
            )
        labels, source = self._labels, self._label_source
        if self._labels_per_batch:
            describe = functools.partial(describe_rows, total=batch, what=f"rows of mini-batch {key}")
            labels, source = target_labels(targets, describe, self.loss), (targets, describe)
        check_outputs(out, targets, labels, source, self.output)
        with self._lock:
            self._queries += num_settings
            self._sample_forwards += num_settings * batch
        return out, targets

    def _forward(self, thetas: torch.Tensor, inputs: tp.Any) -> torch.Tensor:
        """Outputs of the settings ``thetas (V, N)`` on ``inputs`` (uncounted; see ``_query``)."""
        with torch.no_grad():
            return torch.as_tensor(self._outputs_fn(thetas, inputs))

    # ----- batch assignment ----------------------------------------------------------
    @staticmethod
    def _digest(value: np.ndarray) -> bytes:
        return hashlib.blake2b(np.ascontiguousarray(value, dtype=np.float64).tobytes(), digest_size=16).digest()

    def assign_batch(self, value: np.ndarray, key: int) -> None:
        """Evaluates the parameter vector ``value`` on mini-batch ``key`` whenever it is queried."""
        if not (integer_at_least(key, 0) and key < 2**63):
            raise ValueError(f"batch key must be an integer in [0, 2**63), got {key!r}")
        digest = self._digest(self._as_vector(value))
        with self._lock:
            self._keys[digest] = int(key)
            self._keys.move_to_end(digest)
            if len(self._keys) > _KEY_MEMORY:
                self._keys.popitem(last=False)

    def batch_key(self, value: np.ndarray, default: tp.Optional[int] = None) -> int:
        """Mini-batch key of ``value``: its assigned key, else ``default``, else ``default_key``."""
        with self._lock:
            key = self._keys.get(self._digest(value))
        if key is not None:
            return key
        return self.default_key if default is None else int(default)

    # ----- objective -----------------------------------------------------------------
    def _as_vector(self, value: tp.Any) -> np.ndarray:
        if type(value) is np.ndarray and value.dtype == np.float64 and value.shape == (self.dimension,):
            return value
        if isinstance(value, ng.p.Parameter):
            value = value.value
        vector = np.asarray(value, dtype=np.float64)
        if vector.shape != (self.dimension,):
            raise ValueError(f"parameter vector of shape {vector.shape}; expected ({self.dimension},)")
        return vector

    def __call__(self, theta: tp.Any) -> float:
        """Mini-batch loss of one parameter vector (one query)."""
        return float(self.loss_batch([theta])[0])

    def loss_batch(self, values: tp.Sequence[tp.Any], key: tp.Optional[int] = None) -> np.ndarray:
        """Mini-batch losses of several parameter vectors, each group of one batch in one call.

        Vectors assigned to a batch by an optimizer use it; the others use ``key`` (or
        ``default_key``).  NaN or inf outputs give a NaN loss, which the optimizers handle.
        """
        vectors = [self._as_vector(v) for v in values]
        keys = [self.batch_key(v, key) for v in vectors]
        losses = np.empty(len(vectors))
        for group_key in dict.fromkeys(keys):
            rows = [i for i, k in enumerate(keys) if k == group_key]
            thetas = torch.from_numpy(np.stack([vectors[i] for i in rows]))
            out, targets = self._query(len(rows), group_key, lambda inputs: self._forward(thetas, inputs))
            losses[rows] = self._losses(out, targets) + self._penalties(thetas)
        return losses

    def _penalties(self, thetas: torch.Tensor) -> np.ndarray:
        """``penalty`` of each setting ``(V,)`` (zeros without one); NaN where it is not finite."""
        if self.penalty is None:
            return np.zeros(len(thetas))
        with torch.no_grad():
            values = torch.as_tensor(self.penalty(thetas)).double().reshape(-1).numpy()
        if values.shape != (len(thetas),):
            raise ValueError(f"penalty returned {values.size} values for {len(thetas)} settings; expected shape ({len(thetas)},)")
        return np.where(np.isfinite(values), values, np.nan)

    def _losses(self, outputs: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
        """Loss of each of the ``V`` settings ``(V,)``: one call of the loss's batched twin, else a loop.

        The twin of a built-in loss is in :data:`~nevergrad_zonp.losses.PER_SETTING`; another
        loss may carry its own as ``loss.per_setting``.
        """
        with torch.no_grad():
            per_setting = PER_SETTING.get(self.loss) or getattr(self.loss, "per_setting", None)
            if self._may_ignore and not (targets.is_floating_point() or targets.is_complex()):
                kept = int((targets != IGNORE_INDEX).sum())
                if not kept:  # every label ignored: nothing to fit, every setting as good
                    return np.zeros(len(outputs))
                if kept < targets.numel() and per_setting is per_setting_categorical:
                    return per_setting_categorical_kept(outputs, targets, kept).double().numpy()
            if per_setting is not None:
                values = torch.as_tensor(per_setting(outputs, targets))
                if values.shape != (len(outputs),):
                    raise ValueError(
                        f"the loss's per_setting returned shape {tuple(values.shape)} for {len(outputs)} settings; "
                        f"expected ({len(outputs)},)"
                    )
                return values.double().numpy()
            return np.array([float(self.loss(row, targets)) for row in outputs])

    def block_outputs(self, theta: np.ndarray, start: int, deltas: np.ndarray, key: int) -> np.ndarray:
        """Outputs ``(V, batch, *event)`` at ``theta`` with ``deltas[v]`` added to ``theta[start:start+n]``."""
        out, _ = self._block_query(theta, start, deltas, key)
        return _as_numpy(out)

    def block_losses(self, theta: np.ndarray, start: int, deltas: np.ndarray, key: int) -> np.ndarray:
        """Mini-batch losses ``(V,)`` at ``theta`` with ``deltas[v]`` added to ``theta[start:start+n]``.

        The loss twin of :meth:`block_outputs` (all ``V`` settings on mini-batch ``key``,
        counted as ``V`` queries): what a ZO iteration asked with ``ask_iteration`` needs,
        without building ``V`` full parameter vectors.  NaN or inf outputs give NaN losses.
        """
        out, targets = self._block_query(theta, start, deltas, key)
        losses = self._losses(out, targets)
        if self.penalty is not None:
            losses = losses + self._penalties(torch.from_numpy(self._full_settings(theta, start, deltas)))
        return losses

    def _full_settings(self, theta: tp.Any, start: int, deltas: tp.Any) -> np.ndarray:
        """The full parameter vectors ``(V, N)``: ``theta`` with ``deltas[v]`` added to its block."""
        theta, deltas, stop = self._check_block(theta, start, deltas)
        thetas = np.repeat(theta[None], len(deltas), axis=0)
        thetas[:, start:stop] += deltas
        return thetas

    def _block_query(self, theta: tp.Any, start: int, deltas: tp.Any, key: int) -> tp.Tuple[torch.Tensor, torch.Tensor]:
        """Counted outputs and targets of the block settings (see :meth:`block_outputs`)."""
        stacked = torch.from_numpy(self._full_settings(theta, start, deltas))
        return self._query(len(stacked), key, lambda inputs: self._forward(stacked, inputs))

    def _check_block(self, theta: tp.Any, start: int, deltas: tp.Any) -> tp.Tuple[np.ndarray, np.ndarray, int]:
        theta = self._as_vector(theta)
        if type(deltas) is not np.ndarray or deltas.dtype != np.float64 or deltas.ndim != 2:  # (the fast path's are)
            deltas = np.atleast_2d(np.asarray(deltas, dtype=np.float64))
        if deltas.ndim != 2 or not len(deltas):
            raise ValueError(f"deltas must have shape (V, n) with V >= 1, got {deltas.shape}")
        if int(start) != start:
            raise ValueError(f"block start must be an integer, got {start!r}")
        start = int(start)
        stop = start + deltas.shape[1]
        if start < 0 or stop > self.dimension:
            raise ValueError(f"block [{start}, {stop}) outside the {self.dimension} parameters")
        return theta, deltas, stop

    # ----- reporting -----------------------------------------------------------------
    def evaluate(self, theta: tp.Any = None, data: tp.Any = None, batch_size: int = 1000) -> tp.Dict[str, float]:
        """Loss and metrics of ``theta`` (default ``theta0``) on a full data set (not counted).

        ``data`` defaults to the training data; pass ``(inputs, targets)`` tensors (or a
        Dataset/DataLoader) for a test split.
        """
        vector = self.theta0 if theta is None else self._as_vector(theta)
        thetas = torch.from_numpy(vector[None])
        outputs, targets = [], []
        for inputs, target in MiniBatches(self.data if data is None else data, batch_size=batch_size).in_order():
            out = self._forward(thetas, inputs)
            if out.ndim < 2 or out.shape[:2] != (1, len(target)):
                raise ValueError(
                    f"outputs returned shape {tuple(out.shape)}; expected (1, {len(target)}, ...) for 1 setting on a batch "
                    f"of {len(target)}"
                )
            outputs.append(out[0])
            targets.append(target)
        out, tgt = torch.cat(outputs), torch.cat(targets)
        labels, source = None, None
        if self.output == "categorical":
            describe = functools.partial(describe_rows, total=len(tgt), what="samples")
            labels, source = data_labels(tgt, describe, self.loss), (tgt, describe)
        check_outputs(out[None], tgt, labels, source, self.output)
        with torch.no_grad():
            result = {"loss": float(self.loss(out, tgt)) + float(self._penalties(thetas)[0])}
            result.update({name: float(metric(out, tgt)) for name, metric in self.metrics.items()})
        return result

