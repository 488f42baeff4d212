"""Small models, data and hardware stand-ins shared by the tests of several packages."""

import threading

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
