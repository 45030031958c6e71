"""Wall-clock budgets: ``--max-minutes N`` is a hard limit on the whole of training.

The budget covers set-up, every training step, the periodic validations, the checkpoints
and the final validation. Training steps stop at the *training window*: the budget minus
a reserve for what must still happen after the last step (the final validation and the
last checkpoint, with a small margin). The reserve is re-estimated from measured times as
training goes; steps are checked one by one, so an epoch longer than the budget is simply
cut short. Under a budget the poly learning rate is a function of the elapsed fraction of
the training window, so it reaches zero when the time is spent whatever the step time.
Times are stored in the checkpoint, so a resumed run keeps the remaining budget.

All functions here are pure; :mod:`medseg.train.loop` feeds them its measurements.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

#: Slack kept at the end of a budget, as a fraction of it (plus ``MARGIN_S``), so that
#: small misestimates of the last validation or checkpoint stay inside the budget.
MARGIN_FRACTION = 0.02
MARGIN_S = 0.5
#: Validation takes at most this share of a budget: the periodic ones are spaced for it
#: (``medseg.train.autoplan``) and the final one is reserved no more than it; cases that
#: would end past the budget are skipped and named in the log (a 2D ct_headneck network
#: took 300 s to validate 25 cases: reserving that kept a fifth of a 30-minute budget from
#: training). ``medseg evaluate`` scores every case afterwards.
VALIDATION_SHARE = 0.05
#: ... but never less than this many seconds (short budgets keep a whole final validation).
MIN_VALIDATION_S = 30.0
#: Safety factor on the estimated duration of the final validation and checkpoint. Small,
#: because the final validation itself stops before a case that would end past the budget:
#: a misestimate costs validation cases, not the budget. (At 1.5, 15-minute ct_headneck runs
#: on the 2-core CPU, 3D and 2D, ended at 773 and 767 s: the estimate before the first
#: validation, timed while the loader workers fill their queue, was 1.3-1.8x the validation.)
RESERVE_FACTOR = 1.2


@dataclass(frozen=True)
class Timings:
    """What has been measured so far in a run (all in seconds)."""

    step_seconds: float | None = None  # a recent training step
    validation_seconds: Sequence[float] = ()  # durations of the validations run so far
    validation_guess_s: float = 0.0  # stands in before the first validation
    save_seconds: Sequence[float] = ()  # durations of end-of-epoch checkpoint + logs
    save_guess_s: float = 2.0  # stands in before the first checkpoint


def save_estimate(timings: Timings) -> float:
    """Time the last checkpoint and logs will take."""
    return max(timings.save_seconds) if timings.save_seconds else timings.save_guess_s


def reserve_s(budget_s: float, timings: Timings, validates: bool) -> float:
    """Time kept back from training for the final validation and checkpoint."""
    validation = 0.0
    if validates:
        validation = min(max(timings.validation_seconds) if timings.validation_seconds
                         else timings.validation_guess_s,
                         max(VALIDATION_SHARE * budget_s, MIN_VALIDATION_S))
    return (RESERVE_FACTOR * (validation + save_estimate(timings))
            + MARGIN_FRACTION * budget_s + MARGIN_S)


def training_window_s(budget_s: float, timings: Timings, validates: bool) -> float:
    """Elapsed time by which the last training step must have ended."""
    return max(0.0, budget_s - reserve_s(budget_s, timings, validates))


def may_step(elapsed_s: float, window_s: float, step_seconds: float | None) -> bool:
    """True when one more training step (of the measured duration) ends inside the window."""
    return elapsed_s + (step_seconds or 0.0) <= window_s


def schedule_fraction(elapsed_s: float, window_s: float) -> float:
    """How far through its schedule a budgeted run is, in [0, 1]."""
    if window_s <= 0:
        return 1.0
    return min(max(elapsed_s / window_s, 0.0), 1.0)


def may_validate(elapsed_s: float, window_s: float, timings: Timings) -> bool:
    """True when an intermediate validation still leaves training time after it."""
    expected = (max(timings.validation_seconds) if timings.validation_seconds
                else timings.validation_guess_s)
    return elapsed_s + expected < window_s


def epoch_estimate(epoch_seconds: Sequence[float]) -> float:
    """Typical epoch duration: median of the recent epochs (the first one only if alone,
    since it includes warm-up)."""
    recent = list(epoch_seconds[1:] or epoch_seconds)[-5:]
    return statistics.median(recent)


def estimate_total_epochs(done: int, elapsed_s: float, window_s: float,
                          epoch_seconds: Sequence[float]) -> int:
    """Epochs a budgeted run will have done at the end of its window (for display)."""
    if not epoch_seconds:
        return max(done, 1)
    remaining = max(0.0, window_s - elapsed_s)
    return done + math.ceil(remaining / max(epoch_estimate(epoch_seconds), 1e-9))
