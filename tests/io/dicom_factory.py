"""Synthetic DICOM series for tests, written with pydicom from a known array and RAS affine.

``series_datasets`` builds one single-frame dataset per slice (array axis k); tests can
edit them (to break the geometry on purpose) before ``save_series`` writes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from medseg.core import geometry

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"


def lps_geometry(affine_ras: np.ndarray) -> dict[str, np.ndarray]:
    """Row/column cosines, pixel spacing and slice vector of a RAS affine, in LPS."""
    lps = geometry.ras_to_lps(affine_ras)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    row, col = lps[:3, 0] / spacing[0], lps[:3, 1] / spacing[1]
    return {
        "row": row,
        "col": col,
        "pixel_spacing": np.array([spacing[1], spacing[0]]),  # (between rows, between columns)
        "slice_vector": lps[:3, 2],
        "origin": lps[:3, 3],
    }


def base_dataset(
    sop_class: str, series_uid: str, description: str, modality: str = "MR"
) -> Dataset:
    """A dataset with file meta, patient/study/series identity and no pixels yet."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientID = "SYNTH-001"
    ds.PatientName = "Synthetic^Patient"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.2"
    ds.SeriesDescription = description
    ds.SeriesNumber = 1
    ds.Modality = modality
    return ds


def set_pixels(ds: Dataset, planes: np.ndarray) -> None:
    """Store (rows, columns) or (frames, rows, columns) int16/uint16 pixels uncompressed."""
    planes = np.ascontiguousarray(planes)
    ds.Rows, ds.Columns = planes.shape[-2:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if planes.dtype == np.int16 else 0
    ds.PixelData = planes.astype(planes.dtype.newbyteorder("<")).tobytes()


def series_datasets(
    array: np.ndarray,
    affine: np.ndarray,
    *,
    description: str = "synthetic",
    series_uid: str | None = None,
    slope: float | None = None,
    intercept: float | None = None,
) -> list[Dataset]:
    """One MR dataset per k slice of an (I, J, K) int16/uint16 array placed by ``affine``."""
    geo = lps_geometry(affine)
    series_uid = series_uid or generate_uid()
    datasets = []
    for k in range(array.shape[2]):
        ds = base_dataset(MR_IMAGE_STORAGE, series_uid, description)
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = _ds_list(geo["origin"] + k * geo["slice_vector"])
        ds.ImageOrientationPatient = _ds_list(np.concatenate([geo["row"], geo["col"]]))
        ds.PixelSpacing = _ds_list(geo["pixel_spacing"])
        ds.SliceThickness = _ds_number(float(np.linalg.norm(geo["slice_vector"])))
        if slope is not None:
            ds.RescaleSlope = _ds_number(slope)
        if intercept is not None:
            ds.RescaleIntercept = _ds_number(intercept)
        set_pixels(ds, array[:, :, k].T)  # rows run along j, columns along i
        datasets.append(ds)
    return datasets


def move_slice(ds: Dataset, offset_lps: np.ndarray) -> None:
    """Add ``offset_lps`` (mm) to a dataset's ImagePositionPatient (to break a grid)."""
    position = np.asarray(ds.ImagePositionPatient, dtype=np.float64) + offset_lps
    ds.ImagePositionPatient = _ds_list(position)


def slice_normal(ds: Dataset) -> np.ndarray:
    """Unit slice normal (LPS) of a dataset: row cosines x column cosines."""
    iop = np.asarray(ds.ImageOrientationPatient, dtype=np.float64)
    return np.cross(iop[:3], iop[3:])


def save_series(
    datasets: Sequence[Dataset], folder: Path, naming: str = "index", seed: int = 0
) -> list[Path]:
    """Write datasets as ``<name>.dcm`` files; ``naming`` is index, reversed or shuffled."""
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"IM{k:04d}.dcm" for k in range(len(datasets))]
    if naming == "reversed":
        names = names[::-1]
    elif naming == "shuffled":
        names = list(np.random.default_rng(seed).permutation(names))
    elif naming != "index":
        raise ValueError(naming)
    paths = []
    for ds, name in zip(datasets, names, strict=True):
        path = folder / name
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_series(
    folder: Path, array: np.ndarray, affine: np.ndarray, naming: str = "index", **kwargs
) -> list[Path]:
    """``save_series(series_datasets(array, affine, **kwargs), folder, naming)``."""
    return save_series(series_datasets(array, affine, **kwargs), folder, naming)


def write_enhanced(path: Path, array: np.ndarray, affine: np.ndarray) -> Path:
    """Write an (I, J, K) array as one enhanced multi-frame MR file (frames in k order)."""
    geo = lps_geometry(affine)
    ds = base_dataset(ENHANCED_MR_IMAGE_STORAGE, generate_uid(), "enhanced")
    ds.NumberOfFrames = array.shape[2]
    measures, orientation = Dataset(), Dataset()
    measures.PixelSpacing = _ds_list(geo["pixel_spacing"])
    measures.SliceThickness = _ds_number(float(np.linalg.norm(geo["slice_vector"])))
    orientation.ImageOrientationPatient = _ds_list(np.concatenate([geo["row"], geo["col"]]))
    shared = Dataset()
    shared.PixelMeasuresSequence = DicomSequence([measures])
    shared.PlaneOrientationSequence = DicomSequence([orientation])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    per_frame = []
    for k in range(array.shape[2]):
        position, item = Dataset(), Dataset()
        position.ImagePositionPatient = _ds_list(geo["origin"] + k * geo["slice_vector"])
        item.PlanePositionSequence = DicomSequence([position])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(per_frame)
    set_pixels(ds, np.transpose(array, (2, 1, 0)))
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _ds_number(value: float) -> str:
    return f"{value:.10g}"[:16]


def _ds_list(values: np.ndarray) -> list[str]:
    """Decimal strings (max 16 characters each, as the DS VR requires)."""
    return [_ds_number(float(v)) for v in values]
