"""Learning-rate schedules as pure functions of the optimizer step (exact on resume)."""

from __future__ import annotations

import math
from typing import Literal

from slimkit.errors import InvalidArgumentError

__all__ = ["lr_factor", "SCHEDULES"]

ScheduleName = Literal["cosine", "onecycle", "constant"]
SCHEDULES = ("cosine", "onecycle", "constant")


def lr_factor(step: int, total_steps: int, *, schedule: str = "cosine", warmup_steps: int = 0,
              min_factor: float = 0.0) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based).

    - ``cosine``: linear warm-up from ~0 over ``warmup_steps``, then half a cosine down to
      ``min_factor``.
    - ``onecycle``: warm-up (30 % of the steps unless ``warmup_steps`` is given) from 1/25 of
      the peak, then cosine annealing to 1/10^4 of the peak (Smith & Topin 2017).
    - ``constant``: warm-up, then 1.
    """
    if schedule not in SCHEDULES:
        raise InvalidArgumentError(f"unknown schedule {schedule!r}; choose one of {SCHEDULES}")
    if total_steps < 1:
        raise InvalidArgumentError(f"total_steps must be >= 1, got {total_steps}")
    step = min(max(step, 0), total_steps - 1)
    if schedule == "onecycle":
        warm = warmup_steps or max(1, int(0.3 * total_steps))
        start, end = 1 / 25, 1e-4
        if step < warm:
            return start + (1 - start) * step / warm
        t = (step - warm) / max(1, total_steps - 1 - warm)
        return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * t))
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if schedule == "constant":
        return 1.0
    t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * t))
