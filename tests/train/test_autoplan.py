"""Fitting the plan to the device and budget, with injected step times."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from medseg.preprocess import Plan
from medseg.preprocess.planning import plan_configuration
from medseg.train.autoconfig import AUTO_2D_BELOW, pick_configuration, planned_steps
from medseg.train.autoplan import (
    LOOP_EFFICIENCY,
    STEPS_TARGET,
    Budget,
    Candidate,
    cost,
    expected_steps,
    fit_plan,
    ladder,
    usable_seconds,
)

DEVICE = "cpu:test:2 threads"


def reference_plan(spacing=(1.0, 1.0, 1.0), shape=(40, 56, 40)) -> Plan:
    config = plan_configuration(list(spacing), list(shape), 1e8, memory_budget_gb=8.0)
    chosen = {k: v for k, v in config.to_dict().items() if k != "reasons"}
    return Plan(dataset_name="t", labels={0: "bg", 1: "a", 2: "b"}, channels={0: "MRI"},
                target_spacing=spacing, normalization=({"scheme": "zscore_nonzero"},),
                configurations={"3d": config},
                auto={"median_shape": list(shape), "n_cases": 100,  # as plan_dataset records
                      "3d": {"reference": config.to_dict(), "chosen": chosen}})


class Timer:
    """Step time proportional to the compute of a configuration; counts calls."""

    def __init__(self, seconds_per_unit: float) -> None:
        self.rate, self.calls = seconds_per_unit, 0

    def __call__(self, config) -> float:
        self.calls += 1
        return self.rate * cost(config)


def fitted(plan: Plan, minutes: float | None, rate: float) -> tuple[Plan, Timer]:
    timer = Timer(rate)
    return fit_plan(plan, ["3d"], Budget(minutes, DEVICE, validation_cases=20), timer), timer


def test_fast_device_keeps_the_reference_and_slow_one_gets_a_cheaper_network():
    plan = reference_plan()
    reference = plan.configuration("3d")
    per_unit = 1e-13
    fast, _ = fitted(plan, 15, rate=per_unit)
    assert fast.configuration("3d").patch_size == reference.patch_size
    assert fast.configuration("3d").filters == reference.filters
    slow, timer = fitted(plan, 15, rate=per_unit * 1000)  # same data, a slower device
    chosen = slow.configuration("3d")
    assert cost(chosen) < cost(reference)
    assert (chosen.filters, chosen.patch_size, chosen.batch_size) != \
        (reference.filters, reference.patch_size, reference.batch_size)
    # the choice is the most preferred candidate that reaches the step target
    seconds = timer.rate * cost(chosen)
    assert expected_steps(15, seconds) >= STEPS_TARGET
    order = [c.key for c in ladder(reference)]
    preferred = [c for c in ladder(reference)
                 if order.index(c.key) < order.index(_key(chosen))]
    assert all(expected_steps(15, timer.rate * cost(c.config)) < STEPS_TARGET
               for c in preferred)
    assert "steps" in chosen.reasons["network"] and DEVICE in chosen.reasons["network"]


def _key(config) -> str:
    patch = "x".join(str(p) for p in config.patch_size)
    return f"w{config.filters[0]}-p{patch}-b{config.batch_size}-l{len(config.strides)}"


@pytest.mark.parametrize("overhead_share", [0.2, 0.6])
@pytest.mark.parametrize("fits", [0, 7, 30, 60])
def test_steps_with_fixed_overhead_still_get_the_most_capable_network_that_fits(
        overhead_share: float, fits: int):
    """A step costs a fixed overhead plus compute (as on a CPU: a tiny network's step is
    mostly overhead). Estimates scaled from the cheapest candidate then overshoot; the
    choice must still be the first candidate of the ladder whose true step time fits."""
    plan = reference_plan()
    candidates = ladder(plan.configuration("3d"))
    allowed = usable_seconds(15) * LOOP_EFFICIENCY / STEPS_TARGET
    overhead = overhead_share * allowed
    rate = (allowed - overhead) / cost(candidates[fits].config)  # candidate `fits` just fits

    def step_seconds(config) -> float:
        return overhead + rate * cost(config)

    best = next(c for c in candidates if step_seconds(c.config) <= allowed)  # brute force
    chosen = fit_plan(plan, ["3d"], Budget(15, DEVICE, validation_cases=20),
                      step_seconds).configuration("3d")
    assert Candidate(chosen.filters[0], chosen).key == best.key


def test_longer_budget_affords_a_bigger_network():
    plan = reference_plan()
    rate = 2e-11  # about this CPU's
    short, _ = fitted(plan, 5, rate)
    long, _ = fitted(plan, 120, rate)
    assert cost(long.configuration("3d")) > cost(short.configuration("3d"))


def test_no_budget_keeps_nnunet_reference_and_schedule_without_measuring():
    plan = reference_plan()
    result, timer = fitted(plan, None, rate=1.0)
    config = result.configuration("3d")
    assert timer.calls == 0
    assert config.patch_size == plan.configuration("3d").patch_size
    assert config.training.optimizer == "sgd" and config.training.iterations_per_epoch == 250


def test_schedule_fits_the_budget():
    plan = reference_plan()
    result, _ = fitted(plan, 15, rate=2e-10)
    config, t = result.configuration("3d"), result.configuration("3d").training
    assert t.optimizer == "adamw"  # a few thousand steps: AdamW
    steps = expected_steps(15, 2e-10 * cost(config))
    assert 10 <= t.iterations_per_epoch <= 250
    assert abs(steps / t.iterations_per_epoch - 20) < 5 or t.iterations_per_epoch in (10, 250)
    assert {"training.optimizer", "training.validate_every", "training.mirror_tta",
            "training.iterations_per_epoch", "network"} <= set(config.reasons)


def test_measured_times_are_recorded_and_reused():
    plan = reference_plan()
    first, timer = fitted(plan, 15, rate=1e-9)
    assert timer.calls > 0 and first.auto["measured"][DEVICE]
    again = Timer(1e-9)
    fit_plan(first, ["3d"], Budget(15, DEVICE, validation_cases=20), again)
    assert again.calls == 0  # same device: the recorded step times are used


def test_values_edited_in_plan_json_are_kept():
    plan, _ = fitted(reference_plan(), 15, rate=1e-9)
    config = plan.configuration("3d")
    edited = replace(config, filters=tuple(f // 2 for f in config.filters),
                     training=replace(config.training, learning_rate=0.05))
    plan = plan.with_changes(configurations={"3d": edited})
    refit, _ = fitted(plan, 60, rate=1e-9)  # another budget: the rest is chosen again
    result = refit.configuration("3d")
    assert result.filters == edited.filters and result.patch_size == edited.patch_size
    assert result.training.learning_rate == 0.05
    assert "kept as written" in result.reasons["network"]


def test_hand_written_plan_is_kept_whole():
    plan = reference_plan()
    plan = plan.with_changes(auto={})  # not made by medseg's planning
    result, _ = fitted(plan, 15, rate=1e-7)
    assert result.configuration("3d").to_dict() == {
        **plan.configuration("3d").to_dict(),
        "reasons": result.configuration("3d").reasons}


def test_anisotropic_reference_keeps_anisotropic_candidates():
    plan = reference_plan(spacing=(0.8, 0.8, 4.0), shape=(256, 256, 40))
    reference = plan.configuration("3d")
    for c in ladder(reference):
        assert c.config.kernel_sizes[0][2] == 1  # no convolution across the coarse slices
        assert c.config.strides[1] == (2, 2, 1)


@pytest.mark.parametrize("memory", [2.0, 4.0])
def test_gpu_candidates_fit_the_memory(memory):
    from medseg.preprocess.planning import training_bytes

    reference = reference_plan(shape=(128, 128, 128)).configuration("3d")
    for c in ladder(reference, memory_gb=memory)[1:]:
        need = c.config.batch_size * training_bytes(c.config.patch_size, c.config.strides,
                                                    c.config.filters)
        assert need <= (memory - 1) * 1024**3
    assert np.prod(ladder(reference)[0].config.patch_size) > 0


def two_configuration_plan() -> Plan:
    """The reference plan with nnU-Net's 2D configuration (slices across axis 2) beside
    its 3D one."""
    plan = reference_plan()
    config = plan_configuration([1.0, 1.0], [40, 56], 1e8, memory_budget_gb=8.0, slice_axis=2)
    chosen = {k: v for k, v in config.to_dict().items() if k != "reasons"}
    return plan.with_changes(
        configurations={**plan.configurations, "2d": config},
        auto={**plan.auto, "2d": {"reference": config.to_dict(), "chosen": chosen}})


@pytest.mark.parametrize("minutes,rate,expected", [
    (None, 1.0, "3d"),  # no budget: nnU-Net's default
    (15, 1e-13, "3d"),  # a fast device trains the reference 3D network
    (15, 2e-11, "3d"),  # about this CPU's rate: a smaller 3D network, still enough steps
    (15, 5e-10, "2d"),  # under the step target even at the cheapest 3D network
    (15, 2e-9, "2d"),  # far too slow for 3D
])
def test_auto_configuration_is_3d_unless_the_budget_is_too_short_for_it(minutes, rate,
                                                                          expected):
    budget = Budget(minutes, DEVICE, validation_cases=20)
    timer = Timer(rate)
    plan = fit_plan(two_configuration_plan(), ["3d", "2d"], budget, timer)
    name, why = pick_configuration(plan, budget)
    assert name == expected
    if minutes is None:
        assert planned_steps(plan, "3d", budget) is None and timer.calls == 0
        return
    steps = {n: expected_steps(minutes, rate * cost(plan.configuration(n))) for n in ("3d", "2d")}
    assert {n: planned_steps(plan, n, budget) for n in steps} == steps  # what was measured
    assert (steps["3d"] < AUTO_2D_BELOW * STEPS_TARGET) == (expected == "2d")
    assert f"~{steps['3d']} steps of 3D vs ~{steps['2d']} of 2D" in why


def test_auto_without_a_2d_configuration_is_3d():
    budget = Budget(15, DEVICE, validation_cases=20)
    plan = fit_plan(reference_plan(), ["3d"], budget, Timer(5e-10))
    assert pick_configuration(plan, budget)[0] == "3d"


def test_fresh_measurements_of_both_configurations_are_all_kept():
    budget = Budget(15, DEVICE, validation_cases=20)
    stale = fit_plan(two_configuration_plan(), ["3d", "2d"], budget, Timer(1e-13))
    plan = fit_plan(stale, ["3d", "2d"], budget, Timer(2e-9), reuse_measurements=False)
    for name in ("3d", "2d"):  # measured afresh (not the stale times), and not forgotten
        assert planned_steps(plan, name, budget) == expected_steps(
            15, 2e-9 * cost(plan.configuration(name)))
