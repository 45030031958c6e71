"""Wall-clock budgets: fit the number of epochs so the LR schedule ends at the budget.

The first epoch runs with a provisional epoch count (the poly LR barely moves in it);
after every epoch the total is re-fitted from the measured epoch and validation times,
so the schedule reaches zero when the time is spent. When the count changes, the poly
decay is re-anchored at the current LR (``loop.change_total_epochs``): the LR stays
continuous and decreasing whether the machine slows down or speeds up. Times are stored
in the checkpoint, so a resumed run keeps the remaining budget.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

#: Epoch count used until the first epoch has been timed.
PROVISIONAL_EPOCHS = 1000


def epoch_estimate(epoch_seconds: Sequence[float]) -> float:
    """Typical epoch duration: median of the recent epochs (the first one only if alone,
    since it includes warm-up)."""
    recent = list(epoch_seconds[1:] or epoch_seconds)[-5:]
    return statistics.median(recent)


def fit_total_epochs(
    budget_s: float,
    elapsed_s: float,
    epoch_seconds: Sequence[float],
    validation_seconds: Sequence[float],
    validate_every: int,
    validation_guess_s: float = 0.0,
) -> int:
    """Total epochs that fit the budget given ``len(epoch_seconds)`` epochs done.

    ``epoch_seconds`` are training times per epoch (checkpointing included);
    ``validation_seconds`` are the durations of the validations run so far
    (``validation_guess_s`` stands in before the first one). One final validation is
    reserved.
    """
    done = len(epoch_seconds)
    if done == 0:
        return PROVISIONAL_EPOCHS
    val = statistics.mean(validation_seconds) if validation_seconds else validation_guess_s
    per_epoch = epoch_estimate(epoch_seconds) + (val / validate_every if validate_every else 0.0)
    remaining = budget_s - elapsed_s - val
    return done + max(0, math.floor(remaining / per_epoch))
