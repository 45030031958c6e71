"""The MONAI side of ``benchmarks/preprocess.py``, also run as its own process (it imports
MONAI, never medseg, so its start-up is MONAI's alone).

    python benchmarks/preprocess_monai.py DATASET_ROOT OUT_DIR --spacing 1 1 1 --workers 2

LoadImaged, EnsureChannelFirstd, Orientationd(RAS), Spacingd(spacing, bilinear/nearest),
NormalizeIntensityd(nonzero), CropForegroundd, then ``np.save`` of the image (float32) and
the label (uint8) of every training case of a Decathlon ``dataset.json``; with
``--workers`` > 0 the cases run in a MONAI ``DataLoader`` with that many worker processes.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.data import DataLoader, Dataset
from monai.transforms import (
    Compose,
    CropForegroundd,
    EnsureChannelFirstd,
    LoadImaged,
    NormalizeIntensityd,
    Orientationd,
    Spacingd,
)

KEYS = ["image", "label"]


def monai_chain(spacing: Sequence[float]) -> Compose:
    return Compose([
        LoadImaged(keys=KEYS, image_only=True),
        EnsureChannelFirstd(keys=KEYS),
        Orientationd(keys=KEYS, axcodes="RAS"),
        Spacingd(keys=KEYS, pixdim=tuple(spacing), mode=("bilinear", "nearest")),
        NormalizeIntensityd(keys="image", nonzero=True),
        CropForegroundd(keys=KEYS, source_key="image"),
    ])


def training_items(root: Path) -> list[dict[str, str]]:
    """``{"case", "image", "label"}`` of every training case listed in ``dataset.json``."""
    meta = json.loads((root / "dataset.json").read_text())
    items = []
    for entry in meta["training"]:
        image = (root / entry["image"]).resolve()
        case = image.name.removesuffix(".gz").removesuffix(".nii")
        items.append({"case": case, "image": str(image),
                      "label": str((root / entry["label"]).resolve())})
    return items


class SaveNpy:
    """Last step of the chain: write image and label as .npy, return the case id."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def __call__(self, item: dict[str, Any]) -> str:
        case = item["case"]
        np.save(self.out / f"{case}.npy", np.asarray(item["image"], dtype=np.float32))
        np.save(self.out / f"{case}_seg.npy", np.asarray(item["label"], dtype=np.uint8))
        return case


def run_chain(items: list[dict[str, str]], spacing: Sequence[float], out: Path,
              workers: int) -> int:
    """Preprocess and save every item; returns the number of cases written."""
    out.mkdir(parents=True, exist_ok=True)
    transform = Compose([monai_chain(spacing), SaveNpy(out)])
    if workers <= 0:
        return len([transform(item) for item in items])
    loader = DataLoader(Dataset(items, transform), batch_size=1, num_workers=workers,
                        collate_fn=list)
    return sum(len(batch) for batch in loader)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--spacing", type=float, nargs=3, required=True)
    parser.add_argument("--workers", type=int, default=0)
    args = parser.parse_args()
    written = run_chain(training_items(args.root), args.spacing, args.out, args.workers)
    print(f"{written} cases written to {args.out}")


if __name__ == "__main__":
    main()
