"""``load_dataset``: recognise a dataset layout from its folder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal, get_args

from medseg.core.errors import DatasetError
from medseg.data.dataset import Dataset
from medseg.data.decathlon import is_decathlon, load_decathlon
from medseg.data.dicom_annotations import load_annotated_study
from medseg.data.dicom_study import DEFAULT_MASK_PATTERN, is_dicom_study, load_dicom_study
from medseg.data.nnunet import is_nnunet_raw, load_nnunet_raw
from medseg.data.paired import find_paired_folders, load_paired_folders
from medseg.io.structures import StructuresLike

#: where the labels of DICOM studies come from: mask series, RTSTRUCT or DICOM-SEG files
LabelSource = Literal["mask-series", "rtstruct", "dicom-seg"]
LABEL_SOURCES: tuple[str, ...] = get_args(LabelSource)
DEFAULT_LABEL_SOURCE: LabelSource = "mask-series"


def load_dataset(
    path: str | Path,
    *,
    mask_pattern: str = DEFAULT_MASK_PATTERN,
    channels: Sequence[str] | None = None,
    regularize_slices: bool = False,
    label_source: str = DEFAULT_LABEL_SOURCE,
    structures: StructuresLike | None = None,
    overlap: str | None = None,
) -> Dataset:
    """Load a dataset folder, recognising its layout.

    - nnU-Net v2 raw: ``dataset.json`` with ``channel_names`` + ``imagesTr/`` (``file_ending``
      .nii.gz, .nrrd, .mha ...; region labels kept in ``Dataset.regions``);
    - Decathlon / nnU-Net v1: ``dataset.json`` + ``imagesTr/`` (+ ``labelsTr/``, ``imagesTs/``);
    - paired folders: ``images/`` (or ``imagesTr/``) and ``labels/`` (or ``labelsTr/``)
      with files of the same case name and no ``dataset.json``;
    - DICOM studies: any folder of DICOM files, image series paired with the mask series
      whose description matches ``mask_pattern`` (``channels``: descriptions to use); or,
      with ``label_source`` "rtstruct" / "dicom-seg", every such annotation file on the
      series it was drawn on, ``structures`` choosing and naming the label values and
      ``overlap`` resolving overlaps (:mod:`medseg.data.dicom_annotations`).

    ``regularize_slices`` marks every case to be read with DICOM slice regularisation
    (irregular series resampled onto a regular grid instead of refused).
    """
    root = Path(path)
    if label_source not in LABEL_SOURCES:
        raise DatasetError(f"unknown label source {label_source!r} "
                           f"(use {', '.join(LABEL_SOURCES)})", root)
    if label_source != DEFAULT_LABEL_SOURCE:
        if not root.is_dir() or not is_dicom_study(root):
            raise DatasetError(f"label source {label_source} needs a folder of DICOM studies",
                               root)
        dataset = load_annotated_study(root, label_source, structures, channels, overlap)
    else:
        dataset = _load_layout(root, mask_pattern, channels)
    return dataset.with_regularized_slices() if regularize_slices else dataset


def _load_layout(root: Path, mask_pattern: str, channels: Sequence[str] | None) -> Dataset:
    if not root.is_dir():
        raise DatasetError("dataset must be a folder", root)
    if is_nnunet_raw(root):
        return load_nnunet_raw(root)
    if is_decathlon(root):
        return load_decathlon(root)
    paired = find_paired_folders(root)
    if paired is not None:
        return load_paired_folders(*paired, name=root.name)
    if is_dicom_study(root):
        return load_dicom_study(root, mask_pattern=mask_pattern, channels=channels)
    raise DatasetError(
        "unrecognised dataset layout: expected dataset.json + imagesTr/ (Decathlon or "
        "nnU-Net), "
        "images/ + labels/ folders, or DICOM studies with a mask series", root)
