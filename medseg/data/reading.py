"""Reading one case into Volumes: channels stacked, label kept integer."""

from __future__ import annotations

import numpy as np

from medseg.core import Volume
from medseg.core.errors import GeometryError, ReadError
from medseg.data.dataset import Case
from medseg.io import Structure, read_annotation, read_volume
from medseg.io.annotation import OVERLAP_POLICIES


def read_case(case: Case, *, allow_nonfinite: bool = False) -> tuple[Volume, Volume | None]:
    """Read a case: ``(image (C, I, J, K), label (1, I, J, K) or None)``.

    A DICOM mask series (``case.label_series``) is binarised: non-zero voxels are label 1.
    An annotation file (``case.label_format`` "rtstruct" or "dicom-seg") is read onto the
    first channel's grid, each label value made of the ROIs/segments ``case.label_rois``
    names; structures missing from the file are simply absent from the label map.
    Channels must lie on one grid; the image keeps the first channel's geometry and its
    dtype is the common dtype of the channels. With ``case.regularize``, irregular DICOM
    series are resampled onto a regular grid (images linearly, labels by nearest slice).
    Raises ReadError/GeometryError naming the file.
    """
    series = case.image_series or (None,) * len(case.images)
    channels = [
        read_volume(path, uid, allow_nonfinite=allow_nonfinite, regularize=case.regularize)
        for path, uid in zip(case.images, series, strict=True)
    ]
    image = stack_channels(channels, case.case_id)
    label = None
    if case.label is not None and case.label_format:
        label = read_annotation_label(case, channels[0])
    elif case.label is not None:
        label = read_volume(case.label, case.label_series, allow_nonfinite=True,
                            regularize=case.regularize, interpolation="nearest")
        # A DICOM mask series marks the structure by any non-zero value: label 1.
        array = (label.array != 0).astype(np.uint8) if case.label_series else label.array
        label = Volume(array, label.affine, {**label.meta, "case": case.case_id})
    return image, label


def read_annotation_label(case: Case, grid: Volume) -> Volume:
    """The label map of a case whose label is an RTSTRUCT or DICOM-SEG, on ``grid``."""
    assert case.label is not None
    rois: dict[int, list[str]] = {}
    for value, name in case.label_rois:
        rois.setdefault(value, []).append(name)
    structures = {v: Structure.exactly(" + ".join(names), names) for v, names in rois.items()}
    overlap = case.label_overlap if case.label_overlap in OVERLAP_POLICIES else None
    annotation = read_annotation(case.label, grid, structures=structures,
                                 overlap=overlap)  # type: ignore[arg-type]
    return Volume(annotation.labels.array, annotation.labels.affine,
                  {**annotation.labels.meta, "case": case.case_id})


def stack_channels(channels: list[Volume], case_id: str) -> Volume:
    """Concatenate single- or multi-channel volumes of one grid along the channel axis."""
    if not channels:
        raise ReadError(f"case {case_id} has no image")
    first = channels[0]
    for other in channels[1:]:
        if not first.same_grid(other):
            raise GeometryError(
                f"case {case_id}: channel {other.meta.get('source')} is not on the grid of "
                f"{first.meta.get('source')} (shape {other.spatial_shape} vs {first.spatial_shape})"
            )
    if len(channels) == 1:
        array = first.array
    else:
        dtype = np.result_type(*(c.dtype for c in channels))
        array = np.concatenate([c.array.astype(dtype, copy=False) for c in channels])
    return Volume(array, first.affine, {**first.meta, "case": case_id})
