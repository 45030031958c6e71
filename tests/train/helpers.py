"""Building small training sessions over the in-memory sphere cache."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from medseg.sampling import AugmentSettings
from medseg.train.api import TrainSettings, build_session
from medseg.train.loop import Session
from medseg.train.settings import OptimSettings
from tests.sampling.synthetic import sphere_cases, sphere_plan

FAST = TrainSettings(
    iterations_per_epoch=10, validate_every=2, num_workers=0, show_progress=False,
    optim=OptimSettings(name="adamw", lr=1e-2), precision="fp32",
    augment=AugmentSettings(p_rotate=0, p_scale=0, p_gamma=0, p_blur=0),
)


def session(tmp_path: Path, config: str = "3d", fold: int | str = 0,
            settings: TrainSettings = FAST, **plan_kwargs) -> Session:
    cache = sphere_cases(n=6)
    plan = sphere_plan(**plan_kwargs)
    return build_session(plan, cache, cache.case_ids, tmp_path, config, fold,
                         tmp_path / "train" / config / f"fold_{fold}", torch.device("cpu"),
                         settings)


def with_changes(**changes) -> TrainSettings:
    return replace(FAST, **changes)
