"""Checks of settings shared by the optimizers, the adapters and the meta-training: a bad value raises ``ValueError`` naming it."""

from __future__ import annotations

import math
import numbers
import typing as tp

import numpy as np


def integer_at_least(value: tp.Any, minimum: int) -> bool:
    """Whether ``value`` is an integer (an int or an integral float) ``>= minimum``; NaN, inf, None and strings are not."""
    try:
        return bool(value >= minimum and int(value) == value)
    except (TypeError, ValueError, OverflowError):
        return False


def positive_finite(value: tp.Any) -> bool:
    """Whether ``value`` is a finite real number ``> 0``; NaN, inf, None and strings are not."""
    try:
        return bool(math.isfinite(value) and value > 0)
    except TypeError:
        return False


def _is_bool(value: tp.Any) -> bool:
    return isinstance(value, (bool, np.bool_))


def check_integer(
    name: str, value: tp.Any, minimum: int = 1, *, optional: bool = False, whole: bool = False
) -> tp.Optional[int]:
    """``value`` as an ``int`` if it is an integer ``>= minimum`` (``None`` too if ``optional``); else ``ValueError``.

    An integral float (``1e4``) is taken as its integer unless ``whole``, which takes integer
    types only.
    """
    if optional and value is None:
        return None
    if _is_bool(value) or not integer_at_least(value, minimum) or (whole and not isinstance(value, numbers.Integral)):
        kind = "a positive integer" if minimum == 1 and not whole else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {kind}{' or None' if optional else ''}, got {value!r}")
    return int(value)


def check_positive(name: str, value: tp.Any, *, optional: bool = False) -> tp.Any:
    """``value`` if it is a finite number ``> 0`` (``None`` too if ``optional``); else ``ValueError``."""
    if optional and value is None:
        return None
    if _is_bool(value) or not positive_finite(value):
        raise ValueError(f"{name} must be positive and finite{' or None' if optional else ''}, got {value!r}")
    return value


def check_fraction(name: str, value: tp.Any, *, zero: bool) -> tp.Any:
    """``value`` if it is a number in ``(0, 1]`` (``[0, 1]`` if ``zero``); else ``ValueError``."""
    if _is_bool(value) or not ((zero and value == 0) or positive_finite(value)) or not value <= 1:
        raise ValueError(f"{name} must be in {'[' if zero else '('}0, 1], got {value!r}")
    return value


def check_flag(name: str, value: tp.Any) -> bool:
    """``value`` if it is ``True`` or ``False`` (numpy's too); else ``ValueError``."""
    if not _is_bool(value):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_choice(name: str, value: tp.Any, choices: tp.Iterable[str], *, optional: bool = False) -> tp.Optional[str]:
    """``value`` if it is one of the strings ``choices`` (``None`` too if ``optional``); else ``ValueError``."""
    if optional and value is None:
        return None
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}{' or None' if optional else ''}, got {value!r}")
    return value
