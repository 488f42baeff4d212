"""Registration of this package's optimizers in Nevergrad's registry.

Nevergrad has no plugin discovery: a name becomes available as
``ng.optimizers.registry[name]`` only once some code registers it, and a second
registration of the same name raises ``RuntimeError``.  Importing
:mod:`nevergrad_zonp` registers every preset through :func:`register`, which is
idempotent for this package's own names so that re-imports (``importlib.reload``,
test collection) are safe, and still refuses a collision with another package.
"""

from __future__ import annotations

from nevergrad.optimization import base, registry


def register(configured: base.ConfiguredOptimizer, name: str) -> base.ConfiguredOptimizer:
    """Names ``configured``, registers it under ``name`` and returns the registered object.

    If ``name`` is already registered by this package (a re-import), the existing entry is
    kept and returned.  A name registered by anything else raises ``RuntimeError``.
    """
    existing = registry.get(name)
    if existing is None:
        return configured.set_name(name, register=True)
    if type(existing).__module__.startswith("nevergrad_zonp"):
        return existing
    raise RuntimeError(f"Optimizer name {name!r} is already registered by {type(existing).__module__}")
