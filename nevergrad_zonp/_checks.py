"""Checks of numeric settings shared by the optimizers' and the meta-training's constructors."""

from __future__ import annotations

import math
import typing as tp


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
