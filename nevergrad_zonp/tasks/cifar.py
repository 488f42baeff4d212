"""CIFAR-10 with an MLP-Mixer: the paper's 33,642-parameter model and its 1.7M scale-up.

MLP-Mixer after Tolstikhin et al., "MLP-Mixer: An all-MLP Architecture for Vision",
NeurIPS 2021: non-overlapping patches are embedded linearly into ``tokens x width``
features, then each mixer block applies, with pre-LayerNorm residual connections, an MLP
across tokens (token mixing) and an MLP across channels (channel mixing); a final
LayerNorm, global average pooling over tokens and a linear head give the logits.  There is
no BatchNorm, so the model works under ``torch.vmap`` of ``torch.func.functional_call``.

Data: the CIFAR-10 "python version" batch files (Krizhevsky, "Learning Multiple Layers of
Features from Tiny Images", 2009; https://www.cs.toronto.edu/~kriz/cifar.html).
"""

from __future__ import annotations

import os
import pickle
import typing as tp
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .base import Task
from .images import Split, classification_task, subset

MIXER_SIZES: dict[str, dict[str, int]] = {
    "small": {"depth": 3, "width": 32, "token_hidden": 64, "channel_hidden": 32},
    "large": {"depth": 12, "width": 256, "token_hidden": 64, "channel_hidden": 256},
}
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch"


def _mlp(features: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(features, hidden), nn.GELU(), nn.Linear(hidden, features))


class MixerBlock(nn.Module):
    """``x + TokenMLP(LN(x)^T)^T`` then ``x + ChannelMLP(LN(x))`` on ``(..., tokens, width)`` features."""

    def __init__(self, tokens: int, width: int, token_hidden: int, channel_hidden: int) -> None:
        super().__init__()
        self.token_norm = nn.LayerNorm(width)
        self.token_mlp = _mlp(tokens, token_hidden)
        self.channel_norm = nn.LayerNorm(width)
        self.channel_mlp = _mlp(width, channel_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.token_mlp(self.token_norm(x).transpose(-1, -2)).transpose(-1, -2)
        return x + self.channel_mlp(self.channel_norm(x))


class MLPMixer(nn.Module):
    """MLP-Mixer classifier for ``(batch, channels, size, size)`` images, returning logits.

    With T = (image_size / patch_size)^2 tokens, P = channels * patch_size^2 values per patch,
    width C, token-MLP hidden size D_T, channel-MLP hidden size D_C, depth L and K classes,
    the trainable parameters are (every Linear with bias, every LayerNorm with weight and
    bias, GELU activations)::

        patch embedding  P*C + C
        per block        2*C (LN) + 2*T*D_T + D_T + T (token MLP)
                         + 2*C (LN) + 2*C*D_C + D_C + C (channel MLP)
        head             2*C (LN) + C*K + K

    For 32x32x3 images, patch 4 (T = 64, P = 48) and K = 10:

    - ``"small"`` (the paper's, L = 3, C = 32, D_T = 64, D_C = 32):
      embedding 1,568; block 64 + 8,320 + 64 + 2,112 = 10,560, times 3 = 31,680;
      head 64 + 330 = 394; total **33,642**.
    - ``"large"`` (scale study, L = 12, C = 256, D_T = 64, D_C = 256):
      embedding 12,544; block 512 + 8,320 + 512 + 131,584 = 140,928, times 12 = 1,691,136;
      head 512 + 2,570 = 3,082; total **1,706,762**.

    See :func:`mixer_parameter_count` for the formula as code.
    """

    def __init__(
        self,
        *,
        depth: int,
        width: int,
        token_hidden: int,
        channel_hidden: int,
        patch_size: int = 4,
        image_size: int = 32,
        channels: int = 3,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image size {image_size} is not a multiple of the patch size {patch_size}")
        self.patch_size = patch_size
        tokens = (image_size // patch_size) ** 2
        self.embedding = nn.Linear(channels * patch_size**2, width)
        self.blocks = nn.Sequential(
            *(MixerBlock(tokens, width, token_hidden, channel_hidden) for _ in range(depth))
        )
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        *batch, channels, height, width = images.shape
        p, b = self.patch_size, len(batch)
        patches = images.reshape(*batch, channels, height // p, p, width // p, p)
        # (..., C, H/p, p, W/p, p) -> (..., H/p, W/p, C, p, p) -> (..., tokens, C*p*p)
        patches = patches.permute(*range(b), b + 1, b + 3, b, b + 2, b + 4).flatten(-5, -4).flatten(-3)
        features = self.norm(self.blocks(self.embedding(patches)))
        return self.head(features.mean(-2))


def mixer_parameter_count(
    *,
    depth: int,
    width: int,
    token_hidden: int,
    channel_hidden: int,
    patch_size: int = 4,
    image_size: int = 32,
    channels: int = 3,
    num_classes: int = 10,
) -> int:
    """Number of trainable parameters of :class:`MLPMixer` with these settings (formula in its docstring)."""
    tokens = (image_size // patch_size) ** 2
    embedding = channels * patch_size**2 * width + width
    block = 4 * width + 2 * tokens * token_hidden + token_hidden + tokens
    block += 2 * width * channel_hidden + channel_hidden + width
    head = 2 * width + width * num_classes + num_classes
    return embedding + depth * block + head


def mixer(size: str = "small") -> MLPMixer:
    """The paper's CIFAR-10 Mixer (``"small"``, 33,642 parameters) or the scale-study one (``"large"``, 1,706,762)."""
    if size not in MIXER_SIZES:
        raise ValueError(f"unknown Mixer size {size!r}, expected one of {sorted(MIXER_SIZES)}")
    return MLPMixer(**MIXER_SIZES[size])


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays and nothing else, so a data file cannot run code."""

    # The reconstructors numpy itself pickles arrays and scalars with, whatever its version.
    _allowed: tp.ClassVar[dict[str, tp.Any]] = {
        "_reconstruct": np.zeros(0).__reduce__()[0],
        "scalar": np.float64(0).__reduce__()[0],
        "ndarray": np.ndarray,
        "dtype": np.dtype,
        "_frombuffer": np.arange(1).__reduce_ex__(5)[0],  # protocol 5 (Python 3.14's default) pickles arrays with it
    }

    def find_class(self, module: str, name: str) -> tp.Any:
        if module.split(".")[0] == "numpy" and name in self._allowed:
            return self._allowed[name]
        if (module, name) in (("_codecs", "encode"), ("builtins", "bytes"), ("__builtin__", "bytes")):
            return super().find_class(module, name)  # (bytes: the data of an empty array, protocol 2)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_cifar_batch(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 3072)`` uint8 and labels ``(N,)`` int64 of one CIFAR-10 python batch file.

    Format: a pickled dict (written by Python 2, loaded with ``encoding="bytes"``) with
    ``b"data"``, a uint8 array ``(N, 3072)`` holding each 32x32 image as its red, green then
    blue plane in row-major order, and ``b"labels"``, N integers in 0..9.  Only numpy arrays
    are unpickled (no arbitrary objects).  Raises FileNotFoundError for a missing file and
    ValueError, naming the file and what was expected, for anything else.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: CIFAR-10 batch file not found")
    try:
        with path.open("rb") as stream:
            batch = _ArrayUnpickler(stream, encoding="bytes").load()
    except Exception as exc:
        raise ValueError(f"{path}: expected a pickled CIFAR-10 batch, could not unpickle it ({exc})") from exc
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        keys = sorted(batch, key=repr) if isinstance(batch, dict) else type(batch).__name__
        raise ValueError(f"{path}: expected a dict with keys b'data' and b'labels', got {keys}")
    data, labels = batch[b"data"], np.asarray(batch[b"labels"])
    if isinstance(batch[b"labels"], list) and not batch[b"labels"]:
        labels = labels.astype(np.int64)  # an empty list: no label to be non-integer
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ValueError(f"{path}: expected b'data' as a uint8 array of shape (N, 3072), got {got}")
    if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{path}: expected {len(data)} integer labels, got {labels.dtype} {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{path}: expected labels in 0..9, found {labels.min()}..{labels.max()}")
    return data, labels.astype(np.int64)


def _batches_folder(root: Path) -> Path:
    for folder in (root, root / "cifar-10-batches-py"):
        if (folder / CIFAR10_TEST_FILE).is_file() or (folder / CIFAR10_TRAIN_FILES[0]).is_file():
            return folder
    raise FileNotFoundError(
        f"no CIFAR-10 batch files in {root} or {root / 'cifar-10-batches-py'}: expected "
        f"{', '.join(CIFAR10_TRAIN_FILES)} and {CIFAR10_TEST_FILE} (the python version)"
    )


def _to_images(data: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0)


def load_cifar10(path: str | os.PathLike[str], *, normalize: bool = False) -> tuple[Split, Split]:
    """Train (50,000) and test (10,000) splits of CIFAR-10 from the python batch files.

    ``path`` holds ``data_batch_1`` .. ``data_batch_5`` and ``test_batch`` (see
    :func:`read_cifar_batch`), directly or in its ``cifar-10-batches-py`` folder (the
    archive's layout).  Images are float32 ``(N, 3, 32, 32)`` in [0, 1] (byte / 255); with
    ``normalize`` each channel is standardised, in both splits, by the mean and standard
    deviation of the training images (about (0.491, 0.482, 0.447) and (0.247, 0.243, 0.262)
    for the full set).  Labels are int64.
    """
    folder = _batches_folder(Path(path))
    train = [read_cifar_batch(folder / name) for name in CIFAR10_TRAIN_FILES]
    x_train = _to_images(np.concatenate([data for data, _ in train]))
    y_train = torch.from_numpy(np.concatenate([labels for _, labels in train]))
    data, labels = read_cifar_batch(folder / CIFAR10_TEST_FILE)
    x_test, y_test = _to_images(data), torch.from_numpy(labels)
    if normalize:
        mean = x_train.mean(dim=(0, 2, 3), keepdim=True)
        std = x_train.std(dim=(0, 2, 3), keepdim=True)
        x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    return (x_train, y_train), (x_test, y_test)


def synthetic_cifar10(n_train: int = 500, n_test: int = 100, seed: int = 0) -> tuple[Split, Split]:
    """A CIFAR-shaped stand-in, NOT CIFAR-10: for tests and benchmarks without the data files.

    Each of the 10 classes has a fixed random 4x4x3 colour template, bilinearly upsampled to
    32x32; an image is its class template plus N(0, 0.1^2) pixel noise, clipped to [0, 1].
    Labels are uniform; float32 ``(N, 3, 32, 32)`` images and int64 labels, as
    :func:`load_cifar10` returns.
    """
    generator = torch.Generator().manual_seed(seed)
    templates = F.interpolate(torch.rand(10, 3, 4, 4, generator=generator), size=(32, 32), mode="bilinear")

    def draw(n: int) -> Split:
        labels = torch.randint(0, 10, (n,), generator=generator)
        noise = 0.1 * torch.randn(n, 3, 32, 32, generator=generator)
        return (templates[labels] + noise).clamp(0.0, 1.0), labels

    return draw(n_train), draw(n_test)


def mixer_task(
    train: Split,
    test: Split,
    *,
    size: str = "small",
    name: str = "cifar10",
    seed: int = 0,
    pretrain_epochs: int = 0,
) -> Task:
    """Task of the ``size`` Mixer (:func:`mixer`) on given ``(images, labels)`` splits, named ``{name}_{size}``.

    Loss, metric, output model, seeding and warm start as in
    :func:`~.images.classification_task`.
    """
    return classification_task(
        f"{name}_{size}", lambda: mixer(size), train, test, seed=seed, pretrain_epochs=pretrain_epochs
    )


def cifar10_task(
    path: str | os.PathLike[str],
    size: str = "small",
    n_train: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
    *,
    normalize: bool = False,
    pretrain_epochs: int = 0,
) -> Task:
    """The paper's CIFAR-10 task: :func:`load_cifar10` data and the ``size`` Mixer.

    ``n_train`` / ``n_test`` keep a seeded random subset of each split (all when None).
    """
    train, test = load_cifar10(path, normalize=normalize)
    return mixer_task(
        subset(train, n_train, seed),
        subset(test, n_test, seed),
        size=size,
        seed=seed,
        pretrain_epochs=pretrain_epochs,
    )
