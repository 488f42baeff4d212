"""Small models, data and hardware stand-ins shared by the tests of several packages."""

import gzip
import threading
from pathlib import Path

import numpy as np
import torch

from nevergrad_zonp import HardwareAdapter


class RecordingNetwork:
    """Hardware callable: a linear map; records the batch each parameter setting saw."""

    def __init__(self) -> None:
        self.seen: list[tuple[bytes, tuple[int, ...]]] = []
        self.rows = 0
        self.lock = threading.Lock()

    def __call__(self, thetas: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        ids = tuple(int(i) for i in inputs[:, 0])
        with self.lock:
            self.rows += len(thetas)
            self.seen.extend((theta.numpy().tobytes(), ids) for theta in thetas)
        weights = thetas.reshape(len(thetas), 2, 3)
        return torch.einsum("vcd,bd->vbc", weights, inputs[:, 1:].double())


def make_hardware(batch_size: int = 8) -> tuple[HardwareAdapter, RecordingNetwork]:
    gen = torch.Generator().manual_seed(0)
    inputs = torch.cat([torch.arange(80.0)[:, None], torch.randn(80, 3, generator=gen)], dim=1)
    targets = torch.randn(80, 2, generator=gen)
    network = RecordingNetwork()
    adapter = HardwareAdapter(network, np.zeros(6), (inputs, targets), output="gaussian", batch_size=batch_size)
    return adapter, network


def small_classifier(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))


def classification_data(n: int = 60):
    gen = torch.Generator().manual_seed(1)
    return torch.randn(n, 4, generator=gen), torch.randint(0, 3, (n,), generator=gen)


def write_idx(path: Path, array: np.ndarray, code: int = 0x08, *, gz: bool = False) -> None:
    """An idx file (the MNIST format) of ``array``, big-endian, gzipped if ``gz``."""
    header = bytes([0, 0, code, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    raw = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


def write_mnist(
    folder: Path, rng: np.random.Generator, *, gz: bool = False, n_train: int = 5, n_test: int = 3
) -> dict[str, np.ndarray]:
    """The four MNIST idx files in ``folder`` (gzipped if ``gz``): random 28x28 byte images, labels 0..9; returns them."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for name, array in arrays.items():
        write_idx(folder / (name + ".gz" if gz else name), array, gz=gz)
    return arrays
