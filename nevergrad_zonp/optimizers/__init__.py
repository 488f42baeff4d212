"""Optimizers registered in Nevergrad's registry on import.

``ZONP``, ``ZOI`` and ``ZOco`` are one :class:`ZerothOrder` optimizer with three samplers.
"""

from .registration import register
from .zeroth_order import (
    InvalidQueryWarning,
    NaturalPerturbationsInactiveWarning,
    ZerothOrder,
)

ZONP = register(ZerothOrder(sampler="natural"), "ZONP")
ZOI = register(ZerothOrder(sampler="isotropic"), "ZOI")
ZOco = register(ZerothOrder(sampler="coordinate"), "ZOco")

#: Names this package registers in ``ng.optimizers.registry``.
NAMES = ["ZONP", "ZOI", "ZOco"]

__all__ = [
    "NAMES",
    "ZONP",
    "ZOI",
    "ZOco",
    "ZerothOrder",
    "InvalidQueryWarning",
    "NaturalPerturbationsInactiveWarning",
    "register",
]
