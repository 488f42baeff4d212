"""Discrete coordinates of a mixed parametrization: a part of the ZO loop (:mod:`.loop`).

On a parametrization with discrete parts (``TransitionChoice``, a deterministic ``Choice``,
integer casting; :func:`~.iterations.continuous_coordinates`), Gaussian directions are
restricted to the block's continuous coordinates: a query that crosses a discrete threshold
jumps, and the jump divided by ``mu`` would swamp the estimate.  If the block has discrete
coordinates, the last direction of an iteration becomes a *probe*: one of them, drawn
uniformly, moved by its reach (1 in standardized units at first) in a random sign.  The
probe is kept out of the estimate and taken when it lowers the base loss; a probe that
changed nothing reaches twice as far next time, up to :data:`PROBE_MAX_REACH`.  With
``Q = 1`` every second iteration probes.
"""

from __future__ import annotations

import typing as tp

import numpy as np

#: Largest reach of a discrete probe, in standardized units (it doubles while probes change nothing).
PROBE_MAX_REACH = 16.0

#: A probe: ``(coordinate, displacement)`` in standardized units.
Probe = tp.Tuple[int, float]


class DiscreteProbes:
    """The continuous-coordinate mask of a mixed parametrization and each coordinate's probe reach."""

    def __init__(self, continuous: np.ndarray) -> None:
        self.continuous = continuous
        self.reach = np.ones(len(continuous))

    def directions(
        self,
        sampler: tp.Any,
        rng: np.random.RandomState,
        key: int,
        start: int,
        stop: int,
        directions: np.ndarray,
        step: float,
        per_direction: int = 1,
    ) -> tp.Tuple[np.ndarray, tp.Optional[Probe]]:
        """Iteration ``key``'s ``directions`` on block ``[start, stop)`` kept off its discrete coordinates, and its probe.

        ``step`` is the displacement per unit of direction (``mu / sqrt(n)``): the probe's
        direction is its displacement divided by it.  ``per_direction``: rows per drawn
        direction (2 for two-sided queries); an iteration of a single direction probes every
        other time, so that the others keep their estimate.
        """
        mask = self.continuous[start:stop]
        directions = directions.copy()
        if not mask.all():
            directions = sampler.restricted(directions, mask)
        discrete = np.flatnonzero(~mask)
        if not len(discrete) or not len(directions) or (len(directions) == per_direction and key % 2 == 0):
            return directions, None
        coordinate = start + int(discrete[rng.randint(len(discrete))])
        displacement = float(self.reach[coordinate] * (1.0 if rng.rand() < 0.5 else -1.0))
        directions[-1] = 0.0
        directions[-1, coordinate - start] = displacement / step
        return directions, (coordinate, displacement)

    def settle(self, x: np.ndarray, probe: Probe, base_loss: float, probe_loss: float) -> None:
        """Takes a probe that lowered the base loss (moving ``x`` in place); one that changed nothing reaches further."""
        coordinate, displacement = probe
        if probe_loss < base_loss:
            x[coordinate] += displacement
        elif probe_loss == base_loss:  # no threshold crossed
            self.reach[coordinate] = min(PROBE_MAX_REACH, 2.0 * self.reach[coordinate])
