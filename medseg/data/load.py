"""``load_dataset``: recognise a dataset layout from its folder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from medseg.core.errors import DatasetError
from medseg.data.dataset import Dataset
from medseg.data.decathlon import is_decathlon, load_decathlon
from medseg.data.dicom_study import DEFAULT_MASK_PATTERN, is_dicom_study, load_dicom_study
from medseg.data.paired import find_paired_folders, load_paired_folders


def load_dataset(
    path: str | Path,
    *,
    mask_pattern: str = DEFAULT_MASK_PATTERN,
    channels: Sequence[str] | None = None,
    regularize_slices: bool = False,
) -> Dataset:
    """Load a dataset folder, recognising its layout.

    - Decathlon: ``dataset.json`` + ``imagesTr/`` (+ ``labelsTr/``, ``imagesTs/``);
    - paired folders: ``images/`` (or ``imagesTr/``) and ``labels/`` (or ``labelsTr/``)
      with files of the same case name and no ``dataset.json``;
    - DICOM studies: any folder of DICOM files, image series paired with the mask series
      whose description matches ``mask_pattern`` (``channels``: descriptions to use).

    ``regularize_slices`` marks every case to be read with DICOM slice regularisation
    (irregular series resampled onto a regular grid instead of refused).
    """
    dataset = _load_layout(Path(path), mask_pattern, channels)
    return dataset.with_regularized_slices() if regularize_slices else dataset


def _load_layout(root: Path, mask_pattern: str, channels: Sequence[str] | None) -> Dataset:
    if not root.is_dir():
        raise DatasetError("dataset must be a folder", root)
    if is_decathlon(root):
        return load_decathlon(root)
    paired = find_paired_folders(root)
    if paired is not None:
        return load_paired_folders(*paired, name=root.name)
    if is_dicom_study(root):
        return load_dicom_study(root, mask_pattern=mask_pattern, channels=channels)
    raise DatasetError(
        "unrecognised dataset layout: expected dataset.json + imagesTr/ (Decathlon), "
        "images/ + labels/ folders, or DICOM studies with a mask series", root)
