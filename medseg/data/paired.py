"""Two folders, images and labels, paired by case name (``<case>.nii.gz`` in both, or
``<case>_0000.nii.gz``... channel files in the image folder)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from medseg.core.errors import DatasetError, InputError
from medseg.data.dataset import Case, Dataset
from medseg.data.decathlon import NIFTI_SUFFIXES, case_id_of, channel_files, strip_nifti_suffix
from medseg.io import read_volume

IMAGE_FOLDER_NAMES = ("images", "imagesTr")
LABEL_FOLDER_NAMES = ("labels", "labelsTr")


def find_paired_folders(root: Path) -> tuple[Path, Path] | None:
    """``(images, labels)`` sub-folders of ``root`` if it has one of each, else None."""
    images = next((root / n for n in IMAGE_FOLDER_NAMES if (root / n).is_dir()), None)
    labels = next((root / n for n in LABEL_FOLDER_NAMES if (root / n).is_dir()), None)
    return (images, labels) if images and labels else None


def load_paired_folders(
    images_dir: str | Path,
    labels_dir: str | Path,
    labels: Mapping[int, str] | None = None,
    channels: Mapping[int, str] | None = None,
    name: str | None = None,
) -> Dataset:
    """Pair every image in ``images_dir`` with the label of the same case name.

    Images without a label become test cases; labels without an image are an error.
    ``labels`` defaults to the values found in the label files (read once, headers and data);
    ``channels`` defaults to one channel per ``_cccc`` suffix, named ``"unknown"``.
    """
    images_dir, labels_dir = Path(images_dir).absolute(), Path(labels_dir).absolute()
    for folder in (images_dir, labels_dir):
        if not folder.is_dir():
            raise DatasetError("not a folder", folder)
    image_ids = _case_ids(images_dir)
    label_files = {strip_nifti_suffix(p.name): p for p in _nifti_files(labels_dir)}
    if not image_ids:
        raise DatasetError("no NIfTI images found", images_dir)
    orphans = sorted(set(label_files) - set(image_ids))
    if orphans:
        raise DatasetError(f"labels without an image: {', '.join(orphans[:5])}", labels_dir)
    n_channels = len(channels) if channels else _count_channels(images_dir, image_ids[0])
    chans = dict(channels) if channels else {c: "unknown" for c in range(n_channels)}
    cases, tests = [], []
    for case_id in image_ids:
        files = channel_files(images_dir, case_id, n_channels)
        label = label_files.get(case_id)
        (cases if label else tests).append(Case(case_id, files, label))
    if not cases:
        raise DatasetError("no image has a label of the same name", labels_dir)
    label_map = dict(labels) if labels else _labels_found(tuple(c.label for c in cases))
    return Dataset(
        name=name or images_dir.parent.name, root=images_dir.parent, labels=label_map,
        channels=chans, cases=tuple(cases), test_cases=tuple(tests),
    )


def _nifti_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.endswith(NIFTI_SUFFIXES))


def _case_ids(folder: Path) -> list[str]:
    return sorted({case_id_of(p) for p in _nifti_files(folder)})


def _count_channels(folder: Path, case_id: str) -> int:
    suffixed = [p for p in _nifti_files(folder)
                if strip_nifti_suffix(p.name).startswith(f"{case_id}_")
                and case_id_of(p) == case_id]
    return max(1, len(suffixed))


def _labels_found(label_files: tuple[Path | None, ...]) -> dict[int, str]:
    """Label map from the values present in the label files (0 always declared)."""
    values: set[int] = {0}
    for path in label_files:
        if path is None:
            continue
        try:
            values.update(int(v) for v in np.unique(read_volume(path).array))
        except InputError:  # unreadable labels are reported by validation
            continue
    return {v: ("background" if v == 0 else f"label_{v}") for v in sorted(values)}
