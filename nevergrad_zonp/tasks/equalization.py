"""Nonlinear channel equalisation with a feed-forward MZI network (docs/method.md, "Tasks").

The channel is the classic benchmark of V. J. Mathews and J. Lee, "Adaptive algorithms
for bilinear filtering", Proc. SPIE 2296 (1994), used by H. Jaeger and H. Haas,
"Harnessing nonlinearity", Science 304, 78 (2004) and much of the reservoir-computing
literature.  I.i.d. 4-PAM symbols ``d(n)`` uniform in ``{-3, -1, 1, 3}`` pass through a
linear ISI channel with taps on ``d(n+2) ... d(n-7)``,

    q(n) = 0.08 d(n+2) - 0.12 d(n+1) + d(n) + 0.18 d(n-1) - 0.1 d(n-2)
           + 0.091 d(n-3) - 0.05 d(n-4) + 0.04 d(n-5) + 0.03 d(n-6) + 0.01 d(n-7),

a memoryless polynomial nonlinearity and white Gaussian noise,

    u(n) = q(n) + 0.036 q(n)^2 - 0.011 q(n)^3 + nu(n),

with ``Var nu = P / 10^(SNR / 10)``, ``P`` the mean power of the noise-free received
signal over the generated sequence; default SNR 24 dB (Jaeger and Haas span 12-32 dB).
The equaliser sees the window ``(u(n), u(n-1), ..., u(n-W+1))``, default ``W = 11``, and
recovers the delayed symbol ``d(n-2)`` (delay 2, as in Jaeger and Haas).  Train and test
splits are two independent sequences drawn from one seeded generator.

Output model "gaussian": the network regresses the symbol value (``y`` of shape
``(batch, 1)``), loss = mean squared error, and the symbol decision is the nearest level.
This is how the benchmark is scored (MSE and symbol error rate); it also keeps the sign
of the amplitude, which a coherent readout measures directly.  For this channel the
best linear equaliser has an SER near 0.3 % at 24 dB.

Model: :class:`~nevergrad_zonp.photonics.feedforward.MZIFeedForward` with 12 ports (the
11 samples plus a bias light), 3 hidden ``Clements(12, 12)`` + modReLU layers and an output
``Clements(12, 12)`` read out coherently on port 0 with gain 1.5: 4 x 132 + 3 x 12 = 564
trainable parameters.  The gain is needed because the best linear equaliser has weight
norm about 1.1, more than a mesh row (norm 1) can give; 1.5 leaves headroom while keeping
the initial outputs on the scale of the symbols.  The chip is its twin with fabrication errors
(:func:`~nevergrad_zonp.photonics.chip.fabricate`).
"""

from __future__ import annotations

import math

import torch

from nevergrad_zonp._checks import integer_at_least
from nevergrad_zonp.losses import per_setting_squared_error
from nevergrad_zonp.photonics.chip import FabricationErrors, fabricate
from nevergrad_zonp.photonics.feedforward import MZIFeedForward
from nevergrad_zonp.tasks.base import Task

SYMBOLS = (-3.0, -1.0, 1.0, 3.0)
CHANNEL_TAPS = (0.08, -0.12, 1.0, 0.18, -0.1, 0.091, -0.05, 0.04, 0.03, 0.01)
"""Taps on ``d(n+2), d(n+1), ..., d(n-7)``."""
CHANNEL_LEAD = 2
"""Number of future symbols in the ISI (the taps start at ``d(n+2)``)."""
NONLINEARITY = (0.036, -0.011)
"""Coefficients of ``q^2`` and ``q^3``."""


def channel_equalization_data(
    n: int, *, snr_db: float, window: int = 11, delay: int = 2, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` windows of received samples ``(n, window)`` and their symbols ``d(n - delay)``, shape ``(n, 1)``."""
    span = len(CHANNEL_TAPS)
    if not integer_at_least(n, 1):
        raise ValueError(f"the number of samples must be a positive integer, got {n!r}")
    if not integer_at_least(window, 1):
        raise ValueError(f"window must be a positive integer, got {window!r}")
    latest = window - 1 + span - 1 - CHANNEL_LEAD  # the newest symbol the first window sees
    if not (integer_at_least(delay, 0) and delay <= latest):
        raise ValueError(f"delay must be an integer in [0, {latest}] (the symbols the first window sees), got {delay!r}")
    if not math.isfinite(snr_db):
        raise ValueError(f"snr_db must be finite, got {snr_db!r}")
    levels = torch.tensor(SYMBOLS, dtype=torch.float64)
    symbols = levels[torch.randint(len(SYMBOLS), (n + window + span - 2,), generator=generator)]
    # clean[m] = q(m + span - 1 - CHANNEL_LEAD): the taps meet symbols[m], ..., symbols[m + span - 1].
    taps = torch.tensor(CHANNEL_TAPS, dtype=torch.float64).flip(0)
    isi = symbols.unfold(0, span, 1) @ taps
    clean = isi + NONLINEARITY[0] * isi**2 + NONLINEARITY[1] * isi**3
    noise_std = torch.sqrt(clean.pow(2).mean() / 10 ** (snr_db / 10))
    received = clean + noise_std * torch.randn(clean.shape, generator=generator, dtype=torch.float64)
    inputs = received.unfold(0, window, 1).flip(-1)
    newest = torch.arange(window - 1, window - 1 + n) + span - 1 - CHANNEL_LEAD
    targets = symbols[newest - delay]
    return inputs.float(), targets.float().unsqueeze(-1)


def decide_symbols(outputs: torch.Tensor) -> torch.Tensor:
    """Nearest 4-PAM level to each output."""
    levels = torch.tensor(SYMBOLS, dtype=outputs.dtype, device=outputs.device)
    return levels[(outputs.unsqueeze(-1) - levels).abs().argmin(-1)]


def mean_squared_error(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean of ``(y - d)^2`` over the batch."""
    return (outputs - targets).pow(2).mean()


# The batched twin the adapters use: the squared-error loss of each of V settings in one call, the
# loop's values bit for bit (real outputs: |e|^2 = e^2).
mean_squared_error.per_setting = per_setting_squared_error  # type: ignore[attr-defined]


def symbol_error_rate(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    """Fraction of symbols whose nearest-level decision is wrong."""
    return float((decide_symbols(outputs) != targets).float().mean())


def equalization_task(
    seed: int = 0,
    *,
    n_train: int = 5000,
    n_test: int = 5000,
    snr_db: float = 24.0,
    window: int = 11,
    delay: int = 2,
    hidden_layers: int = 3,
    gain: float = 1.5,
    chip_seed: int | None = None,
    errors: FabricationErrors = FabricationErrors(),
) -> Task:
    """The equalisation task of this module as a :class:`Task`.

    Data and model initialisation come from ``seed``; the chip's fabrication errors from
    ``chip_seed`` (default ``seed``) with magnitudes ``errors``.
    """
    generator = torch.Generator().manual_seed(seed)
    train = channel_equalization_data(n_train, snr_db=snr_db, window=window, delay=delay, generator=generator)
    test = channel_equalization_data(n_test, snr_db=snr_db, window=window, delay=delay, generator=generator)
    model = MZIFeedForward(window, 1, ports=window + 1, hidden_layers=hidden_layers, gain=gain, generator=generator)
    return Task(
        name="equalization",
        model=model,
        train=train,
        test=test,
        output="gaussian",
        loss=mean_squared_error,
        metrics={"mse": lambda outputs, targets: float(mean_squared_error(outputs, targets)), "ser": symbol_error_rate},
        chip=fabricate(model, seed=seed if chip_seed is None else chip_seed, errors=errors),
    )
