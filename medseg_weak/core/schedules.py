"""Learning-rate schedules shared by the training stages."""

from __future__ import annotations

import math


def cosine_lr(base: float, epoch: int, epochs: int) -> float:
    """Cosine annealing from ``base`` (epoch 0) towards 0 (after the last epoch)."""
    return base * 0.5 * (1.0 + math.cos(math.pi * epoch / max(1, epochs)))
