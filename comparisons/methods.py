"""The method table: name -> configured Nevergrad optimizer for a given Q, step size and dimension.

Each :class:`Method` has at most ONE tuned step size (the harness tunes nothing else): the
Adam learning rate ``lr`` of the ZO optimizers, the initial step size ``sigma0`` of the
evolution strategies; all other settings are the package defaults (docs/method.md).  A
method without a step size (``NGOpt``) is not tuned.  Adding a method is one entry of
:data:`METHODS`.

- ``ZONP``, ``ZOI``, ``ZOco``: :class:`~nevergrad_zonp.optimizers.ZerothOrder` with the
  natural, isotropic or coordinate sampler, ``Q`` directions (``Q + 1`` queries per
  iteration, plus ``n_b + 1`` per Fisher refresh for ZONP).
- ``ZOSGD``, ``ZOSignSGD``: the isotropic ZO optimizer with plain SGD (unbiased
  estimate) or sign SGD instead of Adam (the baselines of Ruan et al., ICLR 2020).
- ``ZONPSGD``: natural directions with plain SGD: its estimate's mean is the damped natural
  gradient ``(F~_b + rho I)^-1 g``, which Adam's per-coordinate normalisation would partly
  undo (the ``update-rule`` suite tests whether that is what ZONP loses on a chip).
- ``ZOL2L``, ``ZOL2LNoQuery``: the learned optimizer (:class:`~nevergrad_zonp.learned.LearnedZO`,
  the shipped generic weights, the registry's) with and without its QueryRNN; its step
  size is ``update_scale``, the factor on the UpdateRNN's output (1 = as meta-trained).
  ``ZOL2L-attack``, ``ZOL2LNoQuery-attack``: the same with the weights meta-trained on
  the digits attacks (the paper's benchmark; on training tasks, the transfer question);
  ``ZOL2L-equalization``: meta-trained on fine-tuning equalization chips (a training task).
- ``LPP``: layered-parameter perturbations (Sawada, Aoyama and Notomi, AAAI 2025,
  :class:`~nevergrad_zonp.optimizers.layered.LayeredPerturbation`): each layer's part of a
  direction from ``(1 + rho)(C_u + rho I)^-1``, ``C_u`` the smoothed Fisher of the layer on
  the ideal model (no query), with Adam; ``Q + 1`` queries per iteration.
- ``HiZOO``: the diagonal-Hessian-informed ZO of Zhao et al. (ICLR 2025,
  :class:`~nevergrad_zonp.optimizers.hessian.HessianInformed`) with Adam, ``Q`` directions,
  ``2 Q + 1`` queries per iteration; ``HiZOOPaper``: as published (plain SGD, one direction,
  3 queries per iteration, a constant learning rate), whatever the task's ``Q``.
- ``SNES``: separable NES with its standard population ``4 + floor(3 ln n)``.
- ``CMA-ES``: :func:`~nevergrad_zonp.optimizers.cma_es` with population ``Q + 1``, full
  covariance up to :data:`FULL_CMA_MAX_DIMENSION` parameters, separable (diagonal) above;
  it recommends its mean, as SNES does and as the ZO methods recommend their iterate.
- ``NGOpt``: Nevergrad's recommended default optimizer (``ng.optimizers.NGOpt``) with
  Nevergrad's own defaults.  It has **no step size** (``step_name`` is ``None``), so the
  harness does not tune it: it runs on the reported seeds only, one Nevergrad candidate per
  query (ask/tell, no population).  NGOpt picks a sub-optimizer from the dimension, the
  budget and the parametrization, by rules that change between Nevergrad versions: its runs
  record Nevergrad's version and the class whose rule chose (the method's fingerprint), and
  each row names the sub-optimizer chosen (``sub_optimizer``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import typing as tp

import nevergrad as ng
from nevergrad.optimization import base

from nevergrad_zonp.learned import LearnedZO
from nevergrad_zonp.learned.rnn import weights_path
from nevergrad_zonp.optimizers import NaturalEvolutionStrategy, ZerothOrder, cma_es
from nevergrad_zonp.optimizers.hessian import HIZOO_PAPER, HessianInformed
from nevergrad_zonp.optimizers.layered import LayeredPerturbation

#: Largest dimension that gets full-covariance CMA-ES (O(n^2) memory, O(n^3) per update);
#: beyond it the suite runs the diagonal variant.
FULL_CMA_MAX_DIMENSION = 1000

Factory = tp.Callable[[int, tp.Optional[float], int, tp.Mapping[str, tp.Any]], base.ConfiguredOptimizer]


@dataclasses.dataclass(frozen=True)
class Method:
    """A compared optimizer: ``factory(Q, step_size, dimension, zo_settings)`` and the name of its step size.

    ``zo_settings`` are a task's further settings of the ZO optimizers (e.g. ``fisher_period``);
    the evolution strategies ignore them.  A method whose ``step_name`` is ``None`` has no
    step size: it is built with ``step_size=None``, the harness does not tune it, and
    ``defaults`` says what it runs with instead.
    """

    name: str
    factory: Factory
    step_name: tp.Optional[str]
    #: the ``zo_settings`` keys that change this method's runs (``None``: all of them)
    relevant_settings: tp.Optional[tp.Callable[[str], bool]] = None
    #: what else a run depends on, checked when a stored run is reused (e.g. a weights file's hash)
    fingerprint: tp.Optional[tp.Callable[[], dict[str, tp.Any]]] = None
    #: whether its directions are Gaussian draws, whose numbers come from the ``direction_stream`` setting
    gaussian_directions: bool = False
    #: further columns of a run's row, read from the optimizer after the run (e.g. the sub-optimizer NGOpt chose)
    run_info: tp.Optional[tp.Callable[[base.Optimizer], dict[str, tp.Any]]] = None
    #: for a method without a step size: what it runs with instead (quoted in ``tuning.json`` and the report)
    defaults: str = ""

    @property
    def tuned(self) -> bool:
        """Whether the method has a step size for the harness to tune."""
        return self.step_name is not None

    def untuned_note(self) -> str:
        """The line ``tuning.json`` and the report give a method without a step size."""
        return f"{self.name}: no step size, {self.defaults or 'its defaults'}, not tuned"

    def direction_stream(self, zo_settings: tp.Mapping[str, tp.Any]) -> tp.Optional[str]:
        """The stream this method's Gaussian directions come from under ``zo_settings`` (``None``: it draws none)."""
        if not self.gaussian_directions:
            return None
        return str(zo_settings.get("direction_stream", ZerothOrder().direction_stream))

    def build(
        self,
        num_directions: int,
        step_size: tp.Optional[float],
        dimension: int,
        zo_settings: tp.Mapping[str, tp.Any] | None = None,
    ) -> base.ConfiguredOptimizer:
        """The configured optimizer of this method.

        Raises ``ValueError`` when ``step_size`` is ``None`` for a method with a step size,
        or is given to a method without one.
        """
        if self.tuned and step_size is None:
            raise ValueError(f"{self.name} needs its step size {self.step_name}")
        if not self.tuned and step_size is not None:
            raise ValueError(f"{self.name} has no step size (got {step_size}); build it with step_size=None")
        return self.factory(num_directions, step_size, dimension, zo_settings or {})

    def effective_settings(
        self,
        num_directions: int,
        step_size: tp.Optional[float],
        dimension: int,
        zo_settings: tp.Mapping[str, tp.Any] | None = None,
    ) -> dict[str, tp.Any]:
        """Every setting a run of this method is made with, defaults included (JSON-friendly).

        The optimizer's class and its whole configuration, so that a changed default makes a
        stored run another run.  Left out: ``direction_stream`` (a run records the stream
        its directions came from, compared on its own) and, for a method without a Fisher,
        the Fisher's settings (its runs do not depend on them).
        """
        return self.settings_of(self.build(num_directions, step_size, dimension, zo_settings))

    def settings_of(self, configured: base.ConfiguredOptimizer) -> dict[str, tp.Any]:
        """:meth:`effective_settings` of an optimizer this method has built."""
        keep = self.relevant_settings
        config = {
            key: value
            for key, value in configured.config().items()
            if key != "direction_stream" and (key not in FISHER_SETTINGS or keep is None or keep(key))
        }
        optimizer_class = configured._OptimizerClass  # what actually runs (e.g. the mean-recommending CMA-ES)
        settings = {"class": f"{optimizer_class.__module__}.{optimizer_class.__qualname__}", "config": config}
        return json.loads(json.dumps(settings, default=repr))


def _zeroth_order(sampler: str, update: str = "adam") -> Factory:
    def factory(
        num_directions: int, step_size: float, dimension: int, zo_settings: tp.Mapping[str, tp.Any]
    ) -> base.ConfiguredOptimizer:
        return ZerothOrder(sampler=sampler, num_directions=num_directions, lr=step_size, update=update, **zo_settings)

    return factory


def _configured(configuration: tp.Type[base.ConfiguredOptimizer], **fixed: tp.Any) -> Factory:
    """A factory of ``configuration`` given the task's ZO settings it accepts (``fixed`` ones win)."""
    accepted = set(inspect.signature(configuration.__init__).parameters) - {"self"}

    def factory(
        num_directions: int, step_size: float, dimension: int, zo_settings: tp.Mapping[str, tp.Any]
    ) -> base.ConfiguredOptimizer:
        settings = {key: value for key, value in zo_settings.items() if key in accepted}
        settings.update(num_directions=num_directions, lr=step_size)
        return configuration(**{**settings, **fixed})

    return factory


def _accepted_by(configuration: tp.Type[base.ConfiguredOptimizer]) -> tp.Callable[[str], bool]:
    accepted = set(inspect.signature(configuration.__init__).parameters) - {"self"}

    def relevant(key: str) -> bool:
        return key in accepted

    return relevant


#: The task settings the learned optimizer reads (the rest configure Adam, schedules, the Fisher).
LEARNED_SETTINGS = frozenset({"mu", "max_block_size", "block_selection"})


def _learned(query: bool, weights: tp.Optional[str] = None) -> Factory:
    def factory(
        num_directions: int, step_size: float, dimension: int, zo_settings: tp.Mapping[str, tp.Any]
    ) -> base.ConfiguredOptimizer:
        settings = {key: value for key, value in zo_settings.items() if key in LEARNED_SETTINGS}
        return LearnedZO(weights=weights, query=query, num_directions=num_directions, update_scale=step_size, **settings)

    return factory


def _snes(num_directions: int, step_size: float, dimension: int, _: tp.Mapping[str, tp.Any]) -> base.ConfiguredOptimizer:
    return NaturalEvolutionStrategy(covariance="separable", sigma0=step_size)


def _cma(num_directions: int, step_size: float, dimension: int, _: tp.Mapping[str, tp.Any]) -> base.ConfiguredOptimizer:
    return cma_es(num_directions, sigma0=step_size, diagonal=dimension > FULL_CMA_MAX_DIMENSION)


class NGOptDefaults(base.ConfiguredOptimizer):
    """Nevergrad's ``NGOpt`` as a configured optimizer: no settings, Nevergrad's defaults.

    ``ng.optimizers.NGOpt`` is an optimizer class, not a configured optimizer; this gives it
    the interface of the other methods (``config()`` is empty, ``_OptimizerClass`` is NGOpt).
    """

    def __init__(self) -> None:
        super().__init__(ng.optimizers.NGOpt, {})


def _ngopt(num_directions: int, step_size: None, dimension: int, _: tp.Mapping[str, tp.Any]) -> base.ConfiguredOptimizer:
    return NGOptDefaults().set_name("NGOpt")


def ngopt_selector() -> str:
    """The class whose ``_select_optimizer_cls`` NGOpt runs (e.g. ``NGOpt39`` in Nevergrad 1.0.12)."""
    return next(cls.__qualname__ for cls in ng.optimizers.NGOpt.__mro__ if "_select_optimizer_cls" in vars(cls))


def _ngopt_fingerprint() -> dict[str, tp.Any]:
    """Nevergrad's version and NGOpt's selection rule: NGOpt's choice of sub-optimizer depends on both."""
    return {"nevergrad": ng.__version__, "selector": ngopt_selector()}


def ngopt_choice(optimizer: base.Optimizer) -> dict[str, tp.Any]:
    """The sub-optimizer an NGOpt run chose (its ``optim``, through nested NGOpts), as row columns."""
    return {"sub_optimizer": optimizer.optim.name}  # type: ignore[attr-defined]


#: Settings that only the Fisher of ZO-NP reads: ZO-I and ZO-co runs do not depend on them.
FISHER_SETTINGS = frozenset({"rho", "fisher_period", "fd_step", "smoothing", "fisher_refresh", "fisher_rank", "fisher_storage"})


def _without_fisher(key: str) -> bool:
    return key not in FISHER_SETTINGS


def _none(key: str) -> bool:
    return False


def _learned_settings(key: str) -> bool:
    return key in LEARNED_SETTINGS


def _weights_fingerprint(weights: tp.Optional[str]) -> tp.Callable[[], dict[str, tp.Any]]:
    """The hash of the weights file a learned method loads: retrained weights make its stored runs stale."""

    def fingerprint() -> dict[str, tp.Any]:
        return {"weights_sha256": hashlib.sha256(weights_path(weights).read_bytes()).hexdigest()[:16]}

    return fingerprint


METHODS: dict[str, Method] = {
    method.name: method
    for method in (
        Method("ZONP", _zeroth_order("natural"), "lr", gaussian_directions=True),
        Method("ZOI", _zeroth_order("isotropic"), "lr", _without_fisher, gaussian_directions=True),
        Method("ZOco", _zeroth_order("coordinate"), "lr", _without_fisher),
        Method("ZOSGD", _zeroth_order("isotropic", "sgd"), "lr", _without_fisher, gaussian_directions=True),
        Method("ZONPSGD", _zeroth_order("natural", "sgd"), "lr", gaussian_directions=True),
        Method("ZOSignSGD", _zeroth_order("isotropic", "sign"), "lr", _without_fisher, gaussian_directions=True),
        Method("ZOL2L", _learned(True), "update_scale", _learned_settings, _weights_fingerprint(None)),
        Method("ZOL2LNoQuery", _learned(False), "update_scale", _learned_settings, _weights_fingerprint(None)),
        Method("ZOL2L-attack", _learned(True, "attack_digits"), "update_scale", _learned_settings,
               _weights_fingerprint("attack_digits")),
        Method("ZOL2LNoQuery-attack", _learned(False, "attack_digits"), "update_scale", _learned_settings,
               _weights_fingerprint("attack_digits")),
        Method("ZOL2L-equalization", _learned(True, "equalization"), "update_scale", _learned_settings,
               _weights_fingerprint("equalization")),
        Method("LPP", _configured(LayeredPerturbation), "lr", _accepted_by(LayeredPerturbation), gaussian_directions=True),
        Method("HiZOO", _configured(HessianInformed), "lr", _accepted_by(HessianInformed), gaussian_directions=True),
        Method("HiZOOPaper", _configured(HessianInformed, **HIZOO_PAPER), "lr", _accepted_by(HessianInformed),
               gaussian_directions=True),
        Method("SNES", _snes, "sigma0", _none),
        Method("CMA-ES", _cma, "sigma0", _none),
        Method("NGOpt", _ngopt, None, _none, _ngopt_fingerprint, run_info=ngopt_choice,
               defaults=f"Nevergrad's defaults (nevergrad {ng.__version__})"),
    )
}
