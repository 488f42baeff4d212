"""The two coordinate-wise recurrent networks of ZO-L2L and their weights files.

Ruan, Xiong, Reddi, Kumar and Hsieh, "Learning to Learn by Zeroth-Order Oracle", ICLR 2020
(docs/method.md, "The learned optimizer (ZO-L2L)").  Both networks act on every coordinate
independently with shared
weights: the coordinates are the batch axis of one LSTM cell, so one set of weights serves
any dimension.

- :class:`CoordinateLSTM` with one input is the **UpdateRNN**: it maps a coordinate's ZO
  gradient estimate to that coordinate's parameter update (added as is, no learning rate).
- With two inputs it is the **QueryRNN**: it maps a coordinate's previous estimate and
  previous update to an output ``o``; the query direction's standard deviation on that
  coordinate is ``|1 + o|``, renormalised over the block to mean square 1.

Both are one LSTM layer of hidden size 10 without biases, followed by a linear map
``10 -> 1`` without bias whose initial weights are scaled by 0.1 so that an untrained network starts near
zero output (small updates, isotropic queries).  Everything runs in float64.

Weights are stored as a compressed NumPy ``.npz`` archive (plain arrays, no pickle) with a
``metadata`` entry (UTF-8 JSON bytes): how they were made (command, seed, configuration,
time, per-epoch history).
"""

from __future__ import annotations

import json
import os
import typing as tp
from pathlib import Path

import numpy as np
import torch
from torch import nn

#: Hidden size of both LSTMs (the paper's).
HIDDEN = 10
#: Initial scale of the output layer's weights (the paper's public code: x 0.1).
OUTPUT_SCALE = 0.1
_WEIGHTS_FOLDER = Path(__file__).resolve().parent / "weights"
#: Weights shipped with the package, by name (how each was made: docs/guides/learned.md and its metadata).
#: ``generic``: meta-trained on random quadratics at scales 0.1..10 (the registry default,
#: for Nevergrad problems); ``attack_digits``: on black-box attacks of the digits classifier
#: (the ZO-L2L paper's benchmark); ``equalization``: on fine-tuning equalization chips after
#: backprop pretraining (a training task; chip seeds none of the suites use).
SHIPPED_WEIGHTS = {
    name: _WEIGHTS_FOLDER / f"{name}.npz" for name in ("generic", "attack_digits", "equalization")
}
DEFAULT_WEIGHTS = SHIPPED_WEIGHTS["generic"]


def weights_path(weights: tp.Union[str, os.PathLike, None]) -> Path:
    """The file of ``weights``: a shipped name (``"generic"``, ``"attack_digits"``), a path, or ``None`` (generic)."""
    if weights is None:
        return DEFAULT_WEIGHTS
    if isinstance(weights, str) and weights in SHIPPED_WEIGHTS:
        return SHIPPED_WEIGHTS[weights]
    return Path(weights)

State = tp.Tuple[torch.Tensor, torch.Tensor]


class CoordinateLSTM(nn.Module):
    """One LSTM cell (no biases) and a linear output ``hidden -> 1``, applied coordinate-wise.

    Parameters
    ----------
    inputs: features per coordinate (1 for the UpdateRNN, 2 for the QueryRNN).
    hidden: hidden size of the cell.
    output_scale: factor applied to the initial output weights.
    input_scale: fixed factor on the features (not trained; stored with the weights).
    """

    def __init__(
        self, inputs: int, hidden: int = HIDDEN, output_scale: float = OUTPUT_SCALE, input_scale: float = 1.0
    ) -> None:
        super().__init__()
        if inputs < 1 or hidden < 1:
            raise ValueError(f"inputs and hidden must be positive, got {inputs} and {hidden}")
        if not input_scale > 0:
            raise ValueError(f"input_scale must be positive, got {input_scale}")
        self.inputs, self.hidden = int(inputs), int(hidden)
        # A fixed factor on the inputs (part of the weights file): the estimates of a family
        # whose gradients are large would otherwise saturate the LSTM's gates.
        self.register_buffer("input_scale", torch.tensor(float(input_scale), dtype=torch.float64))
        self.cell = nn.LSTMCell(self.inputs, self.hidden, bias=False, dtype=torch.float64)
        self.head = nn.Linear(self.hidden, 1, bias=False, dtype=torch.float64)  # no constant drift (the authors')
        with torch.no_grad():
            self.head.weight.mul_(output_scale)

    def initial_state(self, count: int) -> State:
        """Zero hidden and cell states for ``count`` coordinates."""
        zeros = torch.zeros(count, self.hidden, dtype=torch.float64)
        return zeros, zeros.clone()

    def forward(self, features: torch.Tensor, state: State) -> tp.Tuple[torch.Tensor, State]:
        """Outputs ``(M,)`` and the next state for ``features`` of shape ``(M, inputs)`` (M coordinates)."""
        if features.ndim != 2 or features.shape[1] != self.inputs:
            raise ValueError(f"features must have shape (coordinates, {self.inputs}), got {tuple(features.shape)}")
        h, c = self.cell(features * self.input_scale, state)
        return self.head(h)[:, 0], (h, c)


def update_rnn(seed: int = 0, hidden: int = HIDDEN, input_scale: float = 1.0) -> CoordinateLSTM:
    """A freshly initialised UpdateRNN (seeded, without touching torch's global random state)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CoordinateLSTM(1, hidden, input_scale=input_scale)


def query_rnn(seed: int = 0, hidden: int = HIDDEN, input_scale: float = 1.0) -> CoordinateLSTM:
    """A freshly initialised QueryRNN (seeded, without touching torch's global random state)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        return CoordinateLSTM(2, hidden, input_scale=input_scale)


def query_std(output: torch.Tensor) -> torch.Tensor:
    """Per-coordinate standard deviations ``|1 + o|`` renormalised to mean square 1 (isotropic if degenerate)."""
    std = (1.0 + output).abs()
    mean_square = torch.mean(std**2)
    if not torch.isfinite(mean_square) or mean_square <= 0:
        return torch.ones_like(std)
    return std / torch.sqrt(mean_square)


def save_weights(path: tp.Union[str, os.PathLike], update: CoordinateLSTM, query: CoordinateLSTM, metadata: dict) -> Path:
    """Writes both networks' weights and ``metadata`` (JSON-serialisable) to an ``.npz`` file."""
    arrays = {f"update.{k}": v.detach().cpu().numpy() for k, v in update.state_dict().items()}
    arrays.update({f"query.{k}": v.detach().cpu().numpy() for k, v in query.state_dict().items()})
    arrays["metadata"] = np.frombuffer(json.dumps(metadata, sort_keys=True).encode("utf-8"), dtype=np.uint8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        np.savez_compressed(handle, **arrays)
    return path


def load_weights(path: tp.Union[str, os.PathLike, None] = None) -> tp.Tuple[CoordinateLSTM, CoordinateLSTM, dict]:
    """The UpdateRNN, the QueryRNN and the metadata of a weights file (a path or a shipped name; default: generic)."""
    path = weights_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no ZO-L2L weights file at {path}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            entries = {key: archive[key] for key in archive.files}
    except Exception as error:  # a truncated zip, a text file, an empty file, object arrays
        raise ValueError(f"{path} is not a readable ZO-L2L weights file (.npz): {type(error).__name__}: {error}") from None
    if "metadata" not in entries:
        raise ValueError(f"{path} is not a ZO-L2L weights file (no metadata entry)")
    try:
        metadata = json.loads(entries.pop("metadata").tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: its metadata entry is not UTF-8 JSON ({error})") from None
    networks = []
    for prefix, inputs in (("update", 1), ("query", 2)):
        arrays = {k[len(prefix) + 1 :]: v for k, v in entries.items() if k.startswith(prefix + ".")}
        for key, value in arrays.items():
            if not np.issubdtype(value.dtype, np.floating) or not np.all(np.isfinite(value)):
                raise ValueError(f"{path}: {prefix}.{key} must hold finite real numbers, got {value.dtype} {value.shape}")
        if "cell.weight_hh" not in arrays:
            raise ValueError(f"{path} has no {prefix} network")
        if arrays["cell.weight_hh"].ndim != 2:
            raise ValueError(f"{path}: {prefix}.cell.weight_hh must be a matrix, got shape {arrays['cell.weight_hh'].shape}")
        if "input_scale" in arrays and not float(arrays["input_scale"]) > 0:
            raise ValueError(f"{path}: {prefix}.input_scale must be positive, got {float(arrays['input_scale'])}")
        state = {key: torch.from_numpy(value) for key, value in arrays.items()}
        hidden = state["cell.weight_hh"].shape[1]
        state.setdefault("input_scale", torch.tensor(1.0, dtype=torch.float64))  # files written before the option
        network = CoordinateLSTM(inputs, hidden)
        try:
            network.load_state_dict(state)
        except RuntimeError as error:
            raise ValueError(f"{path}: {prefix} network weights do not fit: {error}") from None
        networks.append(network.requires_grad_(False))
    return networks[0], networks[1], metadata
