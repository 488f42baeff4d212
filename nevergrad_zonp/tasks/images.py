"""Image classification on 28x28 grey images: a ~2.6k-parameter CNN and its data.

The paper's MNIST and FashionMNIST tasks use a CNN of about 2,580 parameters (docs/method.md,
"Tasks"); its exact layers are not published, so :class:`SmallCNN` is our LeNet-style
choice of that size.  Data come from

- the standard idx files of MNIST (LeCun, Cortes and Burges, "The MNIST database of
  handwritten digits", http://yann.lecun.com/exdb/mnist/) or FashionMNIST (Xiao, Rasul and
  Vollgraf, arXiv:1708.07747, same file names and format), read from a directory the user
  gives, gzipped or not (:func:`load_mnist`);
- scikit-learn's embedded 8x8 digits (UCI optical recognition of handwritten digits, test
  part), which need no download and are the default (:func:`load_digits_28`).

All models here are free of buffers (no BatchNorm), so a model adapter can evaluate many
parameter settings at once with ``torch.vmap`` over ``torch.func.functional_call``.
"""

from __future__ import annotations

import gzip
import math
import os
import typing as tp
import zlib
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn
from torch.nn import functional as F

from ..losses import accuracy
from .base import Task, pretrain

Split = tuple[torch.Tensor, torch.Tensor]

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class SmallCNN(nn.Module):
    """LeNet-style classifier for ``(batch, 1, 28, 28)`` images, returning ``(batch, classes)`` logits.

    Layers (LeCun et al., Proc. IEEE 1998, shrunk to the paper's size), with parameter counts
    for 10 classes:

    ======================================  =============  ===========================
    layer                                   output         parameters
    ======================================  =============  ===========================
    conv 5x5, 1 -> 6, no padding, ReLU      6 x 24 x 24    6*1*25 + 6   =   156
    max-pool 2x2                            6 x 12 x 12
    conv 5x5, 6 -> 8, no padding, ReLU      8 x 8 x 8      8*6*25 + 8   = 1,208
    max-pool 2x2, flatten                   128
    linear 128 -> 10                        10             128*10 + 10  = 1,290
    ======================================  =============  ===========================

    Total 2,654 trainable parameters (6 blocks of at most 443 under the N_max = 512 rule).
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, kernel_size=5)
        self.conv2 = nn.Conv2d(6, 8, kernel_size=5)
        self.classifier = nn.Linear(8 * 4 * 4, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = max_pool_2x2(F.relu(self.conv1(images)))
        x = max_pool_2x2(F.relu(self.conv2(x)))
        return self.classifier(x.flatten(-3))


def max_pool_2x2(x: torch.Tensor) -> torch.Tensor:
    """2x2 max-pooling with stride 2 over the last two (even-sized) dimensions.

    The same values as ``F.max_pool2d(x, 2)`` (NaN included), as the maximum of four
    strided views.  On CPU this is about 10x faster than ``F.max_pool2d`` on
    channels-first tensors (12x for the ``V x 6`` channels of a vmapped forward, measured
    with torch 2.13, one thread), and it runs under ``torch.vmap`` for any leading dims.
    """
    if x.shape[-1] % 2 or x.shape[-2] % 2:
        raise ValueError(f"max_pool_2x2 needs even spatial sizes, got {tuple(x.shape[-2:])}")
    rows = torch.maximum(x[..., 0::2, :], x[..., 1::2, :])
    return torch.maximum(rows[..., 0::2], rows[..., 1::2])


def _read_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"{path}: corrupt gzip stream ({exc})") from exc


def _describe_magic(magic: int) -> str:
    code, ndim = (magic >> 8) & 0xFF, magic & 0xFF
    if magic >> 16 or code not in _IDX_DTYPES:
        return "not an idx header"
    return f"{ndim}-dimensional {_IDX_DTYPES[code].name}"


def read_idx(path: str | os.PathLike[str], expected_magic: int | None = None) -> np.ndarray:
    """Array stored in one idx file, gzipped (detected from the gzip magic bytes) or not.

    Format (LeCun et al., MNIST page, "the IDX file format"): two zero bytes, a type code
    (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64), the number
    of dimensions d, then d big-endian uint32 sizes, then the data in C order, big-endian.
    The magic number is the first four bytes read as a big-endian integer (2051 for MNIST
    images, 2049 for labels); if ``expected_magic`` is given the file must carry it.

    Raises FileNotFoundError for a missing file and ValueError, naming the file and what was
    expected, for a wrong magic number, an unknown type code or a data size that does not
    match the header (truncated or padded file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: idx file not found")
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise ValueError(f"{path}: expected a 4-byte idx magic number, found {len(raw)} bytes")
    magic = int.from_bytes(raw[:4], "big")
    if expected_magic is not None and magic != expected_magic:
        raise ValueError(
            f"{path}: expected magic {expected_magic} ({_describe_magic(expected_magic)}), "
            f"got {magic} ({_describe_magic(magic)})"
        )
    if raw[:2] != b"\x00\x00" or raw[2] not in _IDX_DTYPES:
        raise ValueError(
            f"{path}: not an idx file (expected two zero bytes and a type code in "
            f"{sorted(_IDX_DTYPES)}, got magic {magic})"
        )
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: expected a {header}-byte header for {ndim} dimensions, found {len(raw)} bytes")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = math.prod(shape) * dtype.itemsize  # Python integers: a forged header cannot overflow the check
    if len(raw) - header != expected:
        raise ValueError(
            f"{path}: expected {expected} bytes of data for shape {shape} of {dtype.name}, "
            f"found {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _find_idx(root: Path, stem: str, dataset: str) -> Path:
    folders = [root, root / dataset / "raw"]
    for folder in folders:
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    raise FileNotFoundError(
        f"{stem} (or {stem}.gz) not found in {' or '.join(str(f) for f in folders)}: "
        f"expected the four {dataset} idx files there"
    )


def _read_mnist_split(root: Path, split: str, dataset: str) -> Split:
    images_path, labels_path = (_find_idx(root, stem, dataset) for stem in _MNIST_FILES[split])
    images = read_idx(images_path, IMAGES_MAGIC)
    labels = read_idx(labels_path, LABELS_MAGIC)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"{images_path}: expected images of shape (N, 28, 28), got {images.shape}")
    if labels.shape != images.shape[:1]:
        raise ValueError(f"{labels_path}: expected {images.shape[0]} labels to match {images_path}, got {labels.shape}")
    if labels.size and labels.max() > 9:
        raise ValueError(f"{labels_path}: expected labels in 0..9, found {labels.max()}")
    pixels = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    return pixels, torch.from_numpy(labels.astype(np.int64))


def load_mnist(path: str | os.PathLike[str], *, fashion: bool = False) -> tuple[Split, Split]:
    """Train and test splits of MNIST (or FashionMNIST) from the idx files in ``path``.

    ``path`` holds ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each optionally gzipped
    (``.gz``); torchvision's layout ``path/MNIST/raw`` (``path/FashionMNIST/raw`` when
    ``fashion``) is also accepted.  Images become float32 ``(N, 1, 28, 28)`` in [0, 1]
    (pixel / 255), labels int64 ``(N,)``.
    """
    dataset = "FashionMNIST" if fashion else "MNIST"
    root = Path(path)
    return _read_mnist_split(root, "train", dataset), _read_mnist_split(root, "test", dataset)


def load_digits_28(seed: int = 0, test_fraction: float = 0.25) -> tuple[Split, Split]:
    """scikit-learn's 1,797 8x8 digits, prepared like MNIST images, split into train and test.

    Preparation follows MNIST's construction (digits size-normalised into a 20x20 box and
    placed in a 28x28 frame): grey levels 0..16 are divided by 16, each image is upsampled
    to 20x20 by bilinear interpolation (``torch.nn.functional.interpolate``,
    ``align_corners=False``, so values stay in [0, 1]) and zero-padded by 4 pixels on every
    side.  The split is stratified by class with ``sklearn.model_selection.train_test_split``
    (``random_state=seed``); the default keeps 1,347 images for training and 450 for testing.
    """
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = F.pad(F.interpolate(images, size=(20, 20), mode="bilinear", align_corners=False), (4, 4, 4, 4))
    labels = torch.tensor(digits.target, dtype=torch.int64)
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=test_fraction, random_state=seed, stratify=digits.target
    )
    train_idx, test_idx = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    return (images[train_idx], labels[train_idx]), (images[test_idx], labels[test_idx])


def subset(split: Split, n: int | None, seed: int) -> Split:
    """``n`` samples of ``split`` drawn without replacement (seeded), in their original order; all if ``n`` is None."""
    inputs, targets = split
    if n is None or n >= len(inputs):
        return split
    if n <= 0:
        raise ValueError(f"expected a positive number of samples, got {n}")
    idx = torch.randperm(len(inputs), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return inputs[idx], targets[idx]


def classification_task(
    name: str,
    build_model: tp.Callable[[], nn.Module],
    train: Split,
    test: Split,
    *,
    seed: int = 0,
    pretrain_epochs: int = 0,
) -> Task:
    """Task with softmax cross-entropy loss, an accuracy metric and a categorical output model.

    The model is built under ``torch.manual_seed(seed)`` without touching the global random
    state.  ``pretrain_epochs = 0`` leaves it at its random initialisation (ZO from scratch);
    a positive value warm-starts it by that many epochs of backprop (:func:`~.base.pretrain`,
    Adam, default learning rate and batch size, same seed).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model()
    task = Task(
        name=name,
        model=model,
        train=train,
        test=test,
        output="categorical",
        loss=F.cross_entropy,
        metrics={"accuracy": accuracy},
    )
    if pretrain_epochs:
        pretrain(task, epochs=pretrain_epochs, seed=seed)
    return task


def digits_task(seed: int = 0, *, pretrain_epochs: int = 0) -> Task:
    """The download-free default: :class:`SmallCNN` on :func:`load_digits_28` (``seed`` sets the split and the model)."""
    train, test = load_digits_28(seed)
    return classification_task("digits", SmallCNN, train, test, seed=seed, pretrain_epochs=pretrain_epochs)


def mnist_task(
    path: str | os.PathLike[str],
    fashion: bool = False,
    n_train: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
    *,
    pretrain_epochs: int = 0,
) -> Task:
    """:class:`SmallCNN` on MNIST or FashionMNIST read by :func:`load_mnist`.

    ``n_train`` / ``n_test`` keep a seeded random subset of each split (all samples when None).
    """
    train, test = load_mnist(path, fashion=fashion)
    return classification_task(
        "fashion_mnist" if fashion else "mnist",
        SmallCNN,
        subset(train, n_train, seed),
        subset(test, n_test, seed),
        seed=seed,
        pretrain_epochs=pretrain_epochs,
    )
