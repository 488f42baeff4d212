"""LPP's layered Fisher: one matrix per module of the ideal model, from that module's own output Jacobian.

Sawada, Aoyama and Notomi, "Layered-Parameter Perturbation for Zeroth-Order Optimization of
Optical Neural Networks", AAAI 2025 (docs/method.md, "Baselines"): for a module ``u`` with
parameters ``theta_u`` and output ``y = f_u(theta_u; x)``,

    F_u = E_x E_r [g g^T],   g = d/d theta_u Re<r, f_u(theta_u; x)>,

with ``R_in`` random inputs ``x`` (standard normal, complex where the module takes complex
fields, each rescaled to norm ``sqrt(m)`` for ``m`` input entries) and ``R_out`` random
output perturbations ``r`` per input (standard normal, complex ``CN(0, 1)`` entries for a
complex output), back-propagated through the module alone.  It is evaluated on the *ideal*
model (the simulation without fabrication errors) at the current parameters: it costs no
query of the chip, only computation.

Which modules get a matrix (:class:`LayeredModel`): by default the Clements meshes
(:class:`~nevergrad_zonp.photonics.mesh.ClementsMesh`) when the model has any (the paper's
choice: the other parameters keep isotropic directions), else every leaf module that owns
optimized parameters (a convolution, a linear layer): this package's reading of "the
modules of the model" for a network without meshes.
"""

from __future__ import annotations

import dataclasses
import math
import typing as tp

import numpy as np
import torch
from torch import nn

from ..photonics.mesh import ClementsMesh

#: Most numbers of per-sample gradients held at once while a module's Fisher is accumulated.
CHUNK_ELEMENTS = 20_000_000


@dataclasses.dataclass(frozen=True)
class Layer:
    """A module with its own Fisher: its name, its span ``[start, stop)`` of the flat parameter vector, its input."""

    name: str
    start: int
    stop: int
    parameters: tp.Tuple[tp.Tuple[str, tp.Tuple[int, ...], torch.dtype], ...]  #: (local name, shape, dtype)
    input_shape: tp.Tuple[int, ...]  #: of one sample
    input_complex: bool


class LayeredModel:
    """The layers of ``model`` (the ideal network) among the optimized parameters, and their Fishers.

    ``names`` and ``offsets``: the optimized parameters (qualified names) and their offsets in
    the flat vector (``offsets[i]:offsets[i + 1]`` for ``names[i]``).  ``sample_inputs``: a
    small batch of the network's inputs, run once to record each module's input shape.
    ``layer_types``: the module classes that get a Fisher (default: see the module
    docstring).  A module whose parameters are not all optimized, that the forward pass
    does not call, or whose input is not floating point or complex (an embedding's indices)
    gets none (a mesh the network uses through its ``unitary()`` takes
    complex fields on its ports).
    """

    def __init__(
        self,
        model: nn.Module,
        names: tp.Sequence[str],
        offsets: tp.Sequence[int],
        sample_inputs: tp.Any,
        layer_types: tp.Optional[tp.Tuple[type, ...]] = None,
    ) -> None:
        self.model = model
        where = {name: (int(offsets[i]), int(offsets[i + 1])) for i, name in enumerate(names)}
        candidates: tp.Dict[str, nn.Module] = {}
        for qualified, module in model.named_modules():
            own = [local for local, _ in module.named_parameters(recurse=False)]
            full = [f"{qualified}.{local}" if qualified else local for local in own]
            if own and all(name in where for name in full):
                spans = sorted(where[name] for name in full)
                if all(spans[i][1] == spans[i + 1][0] for i in range(len(spans) - 1)):
                    candidates[qualified] = module
        if layer_types is None:
            meshes = tuple(name for name, module in candidates.items() if isinstance(module, ClementsMesh))
            chosen = meshes or tuple(name for name, module in candidates.items() if not any(True for _ in module.children()))
        else:
            chosen = tuple(name for name, module in candidates.items() if isinstance(module, layer_types))
        seen = _input_signatures(model, {name: candidates[name] for name in chosen}, sample_inputs)
        self.layers: tp.List[Layer] = []
        self.modules: tp.List[nn.Module] = []
        for name in chosen:
            module = candidates[name]
            if name not in seen and isinstance(module, ClementsMesh):  # used through unitary(): fields on its ports
                seen[name] = ((module.ports,), True)
            if name not in seen:
                continue
            own = list(module.named_parameters(recurse=False))
            full = [f"{name}.{local}" if name else local for local, _ in own]
            start = min(where[n][0] for n in full)
            stop = max(where[n][1] for n in full)
            ordered = sorted(zip(full, own), key=lambda item: where[item[0]][0])
            parameters = tuple((local, tuple(param.shape), param.dtype) for _, (local, param) in ordered)
            shape, is_complex = seen[name]
            self.layers.append(Layer(name, start, stop, parameters, shape, is_complex))
            self.modules.append(module)
        order = np.argsort([layer.start for layer in self.layers], kind="stable")
        self.layers = [self.layers[i] for i in order]
        self.modules = [self.modules[i] for i in order]

    @property
    def spans(self) -> tp.List[tp.Tuple[int, int]]:
        """``[start, stop)`` of every layer in the flat vector, in order."""
        return [(layer.start, layer.stop) for layer in self.layers]

    def fisher(self, theta: np.ndarray, index: int, *, inputs: int = 100, draws: int = 100, seed: int = 0) -> np.ndarray:
        """``F_u`` (module docstring) of layer ``index`` at the flat parameter values ``theta``, ``(n_u, n_u)`` float64."""
        layer, module = self.layers[index], self.modules[index]
        generator = torch.Generator().manual_seed(int(seed))
        dtype = layer.parameters[0][2]
        flat = torch.as_tensor(np.asarray(theta[layer.start : layer.stop]), dtype=dtype)
        samples = _random_inputs(inputs, layer.input_shape, layer.input_complex, generator, dtype)
        sizes = [math.prod(shape) for _, shape, _ in layer.parameters]

        def raw(p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            params = {
                local: piece.reshape(shape).to(param_dtype)
                for (local, shape, param_dtype), piece in zip(layer.parameters, torch.split(p, sizes))
            }
            return torch.func.functional_call(module, params, (x.unsqueeze(0),))

        def output(p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            y = raw(p, x)
            return (torch.view_as_real(y) if y.is_complex() else y).reshape(-1)

        with torch.no_grad():
            example = raw(flat, samples[0])
        real = torch.view_as_real(example) if example.is_complex() else example
        scale = math.sqrt(0.5) if example.is_complex() else 1.0  # CN(0, 1) entries: real and imaginary parts of variance 1/2
        perturbations = scale * torch.randn(inputs, draws, real.numel(), generator=generator, dtype=real.dtype)

        def sample_gradients(p: torch.Tensor, x: torch.Tensor, rs: torch.Tensor) -> torch.Tensor:
            _, pullback = torch.func.vjp(lambda q: output(q, x), p)
            return torch.func.vmap(lambda r: pullback(r)[0])(rs)

        per_input = torch.func.vmap(sample_gradients, in_dims=(None, 0, 0))
        size = layer.stop - layer.start
        chunk = max(1, min(inputs, CHUNK_ELEMENTS // max(1, draws * max(size, real.numel()))))
        total = np.zeros((size, size))
        for begin in range(0, inputs, chunk):
            grads = per_input(flat, samples[begin : begin + chunk], perturbations[begin : begin + chunk])
            grads = grads.reshape(-1, size).float()
            total += (grads.T @ grads).double().numpy()
        return total / (inputs * draws)


def _random_inputs(
    count: int, shape: tp.Tuple[int, ...], is_complex: bool, generator: torch.Generator, dtype: torch.dtype
) -> torch.Tensor:
    """``count`` standard normal inputs of one sample's ``shape``, each rescaled to norm ``sqrt(m)``."""
    real = dtype if dtype.is_floating_point else torch.float32
    if is_complex:
        values = torch.complex(
            torch.randn(count, *shape, generator=generator, dtype=real),
            torch.randn(count, *shape, generator=generator, dtype=real),
        ) * math.sqrt(0.5)
    else:
        values = torch.randn(count, *shape, generator=generator, dtype=real)
    flat = values.reshape(count, -1)
    norms = flat.abs().pow(2).sum(dim=1).sqrt().clamp_min(torch.finfo(real).tiny)
    return (flat * (math.sqrt(flat.shape[1]) / norms)[:, None]).reshape(values.shape)


def _input_signatures(
    model: nn.Module, modules: tp.Mapping[str, nn.Module], sample_inputs: tp.Any
) -> tp.Dict[str, tp.Tuple[tp.Tuple[int, ...], bool]]:
    """The shape of one sample's input (and whether it is complex) of each module, from one forward pass."""
    seen: tp.Dict[str, tp.Tuple[tp.Tuple[int, ...], bool]] = {}
    handles = []
    for name, module in modules.items():

        def hook(_module: nn.Module, args: tp.Tuple[tp.Any, ...], name: str = name) -> None:
            first = args[0] if args else None
            # a layer takes fields or activations: a module fed indices (an embedding) keeps isotropic directions
            if name not in seen and isinstance(first, torch.Tensor) and first.ndim >= 1 and (first.is_floating_point() or first.is_complex()):
                seen[name] = (tuple(first.shape[1:]), bool(first.is_complex()))

        handles.append(module.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            model(sample_inputs)
    finally:
        for handle in handles:
            handle.remove()
    return seen
