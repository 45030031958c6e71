"""DICOM-SEG output for label maps predicted on a DICOM series' grid (reading:
:mod:`medseg.io.dicom_seg_read`).

The label volume must lie on the grid of its source series (:mod:`medseg.io.dicom_derived`).
Each source slice becomes one frame of a binary segmentation (highdicom), segments are
named after the dataset's labels and reference the source SOP instances.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.sr.codedict import codes

import medseg
from medseg.core import Volume
from medseg.core.atomic import atomic_path
from medseg.io.dicom_derived import (
    check_named,
    check_source_grid,
    copy_deidentification,
    derived_series_number,
    source_headers,
)


def write_dicom_seg(
    labels: Volume,
    path: str | Path,
    label_names: Mapping[int, str],
    *,
    series_description: str = "medseg segmentation",
    algorithm_name: str = "medseg",
) -> None:
    """Write the label map ``labels`` as a DICOM-SEG referencing its source series.

    ``labels.meta["dicom_files"]`` lists the source files in array-``k`` order (as set by
    :func:`medseg.io.read_volume`); their headers are re-read. ``label_names`` maps label
    values to segment names (0 = background is not a segment). Written atomically.
    """
    sources = source_headers(labels, "DICOM-SEG")
    check_source_grid(labels, sources, "DICOM-SEG")
    values = sorted(v for v in label_names if v != 0)
    check_named(labels, values, path)
    frames = _segment_frames(labels, values)
    descriptions = _descriptions(values, label_names, algorithm_name)
    with warnings.catch_warnings():  # the source headers' name style is not ours to fix
        warnings.filterwarnings("ignore", message=".*intended person name", category=UserWarning)
        seg = hd.seg.Segmentation(
            source_images=sources, pixel_array=frames,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions, series_instance_uid=hd.UID(),
            series_number=derived_series_number(sources[0]), sop_instance_uid=hd.UID(),
            instance_number=1, manufacturer="medseg", manufacturer_model_name=algorithm_name,
            software_versions=medseg.__version__, device_serial_number="0",
            series_description=series_description, omit_empty_frames=False,
        )
    copy_deidentification(seg, sources[0])
    with atomic_path(path) as tmp:
        seg.save_as(tmp)


def _segment_frames(labels: Volume, values: Sequence[int]) -> np.ndarray:
    """(slices, rows, columns) segment numbers 1..N for label values ``values``."""
    segment_of = np.zeros(max([*values, int(labels.array.max()), 0]) + 1, dtype=np.uint8)
    segment_of[list(values)] = np.arange(1, len(values) + 1)
    return np.ascontiguousarray(segment_of[labels.array[0]].transpose(2, 1, 0))


def _descriptions(
    values: Sequence[int], label_names: Mapping[int, str], algorithm_name: str
) -> list[hd.seg.SegmentDescription]:
    """One automatic segment per label value, named after the dataset label."""
    algorithm = hd.AlgorithmIdentificationSequence(
        name=algorithm_name, version=medseg.__version__,
        family=codes.cid7162.ArtificialIntelligence,
    )
    return [
        hd.seg.SegmentDescription(
            segment_number=n, segment_label=str(label_names[v]),
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=codes.SCT.Tissue,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            tracking_id=f"label {v}", tracking_uid=hd.UID(),
        )
        for n, v in enumerate(values, start=1)
    ]
