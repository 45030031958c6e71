"""Format dispatch: :func:`read_volume` and :func:`write_volume` for every supported format.

Formats are chosen by path: a folder is a DICOM series or study; ``.nii``/``.nii.gz`` is
NIfTI; ``.nrrd``/``.nhdr``/``.mha``/``.mhd`` go through SimpleITK; any other file whose
content starts like DICOM (``DICM`` at byte 128) or ends in ``.dcm`` is one DICOM file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medseg.core import Volume
from medseg.core.errors import InputError, OutputError, ReadError
from medseg.io import dicom_volume
from medseg.io.dicom_regularize import Interpolation
from medseg.io.dicom_series import is_dicom_file
from medseg.io.nifti import is_nifti_path, read_nifti, write_nifti
from medseg.io.sitk_io import read_sitk, sitk_format, write_sitk

SUPPORTED = ".nii, .nii.gz, .nrrd, .nhdr, .mha, .mhd, a DICOM file, or a DICOM folder"


def read_volume(
    path: str | Path,
    series: str | None = None,
    *,
    allow_nonfinite: bool = False,
    regularize: bool = False,
    interpolation: Interpolation = "linear",
) -> Volume:
    """Read an image file or DICOM folder into a :class:`Volume` (RAS affine, dtype kept).

    ``series`` selects one series of a DICOM folder by SeriesInstanceUID or by an
    unambiguous (exact, else substring) SeriesDescription match. NaN/Inf voxels raise
    :class:`ReadError` unless ``allow_nonfinite`` is true. ``regularize`` resamples a DICOM
    series with missing slices, non-uniform spacing or gantry tilt onto a regular grid
    (``interpolation`` "linear", or "nearest" for label/mask series) instead of refusing
    it; see :func:`medseg.io.dicom_volume.series_to_volume`. Other formats are always
    regular grids and ignore both.
    """
    path = Path(path)
    if not path.exists():
        raise ReadError("no such file or folder", path)
    if path.is_dir():
        volume = dicom_volume.read_dicom_folder(
            path, series, regularize=regularize, interpolation=interpolation
        )
    else:
        if series is not None:
            raise InputError("a series selector only applies to DICOM folders", path)
        volume = _read_file(path, regularize, interpolation)
    if not allow_nonfinite:
        check_finite(volume)
    return volume


def write_volume(volume: Volume, path: str | Path) -> None:
    """Write ``volume`` atomically; the format follows the file name (NIfTI, NRRD, MHA)."""
    path = Path(path)
    if path.is_dir():
        raise OutputError("output is a folder; give a file name such as out.nii.gz", path)
    if is_nifti_path(path):
        write_nifti(volume, path)
    elif sitk_format(path) is not None:
        write_sitk(volume, path)
    else:
        raise OutputError("unsupported output format (use .nii.gz, .nii, .nrrd or .mha)", path)


def check_finite(volume: Volume) -> None:
    """Raise :class:`ReadError` naming the source if a float volume has NaN or Inf voxels."""
    if volume.dtype.kind not in "fc":
        return
    bad = volume.array.size - int(np.count_nonzero(np.isfinite(volume.array)))
    if bad:
        raise ReadError(
            f"{bad} NaN/Inf voxel(s) of {volume.array.size}; pass allow_nonfinite=True to "
            "read them anyway",
            volume.meta.get("source"),
        )


def _read_file(path: Path, regularize: bool, interpolation: Interpolation) -> Volume:
    if path.stat().st_size == 0:
        raise ReadError("empty file (0 bytes)", path)
    _check_readable(path)
    if is_nifti_path(path):
        return read_nifti(path)
    if sitk_format(path) is not None:
        return read_sitk(path)
    if is_dicom_file(path):
        return dicom_volume.read_dicom_file(
            path, regularize=regularize, interpolation=interpolation
        )
    raise ReadError(f"unrecognised image format (supported: {SUPPORTED})", path)


def _check_readable(path: Path) -> None:
    """Raise ReadError saying so when ``path`` cannot be opened (readers hide the reason)."""
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ReadError(f"cannot open file ({exc.strerror or type(exc).__name__})", path) from exc
