"""Optimizers registered in Nevergrad's registry on import, and the ZO loop's parts.

``ZONP``, ``ZOI`` and ``ZOco`` are one :class:`ZerothOrder` configuration of the ZO loop
(:class:`ZerothOrderLoop`, built from :class:`LoopParts`) with three samplers
(``ZONPPaper`` is ZONP configured as in the paper; ``ZOSGD``, ``ZOSignSGD`` the isotropic
one with two other update rules); ``LPP`` (:class:`LayeredPerturbation`) and ``HiZOO``,
``HiZOOPaper`` (:class:`HessianInformed`) are two more configurations of the same loop;
``SNES`` and ``XNES`` are the natural evolution strategy baselines.  :func:`cma_es` builds
the CMA-ES baselines (explicit ``ParametrizedCMA`` configurations, not registered).
"""

from .cma_presets import cma_es
from .hessian import HIZOO_PAPER, HessianInformed
from .iterations import IterationRequest, population_size
from .layered import LayeredPerturbation, LayeredPerturbationsInactiveWarning
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

#: LPP (Sawada, Aoyama and Notomi, AAAI 2025): layered perturbations from the ideal model's layer Fishers (a ModelAdapter's).
LPP = register(LayeredPerturbation(), "LPP")
#: HiZOO (Zhao et al., ICLR 2025) with Adam, as this package's other ZO methods; ``HiZOOPaper`` as published (SGD, Q = 1).
HiZOO = register(HessianInformed(), "HiZOO")
HiZOOPaper = register(HessianInformed(**HIZOO_PAPER), "HiZOOPaper")
#: Names this package registers in ``ng.optimizers.registry``.
NAMES = ["ZONP", "ZONPPaper", "ZOI", "ZOco", "ZOSGD", "ZOSignSGD", "LPP", "HiZOO", "HiZOOPaper", "SNES", "XNES"]

__all__ = [
    "NAMES",
    "ZONP",
    "ZONPPaper",
    "ZOI",
    "ZOco",
    "ZOSGD",
    "ZOSignSGD",
    "LPP",
    "HiZOO",
    "HiZOOPaper",
    "SNES",
    "XNES",
    "ZerothOrder",
    "HessianInformed",
    "LayeredPerturbation",
    "LayeredPerturbationsInactiveWarning",
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
