"""Writers of tiny synthetic datasets on disk (Decathlon and paired-folder layouts)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medseg.core import Volume
from medseg.io import write_volume
from tests.conftest import make_affine, sphere_label

LABELS = {"0": "background", "1": "left", "2": "right"}


def case_volumes(
    shape: Sequence[int] = (20, 22, 18), spacing: Sequence[float] = (1.0, 1.0, 1.0),
    orientation: str = "RAS", oblique_degrees: Sequence[float] = (0.0, 0.0, 0.0),
    channels: int = 1, seed: int = 0,
) -> tuple[Volume, Volume]:
    """An image with a zero border (so cropping happens) and a two-class sphere label."""
    rng = np.random.default_rng(seed)
    label = sphere_label(shape, radius=min(shape) / 3)
    half = shape[0] // 2
    label[:half][label[:half] > 0] = 2
    image = rng.normal(100, 10, (channels, *shape)).astype(np.float32) + 50 * (label > 0)
    image[:, :2] = 0  # a zero slab: cropped away by crop_to_nonzero
    affine = make_affine(spacing, orientation, oblique_degrees, origin=(5.0, -3.0, 2.0))
    return Volume(image, affine), Volume(label[None], affine)


def write_decathlon(root: Path, n_cases: int = 3, channels: int = 1, n_test: int = 1,
                    modality: str = "MRI", **volume_kwargs: object) -> Path:
    """A Decathlon dataset of ``n_cases`` labelled and ``n_test`` unlabelled cases."""
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    training = []
    for i in range(n_cases + n_test):
        image, label = case_volumes(channels=channels, seed=i, **volume_kwargs)
        folder = "imagesTr" if i < n_cases else "imagesTs"
        for c in range(channels):
            name = f"case_{i:03d}_{c:04d}.nii.gz" if channels > 1 else f"case_{i:03d}.nii.gz"
            write_volume(Volume(image.array[c:c + 1], image.affine), root / folder / name)
        if i < n_cases:
            write_volume(label, root / "labelsTr" / f"case_{i:03d}.nii.gz")
            training.append({"image": f"./imagesTr/case_{i:03d}.nii.gz",
                             "label": f"./labelsTr/case_{i:03d}.nii.gz"})
    meta = {"name": "Synthetic", "modality": {str(c): modality for c in range(channels)},
            "labels": LABELS, "training": training}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def write_nnunet_raw(root: Path, n_cases: int = 3, channels: int = 1, n_test: int = 1,
                     file_ending: str = ".nii.gz", regions: bool = False,
                     **volume_kwargs: object) -> Path:
    """An nnU-Net v2 raw dataset (``<case>_<cccc><file_ending>``, ``channel_names``); with
    ``regions`` the labels are declared as regions ``whole`` = {1, 2} and ``core`` = {2}."""
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n_cases + n_test):
        image, label = case_volumes(channels=channels, seed=i, **volume_kwargs)
        folder = "imagesTr" if i < n_cases else "imagesTs"
        for c in range(channels):
            write_volume(Volume(image.array[c:c + 1], image.affine),
                         root / folder / f"pt{i:02d}_{c:04d}{file_ending}")
        if i < n_cases:
            write_volume(label, root / "labelsTr" / f"pt{i:02d}{file_ending}")
    labels: dict[str, object] = {"background": 0, "left": 1, "right": 2}
    meta: dict[str, object] = {"channel_names": {str(c): "MRI" if c == 0 else "T2"
                                                 for c in range(channels)},
                               "numTraining": n_cases, "file_ending": file_ending}
    if regions:
        labels = {"background": 0, "whole": [1, 2], "core": [2]}
        meta["regions_class_order"] = [1, 2]
    meta["labels"] = labels
    (root / "dataset.json").write_text(json.dumps(meta))
    return root
