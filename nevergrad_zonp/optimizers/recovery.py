"""Recovery from non-finite base losses: a part of the ZO loop (:mod:`.loop`).

A bad *base* loss means the iterate itself left the region where the objective is defined.
The loop then goes back to the *anchor*, the latest base point whose loss was finite, and
every block stepped since the anchor moves more carefully: its step scale is multiplied by
:data:`RECOVERY_SHRINK` and grows back by :data:`RECOVERY_GROWTH` per step of the block
(capped at 1), and the sampler and update rule forget that block's memory (Adam moments,
RNN states), so no momentum is carried into the bad region.
"""

from __future__ import annotations

import typing as tp

import numpy as np

#: Factor applied to a block's step scale when a step of it led to a non-finite base loss.
RECOVERY_SHRINK = 0.5
#: Per successful step, a shrunk step scale grows back by this factor (doubling in 10 steps).
RECOVERY_GROWTH = 2.0 ** 0.1


class Recovery:
    """The anchor, the blocks stepped since it, and each block's step scale.

    ``count`` is the number of recoveries so far: an iteration that began before the latest
    one estimated a gradient on an abandoned path.
    """

    def __init__(self, num_blocks: int) -> None:
        self.anchor: tp.Optional[np.ndarray] = None
        self.anchor_index = -1
        self.anchor_steps = 0  # steps taken before the anchor's iteration started
        self.stepped: tp.List[int] = []  # blocks of the steps taken since then
        self.scale = np.ones(num_blocks)
        self.count = 0

    def accept(self, index: int, base: np.ndarray, steps_at_start: int) -> None:
        """A finite base loss at iteration ``index``: its base point is the anchor if it is the latest seen."""
        if index > self.anchor_index:
            self.anchor, self.anchor_index = base, index
            del self.stepped[: steps_at_start - self.anchor_steps]
            self.anchor_steps = steps_at_start

    def stepped_on(self, block: int) -> None:
        """A step of ``block`` was taken: its scale grows back towards 1."""
        self.scale[block] = min(1.0, self.scale[block] * RECOVERY_GROWTH)
        self.stepped.append(block)

    def recover(self, num_steps: int) -> tp.List[int]:
        """Counts a recovery and shrinks the scale of the blocks stepped since the anchor; returns those blocks."""
        self.count += 1
        blamed = sorted(set(self.stepped))
        for block in blamed:
            self.scale[block] *= RECOVERY_SHRINK
        self.stepped.clear()
        self.anchor_steps = num_steps
        return blamed
