"""Checks shared by this package's optimizers: settings refused by name, one loss per tell.

Every setting is checked when the optimizer is configured or built, and a bad one raises
``ValueError`` naming the setting and the value it got: bools must be ``True`` or
``False`` (not a string such as ``"no"``), integers must be integers (not a bool, not
``2.5``; an integral float such as ``1e4`` is taken as the integer it is), numbers must be
finite, and strings one of their choices.
"""

from __future__ import annotations

import reprlib
import typing as tp

import numpy as np
from nevergrad.optimization import base
from nevergrad.parametrization import parameter as p

from .._checks import integer_at_least, positive_finite


def _is_bool(value: tp.Any) -> bool:
    return isinstance(value, (bool, np.bool_))


def check_integer(name: str, value: tp.Any, minimum: int = 1, *, optional: bool = False) -> tp.Optional[int]:
    """``value`` as an ``int`` if it is an integer ``>= minimum`` (``None`` too if ``optional``); else ``ValueError``."""
    if optional and value is None:
        return None
    if _is_bool(value) or not integer_at_least(value, minimum):
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
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


class CheckedOptimizer(base.Optimizer):
    """Base of this package's optimizers: Nevergrad's ``Optimizer`` with the checks above.

    - ``budget`` must be a positive integer or ``None`` and ``num_workers`` a positive
      integer (Nevergrad takes ``budget=-5`` or ``num_workers=0``, and ``minimize`` then
      never ends);
    - the optimizers are single-objective: ``tell`` refuses a loss of several numbers
      (Nevergrad would take it for a multi-objective loss, and the optimizer would not
      move).  A one-element list or array is taken as its number.
    """

    def __init__(
        self, parametrization: base.IntOrParameter, budget: tp.Optional[int] = None, num_workers: int = 1, **kwargs: tp.Any
    ) -> None:
        super().__init__(
            parametrization,
            budget=check_integer("budget", budget, optional=True),
            num_workers=check_integer("num_workers", num_workers),
            **kwargs,
        )

    def tell(
        self,
        candidate: p.Parameter,
        loss: tp.Loss,
        constraint_violation: tp.Optional[tp.Loss] = None,
        penalty_style: tp.Optional[tp.ArrayLike] = None,
    ) -> None:
        if isinstance(loss, (tuple, list, np.ndarray)):
            values = np.asarray(loss)
            if values.size != 1:
                raise ValueError(
                    f"{self.name} is a single-objective optimizer: tell it one loss (a number), "
                    f"got {values.size} numbers (shape {values.shape}): {reprlib.repr(loss)}"
                )
            loss = float(values.reshape(-1)[0])
        super().tell(candidate, loss, constraint_violation, penalty_style)
