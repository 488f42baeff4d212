"""Deterministic mini-batches indexed by an integer key.

All queries of one ZO iteration must see the same mini-batch, whatever evaluates them and
in whatever order.  The adapter therefore never draws "the next" batch: it asks for batch
``key`` (the iteration index), and :class:`MiniBatches` maps keys to batches
deterministically.  For tensors and datasets, key ``k`` is batch ``k mod M`` of epoch
``k // M`` (``M`` full batches per epoch, the incomplete last one dropped so every batch
has the same size), each epoch a fresh permutation seeded by ``(seed, epoch)``.  A
``DataLoader`` is read in its own order; recent batches are cached so out-of-order keys
within a small window work.

Data are checked once, where they enter: NaN or inf in floating inputs or targets is
refused with the samples that hold it.  Tensors (and a ``TensorDataset``'s tensors) are
checked whole at construction; the samples of another ``Dataset`` or of a ``DataLoader``
exist only when read, so each batch is checked as it is read.
"""

from __future__ import annotations

import collections
import threading
import typing as tp

import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset, default_collate

from .._checks import check_integer

Batch = tp.Tuple[tp.Any, torch.Tensor]
_LOADER_CACHE = 64
#: Sample indices an error message lists before it gives only their count.
SHOWN_ROWS = 5


class MiniBatches:
    """Mini-batch ``key -> (inputs, targets)`` over a tensor pair, a ``Dataset`` or a ``DataLoader``.

    Parameters
    ----------
    data: ``(inputs, targets)`` tensors of equal length, a map-style ``Dataset`` returning
        ``(input, target)`` pairs, or a ``DataLoader`` yielding ``(inputs, targets)``.
    batch_size: samples per batch for tensors and datasets (an integer >= 1; ``None``: the
        whole set, every key the same batch); a ``DataLoader`` keeps its own.
    seed: seed of the epoch permutations (an integer >= 0).

    Raises ``ValueError`` for NaN or inf in floating inputs or targets, naming the samples
    (see the module's docstring for when each kind of data is checked).
    """

    def __init__(self, data: tp.Any, batch_size: tp.Optional[int] = 100, seed: int = 0) -> None:
        if batch_size is not None:
            check_integer("batch_size", batch_size, 1, whole=True)
        self.seed = check_integer("seed", seed, 0, whole=True)
        #: The whole data as ``(inputs, targets)`` when it is held in tensors (checked at
        #: construction), else ``None`` (a Dataset or DataLoader, checked batch by batch).
        self.tensors: tp.Optional[tp.Tuple[tp.Any, torch.Tensor]] = None
        self._lock = threading.Lock()
        self._loader: tp.Optional[DataLoader] = None
        self._tensors: tp.Optional[tp.Tuple[tp.Any, torch.Tensor]] = None
        self._dataset: tp.Optional[Dataset] = None
        if isinstance(data, DataLoader):
            self._loader = data
            self._cache: tp.OrderedDict[int, Batch] = collections.OrderedDict()
            self._iterator: tp.Optional[tp.Iterator[Batch]] = None
            self._next_key = 0
            self.batch_size = data.batch_size
            return
        if isinstance(data, (tuple, list)):
            if len(data) != 2:
                raise ValueError(f"data must be an (inputs, targets) pair, got a sequence of length {len(data)}")
            inputs, targets = data
            if not isinstance(targets, torch.Tensor):
                raise TypeError(f"targets must be a torch.Tensor, got {type(targets).__name__}")
            length = _length(inputs)
            if length != len(targets):
                raise ValueError(f"inputs hold {length} samples but targets hold {len(targets)}")
            self._tensors = self.tensors = (inputs, targets)
        elif isinstance(data, Dataset):
            self._dataset = data
            length = len(data)  # type: ignore[arg-type]
            if isinstance(data, TensorDataset) and len(data.tensors) == 2:
                self.tensors = (data.tensors[0], data.tensors[1])
        else:
            raise TypeError(
                f"data must be an (inputs, targets) pair of tensors, a Dataset or a DataLoader, got {type(data).__name__}"
            )
        if length == 0:
            raise ValueError("data is empty")
        if self.tensors is not None:
            check_finite(*self.tensors, lambda rows: describe_rows(rows, length, "samples"))
        if batch_size is None or batch_size >= length:
            batch_size = length
        self.batch_size = int(batch_size)
        self.length = length
        self.batches_per_epoch = length // self.batch_size
        self._epoch = -1
        self._permutation = torch.arange(length)

    def batch(self, key: int) -> Batch:
        """The mini-batch for ``key`` (same key, same batch)."""
        key = int(key)
        if key < 0:
            raise ValueError(f"batch key must be non-negative, got {key}")
        with self._lock:
            if self._loader is not None:
                return self._loader_batch(key)
            epoch, position = divmod(key, self.batches_per_epoch)
            if self.batches_per_epoch == 1 and self.batch_size == self.length:
                indices = self._permutation
            else:
                if epoch != self._epoch:
                    generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
                    self._permutation = torch.randperm(self.length, generator=generator)
                    self._epoch = epoch
                indices = self._permutation[position * self.batch_size : (position + 1) * self.batch_size]
            if self._tensors is not None:
                inputs, targets = self._tensors
                return _index(inputs, indices), _index(targets, indices)
            return self._dataset_batch(indices)

    def in_order(self) -> tp.Iterator[Batch]:
        """One pass over every sample in storage order (the last batch may be smaller)."""
        if self._loader is not None:
            for position, batch in enumerate(self._loader):
                yield _checked_loader_batch(batch, position)
            return
        for start in range(0, self.length, self.batch_size):
            indices = torch.arange(start, min(start + self.batch_size, self.length))
            if self._tensors is not None:
                inputs, targets = self._tensors
                yield _index(inputs, indices), _index(targets, indices)
            else:
                yield self._dataset_batch(indices)

    def _dataset_batch(self, indices: torch.Tensor) -> Batch:
        """The samples ``indices`` of the dataset, collated and checked (unless its tensors were, whole)."""
        assert self._dataset is not None
        inputs, targets = default_collate([self._dataset[int(i)] for i in indices])
        if self.tensors is None:
            what = "samples of a mini-batch, at dataset indices"
            check_finite(inputs, targets, lambda rows: describe_rows(indices[rows], len(indices), what))
        return inputs, targets

    def _loader_batch(self, key: int) -> Batch:
        assert self._loader is not None
        if key in self._cache:
            return self._cache[key]
        if key < self._next_key:
            raise KeyError(
                f"batch {key} of the DataLoader is no longer cached (oldest: {next(iter(self._cache), None)}); "
                f"pass tensors or a Dataset for random access"
            )
        fresh = False
        while self._next_key <= key:
            if self._iterator is None:
                self._iterator, fresh = iter(self._loader), True
            try:
                batch = next(self._iterator)
            except StopIteration:
                self._iterator = None
                if fresh:  # a whole pass gave nothing: looping again would never end
                    raise ValueError("data is empty: the DataLoader yielded no batch (drop_last with fewer samples than a batch?)")
                continue
            fresh = False
            self._cache[self._next_key] = _checked_loader_batch(batch, self._next_key)
            self._next_key += 1
            if len(self._cache) > _LOADER_CACHE:
                self._cache.popitem(last=False)
        return self._cache[key]


def describe_rows(rows: tp.Any, total: int, what: str) -> str:
    """``"2 of 60 samples [4, 9]"``: how many of ``total`` rows, and the first of their indices."""
    indices = [int(i) for i in rows]
    shown = ", ".join(str(i) for i in indices[:SHOWN_ROWS]) + (", ..." if len(indices) > SHOWN_ROWS else "")
    return f"{len(indices)} of {total} {what} [{shown}]"


def check_finite(inputs: tp.Any, targets: torch.Tensor, describe: tp.Callable[[torch.Tensor], str]) -> None:
    """Refuses NaN or inf in floating inputs or targets; ``describe(rows)`` names the rows that hold it."""
    for what, value in (("inputs", inputs), ("targets", targets)):
        rows = _non_finite_rows(value)
        if rows is not None:
            raise ValueError(f"non-finite {what} (NaN or inf) in {describe(rows)}: remove or repair these samples")


def _non_finite_rows(value: tp.Any) -> tp.Optional[torch.Tensor]:
    """Indices of the rows (first axis) of a tensor, or of a tuple/list of tensors, holding NaN or inf; ``None`` if none do."""
    if isinstance(value, (tuple, list)):
        found = [rows for rows in map(_non_finite_rows, value) if rows is not None]
        return torch.unique(torch.cat(found)) if found else None
    if not isinstance(value, torch.Tensor) or not (value.is_floating_point() or value.is_complex()) or value.ndim == 0:
        return None
    # One pass without a copy: NaN and inf reach the sum, and a finite sum proves there are none
    # (a non-finite one may also be an overflow of finite values: the rows then say which).
    if bool(torch.isfinite(value.sum())):
        return None
    rows = (~torch.isfinite(value.reshape(len(value), -1)).all(dim=1)).nonzero().flatten().cpu()
    return rows if len(rows) else None


def _checked_loader_batch(batch: tp.Any, position: int) -> Batch:
    """A DataLoader's batch as ``(inputs, targets)``, its shape and values checked."""
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise ValueError("the DataLoader must yield (inputs, targets) pairs")
    inputs, targets = batch
    check_finite(inputs, targets, lambda rows: describe_rows(rows, len(targets), f"rows of the DataLoader's batch {position}"))
    return inputs, targets


def _length(inputs: tp.Any) -> int:
    if isinstance(inputs, (tuple, list)):
        lengths = {len(item) for item in inputs}
        if len(lengths) != 1:
            raise ValueError(f"input tensors have different lengths {sorted(lengths)}")
        return lengths.pop()
    return len(inputs)


def _index(inputs: tp.Any, indices: torch.Tensor) -> tp.Any:
    """The samples ``indices`` (a 1-d index tensor) of a tensor, or of each tensor of a tuple/list.

    ``index_select`` gathers the same values as ``inputs[indices]`` several times faster on a
    CPU (it copies whole rows; a batch of 100 CIFAR images: about 30 us against 110 us), so
    it is used for contiguous tensors on the device of ``indices``; anything else is indexed
    as given (a non-contiguous tensor keeps the memory format indexing gives it).
    """
    if isinstance(inputs, (tuple, list)):
        return type(inputs)(_index(item, indices) for item in inputs)
    if isinstance(inputs, torch.Tensor) and inputs.ndim and inputs.device == indices.device and inputs.is_contiguous():
        return torch.index_select(inputs, 0, indices)
    return inputs[indices]
