"""Builders of the bad-input corpus, part 1: single image files and DICOM folders (part 2,
datasets, pipeline files, checkpoints and outputs, is :mod:`tests.reliability.corpus_data`).
Each builder writes one kind of broken input under a folder.

A builder takes an empty folder and returns a :class:`Built`: the path handed to medseg,
the text the error message must contain (a file name, series UID or case id) and, for
dataset kinds, the case expected to be excluded. Nothing large is written: volumes are a
few thousand voxels, so the whole corpus builds in about a second.
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.tag import Tag
from pydicom.uid import HTJ2KLossless, JPEG2000Lossless

from medseg.core import Volume
from medseg.io import write_volume
from tests.conftest import make_affine, sphere_label
from tests.io import dicom_factory

SHAPE = (8, 9, 10)
AFFINE = make_affine((1.0, 1.2, 1.5), "LPS", (5.0, 0.0, 10.0), (3.0, -2.0, 1.0))
SERIES_UID = "1.2.826.0.1.3680043.8.498.4242"
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"


@dataclass(frozen=True)
class Built:
    """What a builder made: the input to hand over and what the message must name."""

    path: Path
    names: str
    case: str | None = None  # dataset kinds: the case that must be excluded (or kept)


# --- small valid inputs ----------------------------------------------------------------------


def image_array(seed: int = 0) -> np.ndarray:
    """A float32 (I, J, K) image with a bright ball (so it is not constant)."""
    rng = np.random.default_rng(seed)
    return (rng.normal(100, 10, SHAPE) + 50 * sphere_label(SHAPE)).astype(np.float32)


def write_nifti(path: Path, array: np.ndarray, affine: np.ndarray = AFFINE,
                sform_code: int = 1) -> Path:
    """A NIfTI-1 file written with nibabel directly (so broken affines stay broken)."""
    img = nib.Nifti1Image(array, None)
    img.set_qform(None, code=0)
    img.set_sform(affine, code=sform_code)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, path)
    return path


def good_nifti(folder: Path, name: str = "image.nii.gz") -> Path:
    """A valid single-channel NIfTI image."""
    path = folder / name
    write_volume(Volume(image_array()[None], AFFINE), path)
    return path


def series_datasets(n: int = 6, uid: str = SERIES_UID, description: str = "corpus") -> list:
    """An oblique int16 MR series of ``n`` slices (pydicom datasets, not yet written)."""
    array = np.arange(6 * 5 * n, dtype=np.int16).reshape(6, 5, n)
    return dicom_factory.series_datasets(array, AFFINE, series_uid=uid, description=description)


def _slice_normal(ds: Dataset) -> np.ndarray:
    iop = np.asarray(ds.ImageOrientationPatient, dtype=float)
    return np.cross(iop[:3], iop[3:])


def _shift(ds: Dataset, offset: np.ndarray) -> None:
    position = np.asarray(ds.ImagePositionPatient, dtype=float) + offset
    ds.ImagePositionPatient = [f"{v:.6f}" for v in position]


# --- single files ----------------------------------------------------------------------------


def zero_byte_nifti(root: Path) -> Built:
    path = root / "empty.nii.gz"
    path.write_bytes(b"")
    return Built(path, path.name)


def random_bytes_nifti(root: Path) -> Built:
    path = root / "noise.nii.gz"
    path.write_bytes(np.random.default_rng(1).bytes(4096))
    return Built(path, path.name)


def random_bytes_gzip_nifti(root: Path) -> Built:
    """Valid gzip wrapping random bytes: gzip is fine, the NIfTI header inside is not."""
    path = root / "gzipped_noise.nii.gz"
    path.write_bytes(gzip.compress(np.random.default_rng(2).bytes(4096)))
    return Built(path, path.name)


def truncated_gzip(root: Path) -> Built:
    path = good_nifti(root, "truncated.nii.gz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return Built(path, path.name)


def truncated_nifti_data(root: Path) -> Built:
    """An uncompressed .nii whose voxel data stop half-way."""
    path = write_nifti(root / "short.nii", image_array())
    data = path.read_bytes()
    path.write_bytes(data[: 352 + (len(data) - 352) // 2])
    return Built(path, path.name)


def zero_affine_nifti(root: Path) -> Built:
    return Built(write_nifti(root / "zero_affine.nii.gz", image_array(), np.zeros((4, 4))),
                 "zero_affine.nii.gz")


def singular_affine_nifti(root: Path) -> Built:
    affine = AFFINE.copy()
    affine[:3, 2] = affine[:3, 0]  # k runs along i: collinear axes
    return Built(write_nifti(root / "singular.nii.gz", image_array(), affine), "singular.nii.gz")


def nan_voxels_nifti(root: Path) -> Built:
    array = image_array()
    array[2, 3, 4] = np.nan
    array[1, 1, 1] = np.inf
    return Built(write_nifti(root / "nan.nii.gz", array), "nan.nii.gz")


def five_d_nifti(root: Path) -> Built:
    """(I, J, K, 2, 3): neither 3D nor channels-last 4D."""
    array = np.zeros((*SHAPE, 2, 3), np.float32)
    return Built(write_nifti(root / "five_d.nii.gz", array), "five_d.nii.gz")


def _patched_header(root: Path, name: str, offset: int, value: bytes) -> Built:
    """A valid uncompressed NIfTI with ``value`` written over its header at ``offset``."""
    path = write_nifti(root / name, image_array())
    data = bytearray(path.read_bytes())
    data[offset:offset + len(value)] = value
    path.write_bytes(bytes(data))
    return Built(path, name)


def unknown_datatype_nifti(root: Path) -> Built:
    return _patched_header(root, "datatype0.nii", 70, struct.pack("<h", 0))


def absurd_dims_nifti(root: Path) -> Built:
    """dim = [3, 30000, 30000, 30000]: 108 TB of float32 announced by a 2 kB file."""
    return _patched_header(root, "huge.nii", 40, struct.pack("<4h", 3, 30000, 30000, 30000))


def unknown_format(root: Path) -> Built:
    path = root / "scan.xyz"
    path.write_bytes(b"not an image" * 50)
    return Built(path, path.name)


def missing_path(root: Path) -> Built:
    path = root / "does" / "not" / "exist.nii.gz"
    return Built(path, str(path))


def unreadable_nifti(root: Path) -> Built:
    """A valid file the tests make unreadable (chmod 000, or a patched ``open`` as root)."""
    path = good_nifti(root, "locked.nii.gz")
    return Built(path, path.name)


def unreadable_dicom(root: Path) -> Built:
    paths = dicom_factory.save_series(series_datasets(), root / "series")
    return Built(root / "series", paths[2].name)


# --- DICOM -----------------------------------------------------------------------------------


def dicom_without_pixel_data(root: Path) -> Built:
    items = series_datasets(1)
    del items[0].PixelData
    (path,) = dicom_factory.save_series(items, root)
    return Built(path, path.name)


def dicom_malformed_value(root: Path) -> Built:
    """NumberOfFrames holding two values ("1\\2") in one slice of a series."""
    items = series_datasets()
    tag = Tag("NumberOfFrames")
    items[2]._dict[tag] = RawDataElement(tag, "IS", 4, b"1\\2 ", 0, False, True)
    paths = dicom_factory.save_series(items, root / "series")
    return Built(root / "series", paths[2].name)


def dicom_zero_pixel_spacing(root: Path) -> Built:
    items = series_datasets()
    for ds in items:
        ds.PixelSpacing = ["0", "0"]
    dicom_factory.save_series(items, root / "series")
    return Built(root / "series", SERIES_UID)


def dicom_series_missing_slice(root: Path) -> Built:
    items = series_datasets()
    del items[3]
    dicom_factory.save_series(items, root / "series")
    return Built(root / "series", SERIES_UID)


def dicom_series_duplicate_positions(root: Path) -> Built:
    items = series_datasets()
    items[4].ImagePositionPatient = items[2].ImagePositionPatient
    dicom_factory.save_series(items, root / "series")
    return Built(root / "series", SERIES_UID)


def dicom_two_series_interleaved(root: Path) -> Built:
    """Two series whose files alternate in one folder (``IM0000`` = A, ``IM0001`` = B...)."""
    a = series_datasets(4, uid=SERIES_UID, description="first")
    b = series_datasets(4, uid=SERIES_UID + ".2", description="second")
    items = [ds for pair in zip(a, b, strict=True) for ds in pair]
    dicom_factory.save_series(items, root / "series")
    return Built(root / "series", SERIES_UID)


def dicom_series_mixed_sizes(root: Path) -> Built:
    items = series_datasets()
    dicom_factory.set_pixels(items[2], np.zeros((7, 5), np.int16))
    dicom_factory.save_series(items, root / "series")
    return Built(root / "series", SERIES_UID)


def dicom_series_non_uniform_spacing(root: Path) -> Built:
    items = series_datasets()
    normal = _slice_normal(items[0])
    for k, ds in enumerate(items):
        _shift(ds, normal * 0.4 * k * k)
    dicom_factory.save_series(items, root / "series")
    return Built(root / "series", SERIES_UID)


def dicom_series_gantry_tilt(root: Path) -> Built:
    items = series_datasets()
    column = np.asarray(items[0].ImageOrientationPatient[3:], dtype=float)
    for k, ds in enumerate(items):
        _shift(ds, column * 0.5 * k)
    dicom_factory.save_series(items, root / "series")
    return Built(root / "series", SERIES_UID)


def _compressed_series(root: Path, syntax: str) -> Built:
    items = series_datasets()
    for ds in items:
        ds.file_meta.TransferSyntaxUID = syntax
        ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\x00" * 60])
    dicom_factory.save_series(items, root / "series")
    return Built(root / "series", "IM000")


def dicom_compressed_no_decoder(root: Path) -> Built:
    """HTJ2K pixel data: no decoder plugin for it is installed (pylibjpeg-openjpeg is not)."""
    return _compressed_series(root, HTJ2KLossless)


def dicom_compressed_corrupt(root: Path) -> Built:
    """JPEG 2000 pixel data that the installed decoders cannot make sense of."""
    return _compressed_series(root, JPEG2000Lossless)


def dicom_truncated_pixel_data(root: Path) -> Built:
    paths = dicom_factory.save_series(series_datasets(), root / "series")
    paths[4].write_bytes(paths[4].read_bytes()[:-20])
    return Built(root / "series", paths[4].name)


def dicom_zero_byte_member(root: Path) -> Built:
    dicom_factory.save_series(series_datasets(), root / "series")
    (root / "series" / "IM9999.dcm").write_bytes(b"")
    return Built(root / "series", "IM9999.dcm")


def dicomdir_only(root: Path) -> Built:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = DICOMDIR_SOP_CLASS
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    ds.FileSetID = "SET"
    ds.DirectoryRecordSequence = []
    folder = root / "cd"
    folder.mkdir()
    ds.save_as(folder / "DICOMDIR", enforce_file_format=True)
    return Built(folder, str(folder))


def folder_without_images(root: Path) -> Built:
    folder = root / "notes"
    folder.mkdir()
    (folder / "readme.txt").write_text("no images here")
    (folder / "scan.bin").write_bytes(b"\x00" * 500)
    return Built(folder, str(folder))


def empty_folder(root: Path) -> Built:
    folder = root / "nothing"
    folder.mkdir()
    return Built(folder, str(folder))
