"""Write a label map as an RT Structure Set (RTSTRUCT) on its source DICOM series.

highdicom has no RT module, so the object is built with pydicom. Contours are traced per
slice and label (:func:`medseg.io.contours.trace_outlines`: marching squares, holes and
islands as separate closed polygons, combined by the even-odd rule as readers do) in the
label map's voxel indices, then mapped to patient coordinates through the volume's affine
(RAS → LPS here, once), so oblique and non-axial series come out right. Each contour names
the source slice image it lies on; the ROIs are named after the labels and coloured by
``DEFAULT_COLORS`` (or the colours given). A label value with no voxel is still an ROI,
without contours. The file uses Implicit VR Little Endian (every DICOM application reads
it, and its 32-bit lengths fit contours of any size).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import BaseTag, Tag
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ImplicitVRLittleEndian

import medseg
from medseg.core import Volume, geometry
from medseg.core.atomic import atomic_path
from medseg.io.contours import trace_outlines
from medseg.io.dicom_derived import (
    TYPE2_COPIED,
    check_named,
    check_source_grid,
    copy_deidentification,
    derived_series_number,
    source_headers,
)
from medseg.io.dicom_series import RTSTRUCT_SOP_CLASS

Color = tuple[int, int, int]
#: ROI display colours by label value (1 -> first, cycling); distinct on CT and MR greys.
DEFAULT_COLORS: tuple[Color, ...] = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
)  # fmt: skip
STUDY_COMPONENT_SOP_CLASS = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management, as TPSs use
CONTOUR_DATA = Tag("ContourData")
COPIED = (*TYPE2_COPIED, "SpecificCharacterSet", "ReferringPhysicianName",
          "StudyInstanceUID", "StudyDescription")


def write_rtstruct(
    labels: Volume,
    path: str | Path,
    label_names: Mapping[int, str],
    *,
    colors: Mapping[int, Color] | None = None,
    series_description: str = "medseg contours",
    algorithm_name: str = "medseg",
) -> None:
    """Write the label map ``labels`` as an RTSTRUCT referencing its source series.

    ``labels`` lies on its source series' grid (``meta["dicom_files"]`` in ``k`` order, as
    :func:`medseg.io.read_volume` sets it). ``label_names``: label value -> ROI name (0, the
    background, is not an ROI). Written atomically.
    """
    sources = source_headers(labels, "RTSTRUCT")
    check_source_grid(labels, sources, "RTSTRUCT")
    values = sorted(v for v in label_names if v != 0)
    check_named(labels, values, path)
    ds = _header(sources, series_description, algorithm_name)
    to_lps = geometry.ras_to_lps(labels.affine)
    rois, contours, observations = [], [], []
    for number, value in enumerate(values, start=1):
        rois.append(_roi(number, str(label_names[value]), sources[0], algorithm_name))
        color = (colors or {}).get(value) or DEFAULT_COLORS[(value - 1) % len(DEFAULT_COLORS)]
        contours.append(_roi_contours(number, color, labels.array[0] == value, to_lps, sources))
        observations.append(_observation(number))
    ds.StructureSetROISequence = DicomSequence(rois)
    ds.ROIContourSequence = DicomSequence(contours)
    ds.RTROIObservationsSequence = DicomSequence(observations)
    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)


def slice_contours(mask: np.ndarray, to_lps: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """``(k, points (n, 3) LPS mm)`` of every outline of a boolean (I, J, K) mask."""
    out = []
    for k in np.flatnonzero(mask.any(axis=(0, 1))):
        for outline in trace_outlines(mask[:, :, k]):
            ijk = np.column_stack([outline, np.full(len(outline), float(k))])
            out.append((int(k), geometry.apply_affine(to_lps, ijk)))
    return out


def _header(sources: Sequence[Dataset], description: str, algorithm: str) -> Dataset:
    """Patient, study, RT series, equipment, frame of reference and structure set modules."""
    first = sources[0]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = RTSTRUCT_SOP_CLASS
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = hd.UID()
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SOPClassUID = RTSTRUCT_SOP_CLASS
    for keyword in COPIED:
        if keyword in first:
            setattr(ds, keyword, first.data_element(keyword).value)
    now = datetime.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    ds.ReferringPhysicianName = ds.get("ReferringPhysicianName", "")
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = hd.UID()
    ds.SeriesNumber = derived_series_number(first)
    ds.SeriesDescription = description
    ds.OperatorsName = ""
    ds.Manufacturer, ds.ManufacturerModelName = "medseg", algorithm
    ds.SoftwareVersions = medseg.__version__
    ds.FrameOfReferenceUID = first.FrameOfReferenceUID
    ds.PositionReferenceIndicator = first.get("PositionReferenceIndicator", "")
    ds.StructureSetLabel = algorithm[:16]
    ds.StructureSetName = description[:64]
    ds.StructureSetDate, ds.StructureSetTime = date, time
    ds.InstanceNumber = 1
    copy_deidentification(ds, first)
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([_frame_of_reference(sources)])
    return ds


def _frame_of_reference(sources: Sequence[Dataset]) -> Dataset:
    """The referenced frame of reference, study, series and every slice image."""
    series = Dataset()
    series.SeriesInstanceUID = sources[0].SeriesInstanceUID
    series.ContourImageSequence = DicomSequence([_image_ref(s) for s in sources])
    study = Dataset()
    study.ReferencedSOPClassUID = STUDY_COMPONENT_SOP_CLASS
    study.ReferencedSOPInstanceUID = sources[0].StudyInstanceUID
    study.RTReferencedSeriesSequence = DicomSequence([series])
    frame = Dataset()
    frame.FrameOfReferenceUID = sources[0].FrameOfReferenceUID
    frame.RTReferencedStudySequence = DicomSequence([study])
    return frame


def _roi(number: int, name: str, source: Dataset, algorithm: str) -> Dataset:
    roi = Dataset()
    roi.ROINumber = number
    roi.ReferencedFrameOfReferenceUID = source.FrameOfReferenceUID
    roi.ROIName = name[:64]
    roi.ROIGenerationAlgorithm = "AUTOMATIC"
    roi.ROIGenerationDescription = f"{algorithm} {medseg.__version__}"[:64]
    return roi


def _roi_contours(number: int, color: Color, mask: np.ndarray, to_lps: np.ndarray,
                  sources: Sequence[Dataset]) -> Dataset:
    item = Dataset()
    item.ROIDisplayColor = [int(c) for c in color]
    item.ReferencedROINumber = number
    contours = []
    for n, (k, points) in enumerate(slice_contours(mask, to_lps), start=1):
        contour = Dataset()
        contour.ContourImageSequence = DicomSequence([_image_ref(sources[k])])
        contour.ContourGeometricType = "CLOSED_PLANAR"
        contour.NumberOfContourPoints = len(points)
        contour.ContourNumber = n
        contour[CONTOUR_DATA] = _decimal_strings(CONTOUR_DATA, points.ravel())
        contours.append(contour)
    if contours:
        item.ContourSequence = DicomSequence(contours)
    return item


def _observation(number: int) -> Dataset:
    item = Dataset()
    item.ObservationNumber = number
    item.ReferencedROINumber = number
    item.RTROIInterpretedType = ""
    item.ROIInterpreter = ""
    return item


def _image_ref(source: Dataset) -> Dataset:
    ref = Dataset()
    ref.ReferencedSOPClassUID = source.SOPClassUID
    ref.ReferencedSOPInstanceUID = source.SOPInstanceUID
    return ref


def _decimal_strings(tag: BaseTag, values: np.ndarray) -> DataElement:
    """A DS element of ``values`` to 0.1 µm (at most 16 characters each), kept as one
    string: pydicom's per-value conversion and validation took seconds for the ~10^5
    numbers of a CT's contours (pydicom writes the string as it is)."""
    text = "\\".join(_ds(v) for v in values.tolist())
    return DataElement(tag, "DS", text, already_converted=True)


def _ds(value: float) -> str:
    text = f"{value:.4f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text
