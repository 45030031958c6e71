"""Patch sampling from the preprocessed cache, batched augmentation, DataLoader."""

from medseg.sampling.augment import AugmentSettings, augment_batch
from medseg.sampling.loader import (
    EpochSampler,
    OpenCases,
    PatchBatches,
    SamplerSettings,
    make_batch,
    make_loader,
    sample_patch,
)
from medseg.sampling.patches import read_patch

__all__ = [
    "AugmentSettings",
    "EpochSampler",
    "OpenCases",
    "PatchBatches",
    "SamplerSettings",
    "augment_batch",
    "make_batch",
    "make_loader",
    "read_patch",
    "sample_patch",
]
