"""DICOM-SEGs written by highdicom itself (a third-party writer, not medseg's), for tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes

from medseg.core import Volume

LABELS = ("Liver", "Kidney", "Lesion", "Spleen")


def highdicom_seg(image: Volume, stack: np.ndarray, path: Path, kind: str = "BINARY",
                  labels: Sequence[str] = LABELS) -> Path:
    """A SEG of the (S, I, J, K) masks ``stack`` on the series of ``image``, written by
    highdicom itself (segment n+1 labelled ``labels[n]``), frames only where a segment is."""
    sources = [pydicom.dcmread(f) for f in image.meta["dicom_files"]]
    for source in sources:  # the patient/study attributes highdicom copies
        for keyword in ("PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
                        "StudyDate", "StudyTime", "ReferringPhysicianName"):
            setattr(source, keyword, source.get(keyword, ""))
    frames = np.moveaxis(stack, 0, -1).transpose(2, 1, 0, 3)  # (K, rows, columns, segments)
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=n, segment_label=label,
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=codes.SCT.Tissue,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
        for n, label in enumerate(labels[:stack.shape[0]], start=1)]
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=frames.astype(np.float32 if kind == "FRACTIONAL"
                                                         else np.uint8),
        segmentation_type=kind, segment_descriptions=descriptions,
        series_instance_uid=hd.UID(), series_number=9, sop_instance_uid=hd.UID(),
        instance_number=1, manufacturer="third party", manufacturer_model_name="x",
        software_versions="1", device_serial_number="1", omit_empty_frames=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(path)
    return path
