"""Fitting a plan to the device and the time budget, from measured step times.

``medseg.preprocess.planning`` derives nnU-Net's configuration from the dataset
fingerprint: the *reference*, sized for GPU memory. Whether a device can train it well in
the time it is given is another matter: on a 2-core CPU the reference 3D U-Net of a small
MRI dataset takes seconds per step, so a 15-minute budget would see a few hundred steps.

:func:`fit_plan` measures training steps on the actual device and walks a ladder of
configurations derived from the reference, in order of preference:

1. the reference (nnU-Net's 32 base filters and patch);
2. 32 base filters with patches shrunk to no less than 3/4 of the reference per axis;
3. 16 base filters, patches down to 1/2 of the reference per axis;
4. 8 base filters, patches down to 1/2 of the reference per axis;

each with the reference batch size and then halvings of it down to 2. It takes the first one
expected to reach :data:`STEPS_TARGET` optimiser steps in the budget (the cheapest when
none does, with a warning in its reason). Context (patch) is given up last because it
matters most for accuracy; width before it. Then the training schedule is fitted to the
choice: iterations per epoch, validation frequency, optimiser and learning rate, and
whether test-time mirroring is affordable. Without a budget the reference is kept with
nnU-Net's schedule.

Every choice and its reason is written into the configuration's ``reasons``; fields the
user changed in ``plan.json`` (different from what was chosen automatically, recorded
under ``auto``) are kept as they are.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from medseg.inference.sliding_window import count_windows, mirror_sets
from medseg.models.network import MIN_LEVELS
from medseg.preprocess.plan import Configuration, Plan, TrainingPlan
from medseg.preprocess.planning import (
    MAX_FILTERS,
    MAX_POOLS,
    MIN_BATCH,
    round_to_strides,
    shrink_patch,
    topology,
    training_bytes,
)
from medseg.train.budget import VALIDATION_SHARE
from medseg.train.steptime import StepTimer

log = logging.getLogger(__name__)

#: Optimiser steps a budgeted run should reach. Measured on hippocampus (docs/benchmarks.md):
#: 16-128 filters at the full patch for ~5000 steps reach nnU-Net's accuracy; the reference
#: network for ~300 steps does not.
STEPS_TARGET = 4000
#: Base filter counts tried, widest first, with the smallest patch extent (a fraction of
#: the reference patch per axis) accepted at that width.
WIDTHS = ((32, 0.75), (16, 0.5), (8, 0.5))
#: A step in the training loop vs in isolation (the data loader shares the machine).
#: Calibrated on the 2-core CPU: a hippocampus run measured 0.167 s per step in isolation
#: and trained at 0.169 s per step (5181 steps in 873 s, validation included); 0.8 had
#: predicted 4049 steps and sent the planner to a patch smaller than the median case.
LOOP_EFFICIENCY = 0.95
#: Set-up before the first step (loader workers, network, first batch), in seconds.
SETUP_SECONDS = 10.0
#: Below this many expected steps AdamW (2e-3) converges faster than nnU-Net's SGD (1e-2):
#: measured on hippocampus (docs/benchmarks.md); long runs keep nnU-Net's choice.
ADAMW_BELOW_STEPS = 25_000
ADAMW_LR = 2e-3
SGD_LR = 1e-2
#: A budgeted run has about this many epochs (checkpoints and progress points).
EPOCHS_PER_BUDGET = 20
#: Test-time mirroring is on when it predicts a median case in at most this many seconds.
TTA_SECONDS = 60.0
#: A forward pass of one window costs about this fraction of a training step per sample.
FORWARD_FRACTION = 0.5
NETWORK_FIELDS = ("patch_size", "batch_size", "filters", "strides", "kernel_sizes")


@dataclass(frozen=True)
class Candidate:
    """One configuration on the ladder and its base width."""

    width: int
    config: Configuration

    @property
    def key(self) -> str:
        patch = "x".join(str(p) for p in self.config.patch_size)
        return f"w{self.width}-p{patch}-b{self.config.batch_size}-l{len(self.config.strides)}"


@dataclass(frozen=True)
class Budget:
    """What the plan is fitted to."""

    minutes: float | None  # None: no time limit (nnU-Net's 1000 epochs)
    device: str  # medseg.models.runtime.describe_device
    memory_gb: float | None = None  # CUDA memory (None: not limiting, e.g. CPU RAM)
    validation_cases: int = 0


def cost(config: Configuration) -> float:
    """Relative compute of a training step: convolution multiply-adds summed over levels
    (two convolutions per level in the encoder and in the decoder)."""
    voxels = float(np.prod(config.patch_size)) * config.batch_size
    total = 0.0
    previous = 1
    for stride, kernel, filters in zip(config.strides, config.kernel_sizes, config.filters,
                                       strict=True):
        voxels /= float(np.prod(stride))
        total += voxels * float(np.prod(kernel)) * filters * (previous + 3 * filters)
        previous = filters
    return total


def candidate(reference: Configuration, width: int, patch: Sequence[float], batch: int
              ) -> Candidate:
    """A configuration of the reference's kind with ``width`` base filters at ``patch``."""
    dims = reference.spatial_dims
    strides, kernels = topology(reference.spacing, patch, MAX_POOLS[dims])
    rounded = round_to_strides(patch, strides)
    top = max(MAX_FILTERS[dims] * width // 32, width)
    filters = tuple(min(width * 2**level, top) for level in range(len(strides)))
    config = replace(reference, patch_size=tuple(rounded), batch_size=batch, filters=filters,
                     strides=tuple(tuple(s) for s in strides),
                     kernel_sizes=tuple(tuple(k) for k in kernels), reasons={})
    return Candidate(width, config)


def ladder(reference: Configuration, memory_gb: float | None = None) -> list[Candidate]:
    """Candidates in order of preference (see the module docstring), without duplicates
    and, with ``memory_gb``, only those whose activations fit."""
    out: list[Candidate] = [Candidate(reference.filters[0], reference)]
    seen = {out[0].key}
    batches = _batches(reference.batch_size)
    for width, floor in WIDTHS:
        for patch in _patches(reference, floor):
            for batch in batches:
                c = candidate(reference, width, patch, batch)
                if c.key in seen or len(c.config.strides) < MIN_LEVELS or \
                        not _fits(c.config, memory_gb):
                    continue
                seen.add(c.key)
                out.append(c)
    return out


def _batches(reference: int) -> list[int]:
    """The reference batch, then halvings down to the minimum of 2 (largest first)."""
    out = [reference]
    while out[-1] // 2 >= MIN_BATCH:
        out.append(out[-1] // 2)
    if out[-1] > MIN_BATCH:
        out.append(MIN_BATCH)
    return out


def _patches(reference: Configuration, floor: float) -> Iterator[list[int]]:
    """The reference patch, then shrunk one stride step at a time while every axis stays
    at least ``floor`` times the reference."""
    lowest = [max(4, math.ceil(floor * p)) for p in reference.patch_size]
    patch = list(reference.patch_size)
    while True:
        yield patch
        strides, _ = topology(reference.spacing, patch, MAX_POOLS[reference.spatial_dims])
        smaller = shrink_patch(list(patch), reference.spacing, strides)
        if smaller == patch or any(s < lo for s, lo in zip(smaller, lowest, strict=True)):
            return
        patch = smaller


def _fits(config: Configuration, memory_gb: float | None) -> bool:
    if memory_gb is None:
        return True
    need = config.batch_size * training_bytes(config.patch_size, config.strides, config.filters)
    return need <= (memory_gb - 1.0) * 1024**3


class StepTimes:
    """Measured step times (seconds, by candidate key) and estimates for the others,
    scaled by :func:`cost` from the measured candidate of closest cost."""

    def __init__(self, timer: StepTimer, known: dict[str, float] | None = None) -> None:
        self.timer, self.known = timer, dict(known or {})
        self._costs: dict[str, float] = {}

    def measure(self, c: Candidate) -> float:
        if c.key not in self.known:
            self.known[c.key] = float(self.timer(c.config))
            log.info("step time %s: %.3f s", c.key, self.known[c.key])
        self._costs[c.key] = cost(c.config)
        return self.known[c.key]

    def estimate(self, c: Candidate) -> float | None:
        if c.key in self.known:
            return self.known[c.key]
        measured = [(k, t) for k, t in self.known.items() if k in self._costs and math.isfinite(t)]
        if not measured:
            return None
        target = cost(c.config)
        key, seconds = min(measured, key=lambda kt: abs(math.log(self._costs[kt[0]] / target)))
        return seconds * target / self._costs[key]


def usable_seconds(minutes: float) -> float:
    """Seconds of a budget left for training steps."""
    return max(minutes * 60.0 * (1.0 - VALIDATION_SHARE) - SETUP_SECONDS, 1.0)


def expected_steps(minutes: float, step_seconds: float) -> int:
    return int(usable_seconds(minutes) * LOOP_EFFICIENCY / max(step_seconds, 1e-9))


def choose(ladder_: Sequence[Candidate], times: StepTimes, minutes: float
           ) -> tuple[Candidate, float, str]:
    """The first candidate expected to reach :data:`STEPS_TARGET` steps in ``minutes``
    (measuring only those whose estimate is not clearly too slow), its step time, and why.

    Estimates are scaled by compute from the measured candidate of closest cost, and a
    small network's step is mostly fixed overhead: scaled up from the cheapest candidate
    alone, they skipped networks that were fast enough (ct_headneck 2D on a 2-core CPU: a
    128x128 network estimated at 1.3 s per step from a 0.03 s one, measured 0.21 s). So the
    ladder is scanned again while a scan measured something new, with the estimates the
    new measurements give, and the most preferred candidate within the budget wins.
    """
    allowed = usable_seconds(minutes) * LOOP_EFFICIENCY / STEPS_TARGET
    times.measure(min(ladder_, key=lambda c: cost(c.config)))  # calibrates the estimates
    found, measured = None, -1
    while len(times.known) != measured:
        measured = len(times.known)
        found = _first_within(ladder_, times, allowed)
    if found is not None:
        rank, c, seconds = found
        why = (f"most capable of {len(ladder_)} candidates (rank {rank + 1}) expected to "
               f"reach {STEPS_TARGET} steps in {minutes:g} min: {seconds:.3f} s/step "
               f"measured -> ~{expected_steps(minutes, seconds)} steps")
        return c, seconds, why
    cheapest = min(ladder_, key=lambda c: cost(c.config))
    seconds = times.measure(cheapest)
    why = (f"WARNING: no candidate reaches {STEPS_TARGET} steps in {minutes:g} min; the "
           f"cheapest measured {seconds:.3f} s/step -> ~{expected_steps(minutes, seconds)} "
           f"steps: a longer budget will give a better model")
    return cheapest, seconds, why


def _first_within(ladder_: Sequence[Candidate], times: StepTimes, allowed: float
                  ) -> tuple[int, Candidate, float] | None:
    """(rank, candidate, step seconds) of the first candidate measured within ``allowed``
    seconds per step; candidates estimated at over 3x ``allowed`` are not measured."""
    for rank, c in enumerate(ladder_):
        estimate = times.estimate(c)
        if estimate is not None and estimate > 3.0 * allowed:
            continue
        seconds = times.measure(c)
        if seconds <= allowed:
            return rank, c, seconds
    return None


def fit_schedule(config: Configuration, minutes: float | None, step_seconds: float | None,
                 median_shape: Sequence[float], validation_cases: int
                 ) -> tuple[TrainingPlan, dict[str, str]]:
    """Training schedule and test-time mirroring for ``config`` under the budget."""
    base = config.training
    if minutes is None or step_seconds is None:
        defaults = TrainingPlan(rotation=base.rotation, mirror_axes=base.mirror_axes)
        return defaults, {"training": "no time budget: nnU-Net's schedule (1000 epochs of "
                                      "250 iterations, SGD 1e-2, mirroring at test time)"}
    steps = expected_steps(minutes, step_seconds)
    per_epoch = int(np.clip(round(steps / EPOCHS_PER_BUDGET), 10, 250))
    reasons = {"training.iterations_per_epoch":
               f"~{steps} steps expected: epochs of {per_epoch} iterations give "
               f"~{max(steps // per_epoch, 1)} checkpoints and progress points"}
    if steps < ADAMW_BELOW_STEPS:
        optimizer, lr = "adamw", ADAMW_LR
        reasons["training.optimizer"] = (f"~{steps} steps < {ADAMW_BELOW_STEPS}: AdamW "
                                         f"{lr:g} converges faster in short runs")
    else:
        optimizer, lr = "sgd", SGD_LR
        reasons["training.optimizer"] = (f"~{steps} steps >= {ADAMW_BELOW_STEPS}: nnU-Net's "
                                         "SGD with Nesterov momentum")
    window = FORWARD_FRACTION * step_seconds / config.batch_size
    median_windows = count_windows([max(1, round(s)) for s in median_shape], config.patch_size,
                                   slice_axis=config.slice_axis)
    validation_s = max(validation_cases, 1) * median_windows * window
    runs = max(1, int(VALIDATION_SHARE * minutes * 60.0 / max(validation_s, 1e-9)))
    epochs = max(steps // per_epoch, 1)
    validate_every = max(1, math.ceil(epochs / runs))
    reasons["training.validate_every"] = (
        f"a validation of {validation_cases} case(s) takes ~{validation_s:.0f} s: every "
        f"{validate_every} epoch(s) keeps validation under {VALIDATION_SHARE:.0%} of the budget")
    mirrorings = len(mirror_sets(base.mirror_axes, config.patch_size, config.slice_axis))
    tta_s = mirrorings * median_windows * window
    mirror = tta_s <= TTA_SECONDS
    reasons["training.mirror_tta"] = (
        f"mirroring {mirrorings}x predicts a median case in ~{tta_s:.1f} s on this device "
        + ("(cheap enough: on)" if mirror else f"(> {TTA_SECONDS:g} s: off)"))
    plan = TrainingPlan(iterations_per_epoch=per_epoch, validate_every=validate_every,
                        optimizer=optimizer, learning_rate=lr, rotation=base.rotation,
                        mirror_tta=mirror, mirror_axes=base.mirror_axes)
    return plan, reasons


def pinned_fields(config: Configuration, chosen: dict[str, Any] | None) -> set[str]:
    """Fields of ``config`` the user set by hand: those that differ from what automatic
    planning chose (everything when nothing was chosen automatically)."""
    if chosen is None:
        return {*NETWORK_FIELDS, *(f"training.{k}" for k in TrainingPlan().to_dict())}
    current = config.to_dict()
    pinned = {k for k in NETWORK_FIELDS if current[k] != chosen.get(k)}
    if pinned:
        pinned |= set(NETWORK_FIELDS)  # the network is one thing: keep it whole
    training = chosen.get("training", {})
    pinned |= {f"training.{k}" for k, v in current["training"].items() if training.get(k) != v}
    return pinned


def fit_configuration(plan: Plan, name: str, budget: Budget, timer: StepTimer,
                      measured: dict[str, float] | None = None
                      ) -> tuple[Configuration, dict[str, float]]:
    """The configuration ``name`` of ``plan`` fitted to ``budget`` (see module docstring);
    also returns the step times measured (by candidate key)."""
    current = plan.configuration(name)
    auto = plan.auto.get(name, {})
    reference = Configuration.from_dict(auto["reference"]) if "reference" in auto else current
    # a value that differs from the automatic choice was set by hand; a plan written by
    # hand (nothing recorded) is kept whole
    pinned = pinned_fields(current, auto.get("chosen"))
    times = StepTimes(timer, measured)
    reasons: dict[str, str] = {k: v for k, v in current.reasons.items()
                               if k in ("training.rotation", "training.mirror_axes", "slice_axis")}
    if NETWORK_FIELDS[0] in pinned:
        chosen, step = current, None
        reasons["network"] = "set in plan.json (kept as written)"
        if budget.minutes is not None:
            step = times.measure(Candidate(current.filters[0], current))
    elif budget.minutes is None:
        chosen, step = reference, None
        reasons["network"] = ("no time budget: nnU-Net's reference configuration "
                              f"(median case shape within {budget.memory_gb or 8:g} GB)")
    else:
        pick, step, why = choose(ladder(reference, budget.memory_gb), times, budget.minutes)
        chosen, reasons["network"] = pick.config, f"{why} on {budget.device}"
    median = plan.auto.get("median_shape", list(_patch_3d(chosen)))
    schedule, why_schedule = fit_schedule(chosen, budget.minutes, step, median,
                                          budget.validation_cases)
    training = _keep_pinned(current.training, schedule, pinned)
    reasons.update({k: v for k, v in why_schedule.items() if k not in pinned})
    reasons.update({k: "set in plan.json (kept as written)" for k in pinned
                    if k.startswith("training.")})
    fitted = replace(chosen, training=training, reasons=reasons)
    fitted.check()
    return fitted, times.known


def _patch_3d(config: Configuration) -> tuple[int, ...]:
    """The 3D box a configuration's window covers (size 1 along a 2D slice axis)."""
    patch = list(config.patch_size)
    if config.slice_axis is not None:
        patch.insert(config.slice_axis, 1)
    return tuple(patch)


def _keep_pinned(current: TrainingPlan, fitted: TrainingPlan, pinned: set[str]
                 ) -> TrainingPlan:
    values = fitted.to_dict()
    values.update({k: v for k, v in current.to_dict().items() if f"training.{k}" in pinned})
    return TrainingPlan.from_dict(values)


def fit_plan(plan: Plan, names: Sequence[str], budget: Budget, timer: StepTimer,
             reuse_measurements: bool = True) -> Plan:
    """``plan`` with the configurations ``names`` fitted to ``budget``; ``plan.auto``
    records the reference, what was chosen and the measured step times (reused on the
    same device unless ``reuse_measurements`` is False: training measures afresh, since
    the machine may be busier or quieter than when the plan was made)."""
    auto = dict(plan.auto)
    measured_all: dict[str, dict[str, float]] = dict(auto.get("measured", {}))
    if not reuse_measurements:  # measured afresh, once for all the configurations
        measured_all.pop(budget.device, None)
    configurations = dict(plan.configurations)
    for name in names:
        entry = dict(auto.get(name, {}))
        entry.setdefault("reference", plan.configuration(name).to_dict())
        fitted, measured = fit_configuration(
            plan.with_changes(auto={**auto, name: entry}), name, budget, timer,
            measured_all.get(budget.device))
        measured_all[budget.device] = measured
        entry["chosen"] = {k: v for k, v in fitted.to_dict().items() if k != "reasons"}
        auto[name] = entry
        configurations[name] = fitted
    auto.update(budget_minutes=budget.minutes, device=budget.device, measured=measured_all)
    return plan.with_changes(configurations=configurations, auto=auto)


def describe(config: Configuration) -> list[str]:
    """Lines for the log and the CLI: the choice and why."""
    t = config.training
    rotation = f"rotation {t.rotation}, " if config.spatial_dims == 3 else ""
    lines = [f"patch {list(config.patch_size)}, batch {config.batch_size}, filters "
             f"{list(config.filters)}; {t.optimizer} lr {t.learning_rate:g}, "
             f"{t.iterations_per_epoch} iterations/epoch, validate every {t.validate_every}, "
             f"{rotation}test-time mirroring {'on' if t.mirror_tta else 'off'}"]
    lines += [f"  {field}: {why}" for field, why in config.reasons.items()]
    return lines
