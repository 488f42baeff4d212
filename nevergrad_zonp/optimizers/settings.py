"""The base of this package's optimizers: settings refused by name, one loss per tell.

Every setting is checked when the optimizer is configured or built, and a bad one raises
``ValueError`` naming the setting and the value it got: bools must be ``True`` or
``False`` (not a string such as ``"no"``), integers must be integers (not a bool, not
``2.5``; an integral float such as ``1e4`` is taken as the integer it is), numbers must be
finite, and strings one of their choices (the checks live in ``nevergrad_zonp._checks``,
shared with the adapters).
"""

from __future__ import annotations

import reprlib
import typing as tp

import numpy as np
from nevergrad.optimization import base
from nevergrad.parametrization import parameter as p

from .._checks import check_integer


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
