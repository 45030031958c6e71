"""Measuring how long one training step of a configuration takes on a device.

A step is what the training loop does per batch: forward pass under the device's
mixed-precision policy, Dice + CE loss (with deep supervision), backward pass, gradient
clipping and an optimiser update, on random data of the configuration's patch and batch
size. Two warm-up steps are discarded (allocation, kernel selection); then steps are timed
until ``min_steps`` have run and at least ``min_seconds`` have passed, and the fastest is
returned: another process's burst of work only ever slows a step down, so the minimum is
the estimate of this configuration's own cost least disturbed by it. (With three timed
steps and their median, a short burst of other work on the 2-core development machine
once made a 0.074 s step measure 0.33 s, and the planner chose a network far smaller than
the device could train.) What the loop really achieves (loader, logging) is the
planner's ``LOOP_EFFICIENCY``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from medseg.models import build_network
from medseg.models.runtime import autocast_dtype, synchronize
from medseg.preprocess.plan import Configuration, Plan
from medseg.train.loss import build_loss, compute_loss

#: Seconds per step of a configuration; injectable (tests pass a formula).
StepTimer = Callable[[Configuration], float]


def measure_step_seconds(
    plan: Plan, config: Configuration, device: torch.device, *, precision: str = "auto",
    min_steps: int = 5, min_seconds: float = 1.0, max_seconds: float = 20.0,
) -> float:
    """Fastest of several training steps of ``config`` on ``device``, in seconds.

    Raises ``torch.cuda.OutOfMemoryError`` (or RuntimeError) when it does not fit.
    """
    generator = torch.Generator().manual_seed(0)
    model, batch = _network_and_batch(plan, config, device, generator)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.99, nesterov=True)
    loss_fn = build_loss(config.deep_supervision)
    amp = autocast_dtype(device, precision)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)

    def step() -> float:
        synchronize(device)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            output = model(batch["image"])
        loss = compute_loss(loss_fn, output, batch["label"])
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), 12.0)
        scaler.step(optimizer)
        scaler.update()
        synchronize(device)
        return time.perf_counter() - start

    model.train()
    spent = step() + step()  # warm-up: allocation, kernel selection
    times: list[float] = []
    while len(times) < min_steps or spent < min_seconds:
        times.append(step())
        spent += times[-1]
        if spent > max_seconds:
            break
    return min(times)


def _network_and_batch(plan: Plan, config: Configuration, device: torch.device,
                       generator: torch.Generator) -> tuple[nn.Module, dict[str, Any]]:
    name = "2d" if config.spatial_dims == 2 else "3d"
    probe = plan.with_changes(configurations={name: config})
    model = build_network(probe, name).to(device)
    shape = (config.batch_size, plan.n_channels, *config.patch_size)
    image = torch.randn(shape, generator=generator).to(device)
    label = torch.randint(0, plan.n_classes, (config.batch_size, 1, *config.patch_size),
                          generator=generator).to(device)
    return model, {"image": image, "label": label}


def device_timer(plan: Plan, device: torch.device, precision: str = "auto") -> StepTimer:
    """A :data:`StepTimer` measuring on ``device`` (a configuration that does not fit in
    memory takes infinitely long)."""

    def timer(config: Configuration) -> float:
        try:
            return measure_step_seconds(plan, config, device, precision=precision)
        except torch.cuda.OutOfMemoryError:
            return float("inf")
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()  # the probe's network and batch are gone

    return timer
