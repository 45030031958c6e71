"""NIfTI (.nii / .nii.gz) reading and writing via nibabel.

The affine is nibabel's ``img.affine`` (sform when its code is set, else qform, else the
fall-back), which already is voxel -> RAS: NIfTI needs no LPS conversion. Data keep their
stored type (labels stay integer) unless the header's ``scl_slope``/``scl_inter`` scale
them, in which case nibabel returns floats. A 4D file's last axis becomes the channel axis.
"""

from __future__ import annotations

import gzip
import logging
import math
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import HeaderDataError

from medseg.core import Volume, geometry
from medseg.core.atomic import atomic_path
from medseg.core.errors import GeometryError, OutputError, ReadError

log = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii", ".nii.gz")
NIFTI_XFORM_SCANNER_ANAT = 1

# dtypes NIfTI-1 cannot store, and what they are written as
_WRITE_DTYPE = {np.dtype(bool): np.dtype(np.uint8), np.dtype(np.float16): np.dtype(np.float32)}

_CORRUPT = (ImageFileError, HeaderDataError, EOFError, OSError, ValueError, OverflowError,
            zlib.error, gzip.BadGzipFile)
MAX_DEFLATE_RATIO = 1032  # the most a gzip (deflate) stream can expand


def is_nifti_path(path: str | Path) -> bool:
    """True when the file name ends in .nii or .nii.gz."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def read_nifti(path: str | Path) -> Volume:
    """Read a NIfTI file into a channel-first :class:`Volume` (RAS affine, stored dtype)."""
    path = Path(path)
    try:
        img = nib.load(path)
        if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
            raise ReadError(f"not a NIfTI image ({type(img).__name__})", path)
        _check_data_size(img, path)
        data = np.asanyarray(img.dataobj)
    except ReadError:
        raise
    except FileNotFoundError as exc:
        raise ReadError("file not found", path) from exc
    except _CORRUPT as exc:
        raise ReadError(f"cannot read NIfTI file ({_describe(exc)})", path) from exc
    array = _channel_first(data, path)
    if int(img.header["sform_code"]) == 0 and int(img.header["qform_code"]) == 0:
        log.warning("%s: neither sform nor qform is set; using the voxel-size-only affine", path)
    try:
        affine = geometry.check_affine(img.affine, "NIfTI affine")
    except GeometryError as exc:
        raise GeometryError(str(exc), path) from exc
    return Volume(array, affine, {"source": str(path), "format": "nifti"})


def write_nifti(volume: Volume, path: str | Path) -> None:
    """Write ``volume`` atomically as NIfTI-1 with sform and qform both set to its affine.

    One channel is written as a 3D image; several channels as 4D with channels last.
    bool is stored as uint8 and float16 as float32; every other dtype is kept.
    """
    path = Path(path)
    if not is_nifti_path(path):
        raise OutputError("NIfTI output must end in .nii or .nii.gz", path)
    array = volume.array[0] if volume.n_channels == 1 else np.moveaxis(volume.array, 0, -1)
    dtype = _WRITE_DTYPE.get(array.dtype, array.dtype)
    img = nib.Nifti1Image(np.asarray(array, dtype=dtype), volume.affine, dtype=dtype)
    img.set_sform(volume.affine, code=NIFTI_XFORM_SCANNER_ANAT)
    img.set_qform(volume.affine, code=NIFTI_XFORM_SCANNER_ANAT)
    img.header.set_xyzt_units(xyz="mm")
    with atomic_path(path) as tmp:
        nib.save(img, tmp)


def _check_data_size(img: nib.Nifti1Image, path: Path) -> None:
    """Refuse a header whose dims need more voxel bytes than the file can hold.

    Checked before reading, so a corrupt ``dim`` cannot make medseg allocate terabytes.
    """
    shape = tuple(int(d) for d in img.header.get_data_shape())
    if not shape or min(shape) < 1:
        raise ReadError(f"invalid NIfTI dimensions {shape}", path)
    dtype = img.header.get_data_dtype()
    needed = math.prod(shape) * dtype.itemsize
    size = path.stat().st_size
    if path.name.lower().endswith(".gz"):
        available = size * MAX_DEFLATE_RATIO
    else:
        available = size - int(img.header.get_data_offset())
    if needed > available:
        raise ReadError(
            f"header dimensions {shape} of {dtype} need {needed} bytes of voxel data, more "
            f"than the file can hold ({max(available, 0)} bytes); corrupt or truncated", path
        )


def _channel_first(data: np.ndarray, path: Path) -> np.ndarray:
    """(I,J,K) -> (1,I,J,K); (I,J,K,T) -> (T,I,J,K); (I,J,K,1,C) -> (C,I,J,K); (I,J) -> K=1."""
    if data.ndim == 2:
        return data[None, :, :, None]
    if data.ndim == 3:
        return data[None]
    if data.ndim == 5 and data.shape[3] == 1:
        data = data[:, :, :, 0, :]
    if data.ndim == 4:
        return np.ascontiguousarray(np.moveaxis(data, -1, 0))
    raise ReadError(f"unsupported NIfTI data shape {data.shape} (expected 2D, 3D or 4D)", path)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
