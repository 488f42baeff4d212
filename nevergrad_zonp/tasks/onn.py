"""Image classification with a three-mesh optical neural network (docs/guides/chip-training.md).

The classifier of H. Sawada, K. Aoyama and M. Notomi, "Layered-Parameter Perturbation for
Zeroth-Order Optimization of Optical Neural Networks", AAAI 2025, on complex field
amplitudes in ``K`` waveguides:

    x   = flatten(image)                                  (n = C H W real pixels)
    z_0 = rfft(x, norm="ortho")[1 .. K]                   (K complex inputs, bin 0 dropped)
    z_1 = modReLU_1(Clements_1(K, K) z_0)
    z_2 = modReLU_2(Clements_2(K, K) z_1)
    a   = Clements_3(K, K) z_2
    s_c = |a_{p + c}|^2,   c = 0..9,   p = (K - 10) // 2   (the powers of the 10 central ports)

The Fourier front end is electronic (it sets the injected fields) and exact on the chip;
the logits ``s`` are the detected powers of the central ten output ports, and the loss is
the categorical cross-entropy of those logits (output model "categorical").  The
orthonormal transform keeps energy (Parseval): the input power is that of bins ``1..K``
of the image, and while the biases are at most 0 it bounds the sum of the logits (ideal
meshes are lossless and such modReLUs only shrink moduli).

modReLU (:class:`~nevergrad_zonp.photonics.layers.ModReLU`):
``modReLU(z)_k = relu(|z_k| + b_k) z_k / |z_k|`` with one learned real bias per port,
initialised to ``b = 0``: the network starts as a linear interferometer followed by
square-law detection, and training moves the biases (a negative ``b_k`` thresholds the
port).  The AAAI paper does not state its initial biases; ``b = 0`` is this package's
choice, as for its other photonic networks.

Trainable parameters: the phases of the three meshes and the two modReLUs' biases,
``3 K (K - 1) + 2 K`` in all (752 at ``K = 16``, 3,040 at ``K = 32``); mesh phases start
``N(0, 1)`` from the task's seed.  The chip is the ideal model's twin with fabrication
errors in its three meshes (:func:`~nevergrad_zonp.photonics.chip.fabricate`), as for the
equalization and copying chips: backprop pretrains the ideal model
(:func:`~nevergrad_zonp.tasks.base.pretrain`, which programs the chip with the result)
and zeroth-order training continues on the chip.

Data: scikit-learn's digits as 28x28 images (:func:`~nevergrad_zonp.tasks.images.load_digits_28`,
no download) by default, or MNIST / FashionMNIST from their idx files
(:func:`~nevergrad_zonp.tasks.images.load_mnist`); inputs are images ``(N, 1, 28, 28)`` in
[0, 1] and int64 labels.
"""

from __future__ import annotations

import os

import torch
from torch import nn
from torch.nn import functional as F

from nevergrad_zonp._checks import integer_at_least
from nevergrad_zonp.losses import accuracy
from nevergrad_zonp.photonics.chip import FabricationErrors, fabricate
from nevergrad_zonp.photonics.layers import ModReLU
from nevergrad_zonp.photonics.mesh import ClementsMesh
from nevergrad_zonp.tasks.base import Task, pretrain
from nevergrad_zonp.tasks.images import Split, load_digits_28, load_mnist, subset

CLASSES = 10
"""Number of classes, read out on as many central ports."""
MESHES = 3
"""``Clements(K, K)`` meshes, with a modReLU between two consecutive ones."""
IMAGE_DIMS = 3
"""Trailing dimensions of an image, ``(C, H, W)``, flattened before the Fourier transform."""


def fourier_features(images: torch.Tensor, k: int) -> torch.Tensor:
    """Bins ``1..k`` of the orthonormal real FFT of the flattened images: complex ``(*B, k)``.

    ``images`` has shape ``(*B, C, H, W)``; its last three dimensions are flattened (C order)
    into ``n`` samples and transformed by ``torch.fft.rfft(x, norm="ortho")``.  Bin 0 (the
    mean) is dropped.  Needs ``1 <= k <= n // 2`` (bins up to the Nyquist bin).
    """
    if images.ndim < IMAGE_DIMS:
        raise ValueError(f"expected images of shape (*B, C, H, W), got shape {tuple(images.shape)}")
    flat = images.flatten(-IMAGE_DIMS)
    if not (integer_at_least(k, 1) and k <= flat.shape[-1] // 2):
        raise ValueError(f"K must be an integer in [1, {flat.shape[-1] // 2}] for images of {flat.shape[-1]} pixels, got {k!r}")
    return torch.fft.rfft(flat, norm="ortho")[..., 1 : int(k) + 1]


def readout_ports(k: int) -> slice:
    """The ``CLASSES`` central output ports of a ``k``-port network, ``(k - 10) // 2`` onwards."""
    first = (k - CLASSES) // 2
    return slice(first, first + CLASSES)


class OpticalImageClassifier(nn.Module):
    """Images ``(*B, C, H, W)`` (real) to logits ``(*B, 10)``: the detected powers of the central ports.

    ``Clements(K, K) -> modReLU -> Clements(K, K) -> modReLU -> Clements(K, K)`` on the
    Fourier fields of :func:`fourier_features`; see the module's docstring.
    """

    def __init__(self, ports: int, *, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if not integer_at_least(ports, CLASSES):
            raise ValueError(f"K (the number of ports) must be an integer of at least {CLASSES}, got {ports!r}")
        self.ports = int(ports)
        self.meshes = nn.ModuleList(ClementsMesh(self.ports, generator=generator) for _ in range(MESHES))
        self.activations = nn.ModuleList(ModReLU(self.ports) for _ in range(MESHES - 1))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Input fields ``(*B, K)`` (complex): bins ``1..K`` of the images' orthonormal real FFT."""
        return fourier_features(images, self.ports)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        z = self.encode(images)
        for mesh, activation in zip(self.meshes, self.activations):
            z = activation(mesh(z))
        out = self.meshes[-1](z)[..., readout_ports(self.ports)]
        return out.real**2 + out.imag**2

    def extra_repr(self) -> str:
        return f"ports={self.ports}, classes={CLASSES}"


def data_suffix(path: str | os.PathLike[str] | None, fashion: bool = False) -> str:
    """The suffix of the task's name for its data: ``""`` (the digits), ``"_mnist"`` or ``"_fashion_mnist"`` (idx files in ``path``)."""
    if path is None:
        return ""
    return "_fashion_mnist" if fashion else "_mnist"


def _image_splits(
    seed: int, path: str | os.PathLike[str] | None, fashion: bool, data: tuple[Split, Split] | None
) -> tuple[str, tuple[Split, Split]]:
    """The data set's name suffix and its ``(train, test)`` splits."""
    if path is not None and data is not None:
        raise ValueError("give either path (idx files) or data (splits), not both")
    if data is not None:
        for (images, labels), split in zip(data, ("train", "test")):
            if images.ndim != 1 + IMAGE_DIMS or len(labels) != len(images):
                raise ValueError(
                    f"data: the {split} split must hold images (N, C, H, W) and N labels, "
                    f"got shapes {tuple(images.shape)} and {tuple(labels.shape)}"
                )
        return "_data", data
    if path is not None:
        return data_suffix(path, fashion), load_mnist(path, fashion=fashion)
    return "", load_digits_28(seed)


def onn_classifier_task(
    seed: int = 0,
    k: int = 16,
    path: str | os.PathLike[str] | None = None,
    fashion: bool = False,
    *,
    data: tuple[Split, Split] | None = None,
    n_train: int | None = None,
    n_test: int | None = None,
    pretrain_epochs: int = 0,
    chip_seed: int | None = None,
    errors: FabricationErrors = FabricationErrors(),
) -> Task:
    """The optical image classifier of this module with ``K = k`` ports, as a :class:`Task`.

    Data: scikit-learn's digits as 28x28 images by default (split from ``seed``); the
    MNIST idx files in ``path`` (FashionMNIST's if ``fashion``) read by
    :func:`~nevergrad_zonp.tasks.images.load_mnist`; or ``data``, ``(train, test)`` splits of
    images ``(N, C, H, W)`` and labels in ``0..9``.  ``n_train`` / ``n_test`` keep a seeded
    random subset of each split (all samples when None).  Names: ``"onn16"`` (digits),
    ``"onn16_mnist"``, ``"onn16_fashion_mnist"``, ``"onn16_data"`` (given splits), for
    ``k = 16``.

    The ideal model's phases come from ``seed``, the chip's fabrication errors from
    ``chip_seed`` (default ``seed``) with magnitudes ``errors``.  ``pretrain_epochs > 0``
    trains the ideal model by backprop (:func:`~nevergrad_zonp.tasks.base.pretrain`, Adam,
    default learning rate and batch size, same seed) and programs the chip with the result;
    0 leaves both at the random initialisation.  Raises ``ValueError`` for ``k < 10`` (the
    ten classes need ten output ports) or ``k`` above half the pixels of an image.
    """
    if not integer_at_least(k, CLASSES):
        raise ValueError(f"K (the number of ports) must be an integer of at least {CLASSES}, got {k!r}")
    k = int(k)
    suffix, (train, test) = _image_splits(seed, path, fashion, data)
    train, test = subset(train, n_train, seed), subset(test, n_test, seed)
    fourier_features(train[0][:1], k)  # refuses a K beyond the images' spectrum before building anything
    model = OpticalImageClassifier(k, generator=torch.Generator().manual_seed(seed))
    task = Task(
        name=f"onn{k}{suffix}",
        model=model,
        train=train,
        test=test,
        output="categorical",
        loss=F.cross_entropy,
        metrics={"accuracy": accuracy},
        chip=fabricate(model, seed=seed if chip_seed is None else chip_seed, errors=errors),
    )
    if pretrain_epochs:
        pretrain(task, epochs=pretrain_epochs, seed=seed)
    return task
