"""Optimizers registered in Nevergrad's registry on import, and the ZO loop's parts.

``ZONP``, ``ZOI`` and ``ZOco`` are one :class:`ZerothOrder` configuration of the ZO loop
(:class:`ZerothOrderLoop`, built from :class:`LoopParts`) with three samplers
(``ZONPPaper`` is ZONP configured as in the paper; ``ZOSGD``, ``ZOSignSGD`` the isotropic
one with two other update rules);
``SNES`` and ``XNES`` are the natural evolution strategy baselines.  :func:`cma_es` builds
the CMA-ES baselines (explicit ``ParametrizedCMA`` configurations, not registered).
"""

from .cma_presets import cma_es
from .iterations import IterationRequest, population_size
from .loop import ZerothOrderLoop
from .parts import LoopConfiguration, LoopParts, Sampler, UpdateRule
from .nes import SNES, XNES, NaturalEvolutionStrategy
from .registration import register
from .zeroth_order import (
    FlatQueriesWarning,
    InvalidQueryWarning,
    NaturalPerturbationsInactiveWarning,
    UntoldQueriesWarning,
    ZerothOrder,
)

ZONP = register(ZerothOrder(sampler="natural"), "ZONP")
#: ZO-NP as the paper configures it (Fisher refreshed for the sampled block every
#: ``fisher_period`` iterations, constant learning rate), for reproducing the paper.
ZONPPaper = register(ZerothOrder(sampler="natural", fisher_refresh="sampled", lr_schedule="constant"), "ZONPPaper")
ZOI = register(ZerothOrder(sampler="isotropic"), "ZOI")
ZOco = register(ZerothOrder(sampler="coordinate"), "ZOco")
#: The update-rule baselines of Ruan et al. (ICLR 2020), isotropic directions like ZOI (ZO-Adam).
ZOSGD = register(ZerothOrder(sampler="isotropic", update="sgd"), "ZOSGD")
ZOSignSGD = register(ZerothOrder(sampler="isotropic", update="sign"), "ZOSignSGD")

#: Names this package registers in ``ng.optimizers.registry``.
NAMES = ["ZONP", "ZONPPaper", "ZOI", "ZOco", "ZOSGD", "ZOSignSGD", "SNES", "XNES"]

__all__ = [
    "NAMES",
    "ZONP",
    "ZONPPaper",
    "ZOI",
    "ZOco",
    "ZOSGD",
    "ZOSignSGD",
    "SNES",
    "XNES",
    "ZerothOrder",
    "ZerothOrderLoop",
    "LoopParts",
    "LoopConfiguration",
    "Sampler",
    "UpdateRule",
    "NaturalEvolutionStrategy",
    "cma_es",
    "population_size",
    "FlatQueriesWarning",
    "InvalidQueryWarning",
    "IterationRequest",
    "NaturalPerturbationsInactiveWarning",
    "UntoldQueriesWarning",
    "register",
]
