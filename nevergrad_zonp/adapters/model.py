"""Adapter that exposes a PyTorch module to the ZO optimizers as a black box.

The module's trainable parameters (all of them, or the ones the user names) are
flattened, in ``named_parameters`` order, into the vector Nevergrad optimizes.  ``V``
parameter settings are evaluated in one batched forward with
``torch.vmap(torch.func.functional_call)``.  A vmapped forward that raises is taken as a
transient fault: that call evaluates its settings one at a time (with a warning naming the
error) and the next call tries ``vmap`` again.  Only proof that the module cannot run under
``vmap`` turns it off for good (with a warning naming the error): an error of torch's own
vmap-incompatibility kind (its message starts with ``"vmap:"``: ``.item()``, data-dependent
control flow, random operations), or vmapped forwards failing on two calls in a row while
the same settings, one at a time, succeeded.

Only the tensors that differ between the settings are batched: the ``Q + 1`` candidates of
a ZO iteration (and the ``n_b + 1`` settings of a Fisher Jacobian) differ in one block, so
the layers before that block run once for all of them, and memory grows with the touched
tensors' size, not with ``N``.  Settings are evaluated in chunks of ``settings_per_call``:
on a CPU, convolutions batched over hundreds of weight settings are slower per setting
than over a few dozen (measured in ``comparisons/bench_zo_speed.py``).
"""

from __future__ import annotations

import threading
import typing as tp
import warnings

import numpy as np
import torch
from torch import nn

from ..losses import Loss, Metric
from ..optimizers.resources import available_memory_bytes
from .._checks import check_integer
from .layered import LayeredModel
from .hardware import HardwareAdapter


class TaskLike(tp.Protocol):
    """What :meth:`ModelAdapter.from_task` reads of a task (a :class:`nevergrad_zonp.tasks.base.Task` has it all)."""

    name: str
    model: nn.Module
    chip: tp.Optional[nn.Module]
    train: tp.Any
    output: str
    loss: Loss
    metrics: tp.Dict[str, Metric]


class ModelAdapter(HardwareAdapter):
    """Model-aware Nevergrad objective around an ``nn.Module`` (see :class:`HardwareAdapter`).

    Parameters
    ----------
    model: the network; it is put in ``eval()`` mode (a hardware network is deterministic,
        and dropout or batch statistics would make the queries of one iteration disagree).
        Queries run on the device of its parameters; inputs are moved there and outputs
        come back to the CPU (only the CPU is exercised by this package's tests).
    data, output, loss, batch_size, metrics, seed, penalty: as for :class:`HardwareAdapter`
        (``penalty`` sees the flat vectors of the optimized parameters).
    parameters: names (from ``model.named_parameters()``) of the parameters to optimize;
        default: every parameter with ``requires_grad``.  The others stay fixed.
    settings_per_call: most parameter settings evaluated in one vmapped forward (an integer >= 1).
    ideal: the error-free twin of ``model`` (same parameter names and shapes), where LPP's
        layered Fisher is evaluated (:meth:`layer_fisher`); default: ``model`` itself.
        :meth:`from_task` passes the task's ideal model when it trains the chip.

    Faults of a vmapped forward fall back to one setting at a time for that call only,
    unless they prove the module cannot run under ``torch.vmap`` (see the module's docstring).
    """

    def __init__(
        self,
        model: nn.Module,
        data: tp.Any,
        *,
        output: str,
        loss: tp.Optional[Loss] = None,
        batch_size: tp.Optional[int] = 100,
        parameters: tp.Optional[tp.Sequence[str]] = None,
        metrics: tp.Optional[tp.Dict[str, Metric]] = None,
        seed: int = 0,
        settings_per_call: int = 32,
        penalty: tp.Optional[tp.Callable[[torch.Tensor], torch.Tensor]] = None,
        ideal: tp.Optional[nn.Module] = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if ideal is not None and not isinstance(ideal, nn.Module):
            raise TypeError(f"ideal must be a torch.nn.Module or None, got {type(ideal).__name__}")
        self.settings_per_call = check_integer("settings_per_call", settings_per_call, 1, whole=True)
        named = dict(model.named_parameters())
        if isinstance(parameters, str):
            raise TypeError(f"parameters must be a sequence of names, got the string {parameters!r} (use [{parameters!r}])")
        if parameters is None:
            names = [name for name, param in named.items() if param.requires_grad]
        else:
            unknown = [name for name in parameters if name not in named]
            if unknown:
                raise ValueError(f"unknown parameter names {unknown}; the model has {list(named)}")
            names = list(dict.fromkeys(parameters))
        if not names:
            raise ValueError("no parameter to optimize")
        complex_names = [name for name in names if named[name].is_complex()]
        if complex_names:
            raise TypeError(f"complex parameters are not supported (optimize real and imaginary parts): {complex_names}")
        self.model = model.eval()
        if ideal is not None:
            twin = dict(ideal.named_parameters())
            mismatched = [name for name in names if name not in twin or twin[name].shape != named[name].shape]
            if mismatched:
                raise ValueError(f"ideal model lacks the parameters {mismatched} of the model (same names and shapes needed)")
        self.ideal = self.model if ideal is None else ideal.eval()
        self._layered: tp.Optional[LayeredModel] = None
        self.device = named[names[0]].device
        self.names = names
        self._shapes = [tuple(named[name].shape) for name in names]
        self._dtypes = [named[name].dtype for name in names]
        sizes = [named[name].numel() for name in names]
        self._offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        # (name, lo, hi, shape, dtype) per optimized tensor, offsets as Python ints: walked on every query.
        self._segment_table = tuple(
            (name, int(lo), int(hi), shape, dtype)
            for name, lo, hi, shape, dtype in zip(names, self._offsets[:-1], self._offsets[1:], self._shapes, self._dtypes)
        )
        # The common case: the tensors a block does not touch are views of one float32 copy of theta.
        self._float32_cpu = self.device.type == "cpu" and all(dtype == torch.float32 for dtype in self._dtypes)
        self._plans: tp.Dict[tp.Tuple[int, int], tp.Tuple[tp.Tuple[tp.Any, ...], tp.Tuple[tp.Any, ...]]] = {}
        theta0 = torch.cat([named[name].detach().reshape(-1).double().cpu() for name in names]).numpy()
        self._vmap_ok = True
        self._vmap_failed_last = False  # the last vmapped attempt raised (two in a row turn vmap off)
        # functional_call swaps the module's own tensors while it runs: one call at a time (threads)
        self._module_lock = threading.RLock()
        super().__init__(
            self._outputs_of, theta0, data, output=output, loss=loss, batch_size=batch_size, metrics=metrics, seed=seed,
            penalty=penalty,
        )

    @classmethod
    def from_task(cls, task: TaskLike, *, on: str = "chip", batch_size: tp.Optional[int] = 100, seed: int = 0) -> "ModelAdapter":
        """Adapter over a task's ``chip`` (the papers' protocol) or its ideal ``model``.

        ``task`` is any object with the attributes of :class:`TaskLike` (a
        :class:`~nevergrad_zonp.tasks.base.Task`, or the user's own): the adapter trains
        ``task.chip`` (``on="chip"``) or ``task.model`` (``on="model"``) on ``task.train``
        with its ``output``, ``loss`` and ``metrics``.  Raises ``ValueError`` for another
        ``on``, or ``on="chip"`` where ``task.chip`` is ``None``; the other checks are the
        constructor's.
        """
        if on not in ("chip", "model"):
            raise ValueError(f"on must be 'chip' or 'model', got {on!r}")
        model = task.chip if on == "chip" else task.model
        if model is None:
            raise ValueError(f"task {task.name!r} has no chip model; use on='model'")
        return cls(
            model, task.train, output=task.output, loss=task.loss, batch_size=batch_size, metrics=task.metrics, seed=seed,
            ideal=task.model,
        )

    # ----- LPP's layered Fisher (on the ideal model; no query) ---------------------------
    def layered_model(self) -> LayeredModel:
        """The layers of the ideal model and their Fishers (:class:`~nevergrad_zonp.adapters.layered.LayeredModel`)."""
        if self._layered is None:
            tensors = self.batches.tensors
            inputs = tensors[0] if tensors is not None else self.batches.batch(0)[0]
            sample = inputs[:2] if isinstance(inputs, torch.Tensor) else inputs
            with self._module_lock:
                self._layered = LayeredModel(self.ideal, self.names, self._offsets, _to_device(sample, self.device))
        return self._layered

    def layer_spans(self) -> tp.List[tp.Tuple[int, int]]:
        """``[start, stop)`` of each layer of the ideal model that has its own Fisher (LPP), in order."""
        return self.layered_model().spans

    def layer_fisher(self, theta: tp.Any, layer: int, *, inputs: int = 100, draws: int = 100, seed: int = 0) -> np.ndarray:
        """LPP's Fisher of layer ``layer`` at the parameter vector ``theta``, on the ideal model; counts no query."""
        vector = self._as_vector(theta)
        with self._module_lock:
            return self.layered_model().fisher(vector, layer, inputs=inputs, draws=draws, seed=seed)

    def load(self, candidate: tp.Any) -> None:
        """Writes a recommendation (or a parameter vector) into the module's parameters."""
        vector = self._as_vector(candidate)
        named = dict(self.model.named_parameters())
        # every tensor in its own dtype first, so a value it cannot hold leaves the module untouched
        values = {
            name: torch.from_numpy(vector[lo:hi]).reshape(shape).to(named[name].dtype)
            for name, lo, hi, shape in zip(self.names, self._offsets[:-1], self._offsets[1:], self._shapes)
        }
        bad = [name for name, value in values.items() if not bool(torch.isfinite(value).all())]
        if bad:
            raise ValueError(f"load: non-finite values (NaN, inf, or beyond the tensor's dtype) for {bad}; module unchanged")
        with torch.no_grad(), self._module_lock:
            for name, value in values.items():
                named[name].copy_(value)

    def _segments(self) -> tp.Tuple[tp.Tuple[str, int, int, tp.Tuple[int, ...], torch.dtype], ...]:
        return self._segment_table

    def _outputs_of(self, thetas: torch.Tensor, inputs: tp.Any) -> torch.Tensor:
        count = len(thetas)
        params: tp.Dict[str, torch.Tensor] = {}
        in_dims: tp.Dict[str, tp.Optional[int]] = {}
        for name, lo, hi, shape, dtype in self._segments():
            segment = thetas[:, lo:hi]
            if count > 1 and bool(torch.all(segment == segment[:1])):
                params[name], in_dims[name] = segment[0].reshape(shape).to(self.device, dtype), None
            else:
                params[name], in_dims[name] = segment.reshape(count, *shape).to(self.device, dtype), 0
        return self._call(params, in_dims, count, inputs)

    def _block_query(self, theta: tp.Any, start: int, deltas: tp.Any, key: int) -> tp.Tuple[torch.Tensor, torch.Tensor]:
        # Only the tensors the block overlaps get V copies; the others are shared (in_dims None).
        theta, deltas, stop = self._check_block(theta, start, deltas)
        count = len(deltas)
        touched, untouched = self._block_plan(start, stop)
        self._check_settings_memory(count, touched)
        params: tp.Dict[str, torch.Tensor] = {}
        in_dims: tp.Dict[str, tp.Optional[int]] = {}
        with np.errstate(over="ignore"):  # torch rounds values beyond float32's range to inf silently; so does this
            for name, lo, hi, shape, dtype, first, last in touched:
                values = _block_settings(theta, lo, hi, first, deltas[:, first - start : last - start], dtype)
                if not self._float32_cpu:
                    values = values.to(self.device, dtype)
                params[name], in_dims[name] = values.reshape(count, *shape), 0
            if self._float32_cpu and untouched:
                shared = torch.from_numpy(theta.astype(np.float32))  # theta rounded once, as .to(float32) would
                for name, lo, hi, shape, _ in untouched:
                    params[name], in_dims[name] = shared[lo:hi].view(shape), None
            else:
                for name, lo, hi, shape, dtype in untouched:
                    params[name], in_dims[name] = torch.from_numpy(theta[lo:hi]).reshape(shape).to(self.device, dtype), None
        return self._query(count, key, lambda inputs: self._call(params, in_dims, count, inputs))

    def _check_settings_memory(self, count: int, touched: tp.Tuple[tp.Any, ...]) -> None:
        """Refuses, before allocating, ``count`` copies of the touched tensors that the memory cannot hold.

        A Fisher refresh evaluates ``n_b + 1`` settings of every tensor its block touches: a
        block of 512 in a 1M-weight layer is 2 GiB of settings in float32.  Checked only for
        requests above :data:`CHECKED_SETTINGS_BYTES` (the common case costs nothing).
        """
        needed = count * sum((hi - lo) * dtype.itemsize for _, lo, hi, _, dtype, _, _ in touched)
        if needed <= CHECKED_SETTINGS_BYTES:
            return
        available = available_memory_bytes()
        if needed > available:
            names = [name for name, *_ in touched]
            raise MemoryError(
                f"{count} settings of {names} need {needed / 2**30:.2f} GiB, {available / 2**30:.2f} GiB available: "
                "use a smaller max_block_size (a Fisher refresh evaluates block size + 1 settings) or fewer directions"
            )

    def _block_plan(self, start: int, stop: int) -> tp.Tuple[tp.Tuple[tp.Any, ...], tp.Tuple[tp.Any, ...]]:
        """The segments block ``[start, stop)`` overlaps, with the overlap ``(first, last)``, and the others (cached per block)."""
        plan = self._plans.get((start, stop))
        if plan is None:
            touched, untouched = [], []
            for name, lo, hi, shape, dtype in self._segments():
                first, last = max(start, lo), min(stop, hi)
                if first < last:
                    touched.append((name, lo, hi, shape, dtype, first, last))
                else:
                    untouched.append((name, lo, hi, shape, dtype))
            plan = self._plans[(start, stop)] = (tuple(touched), tuple(untouched))
        return plan

    def _call(
        self, params: tp.Dict[str, torch.Tensor], in_dims: tp.Dict[str, tp.Optional[int]], count: int, inputs: tp.Any
    ) -> torch.Tensor:
        """Outputs ``(count, batch, ...)`` of the module for ``count`` settings of ``params``."""

        def single(settings: tp.Dict[str, torch.Tensor], x: tp.Any) -> torch.Tensor:
            return torch.func.functional_call(self.model, settings, (x,))

        inputs = _to_device(inputs, self.device)

        # functional_call puts the settings into the module for the call's duration: concurrent
        # calls from several threads would read each other's tensors and leave the wrong ones
        # in the module, so they take turns (torch's own threads still run each forward).
        with torch.no_grad(), self._module_lock:
            if count == 1:  # one setting (sequential minimize): a plain call, no vmap overhead
                return single({n: (t[0] if in_dims[n] == 0 else t) for n, t in params.items()}, inputs)[None].cpu()
            if all(dim is None for dim in in_dims.values()):  # identical settings: nothing to vmap over
                out = single(params, inputs).cpu()
                return out[None].expand(count, *out.shape).contiguous()
            fault: tp.Optional[Exception] = None
            if self._vmap_ok:
                try:
                    chunks = []
                    for lo in range(0, count, self.settings_per_call):
                        hi = min(lo + self.settings_per_call, count)
                        chunk = {n: (t[lo:hi] if in_dims[n] == 0 else t) for n, t in params.items()}
                        chunks.append(torch.vmap(single, in_dims=(in_dims, None))(chunk, inputs))
                    self._vmap_failed_last = False
                    return torch.cat(chunks).cpu()
                except Exception as error:  # a fault of any kind: this call loops instead
                    fault = error
            out = torch.stack(
                [
                    single({n: (t[v] if in_dims[n] == 0 else t) for n, t in params.items()}, inputs)
                    for v in range(count)
                ]
            ).cpu()
            if fault is not None:  # the settings ran one at a time: the fault was vmap's
                self._vmap_fault(fault)
            return out

    def _vmap_fault(self, error: Exception) -> None:
        """Records a vmapped forward that raised where the loop succeeded; turns vmap off once that proves it cannot run."""
        described = f"{type(error).__name__}: {error}"
        if str(error).startswith("vmap:") or self._vmap_failed_last:
            self._vmap_ok = False
            warnings.warn(
                f"{type(self.model).__name__} does not run under torch.vmap ({described}); "
                "evaluating parameter settings one at a time from now on",
                RuntimeWarning,
            )
        else:
            self._vmap_failed_last = True
            warnings.warn(
                f"a vmapped forward of {type(self.model).__name__} failed ({described}); this call evaluated its "
                "settings one at a time, the next tries torch.vmap again",
                RuntimeWarning,
            )


#: Block-settings requests above this size are checked against the available memory first.
CHECKED_SETTINGS_BYTES = 256 * 2**20

#: Parameter dtypes whose block settings are rounded straight into an array of that dtype.
_NUMPY_DTYPES: tp.Dict[torch.dtype, tp.Type[np.floating]] = {torch.float32: np.float32, torch.float64: np.float64}


def _block_settings(theta: np.ndarray, lo: int, hi: int, first: int, deltas: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """``V`` copies of the segment ``theta[lo:hi]`` with ``deltas (V, m)`` added to ``theta[first:first + m]``.

    Each sum is formed in float64 and rounded once to ``dtype``, as converting the float64
    settings with ``.to(dtype)`` would (same values, bit for bit, overflow to inf included);
    for float32 and float64 parameters the rows are written straight in that dtype, without
    a float64 copy of the whole segment per setting.  Other dtypes (numpy's float16 rounding
    differs from torch's) get the float64 settings, converted by the caller.
    """
    last = first + deltas.shape[1]
    target = _NUMPY_DTYPES.get(dtype)
    if target is None:
        values = np.repeat(theta[None, lo:hi], len(deltas), axis=0)
        values[:, first - lo : last - lo] += deltas
        return torch.from_numpy(values)
    values = np.empty((len(deltas), hi - lo), dtype=target)
    # (A value beyond float32's range rounds to inf, as torch rounds it, silently where the caller
    # says ``np.errstate(over="ignore")``.)
    if first > lo:  # the segment's columns outside the block, then the block's (each written once)
        values[:, : first - lo] = theta[lo:first]
    if last < hi:
        values[:, last - lo :] = theta[last:hi]
    np.add(theta[first:last], deltas, out=values[:, first - lo : last - lo], casting="same_kind")
    return torch.from_numpy(values)


def _to_device(inputs: tp.Any, device: torch.device) -> tp.Any:
    if isinstance(inputs, (tuple, list)):
        return type(inputs)(_to_device(item, device) for item in inputs)
    return inputs.to(device) if isinstance(inputs, torch.Tensor) else inputs
