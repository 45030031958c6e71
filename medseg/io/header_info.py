"""Grid and voxel type of an image from its header alone (no pixel data read): what
``medseg predict --estimate`` and the RAM budget need before any work starts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from medseg.core import geometry
from medseg.core.errors import ReadError
from medseg.io import dicom_series
from medseg.io.dicom_geometry import slice_layout
from medseg.io.nifti import is_nifti_path
from medseg.io.sitk_io import sitk_format


@dataclass(frozen=True)
class ImageGeometry:
    """What reading an image will give: spatial shape, RAS affine, channels and the bytes
    per voxel and channel of the array ``read_volume`` returns."""

    shape: tuple[int, int, int]
    affine: np.ndarray
    n_channels: int
    itemsize: int

    @property
    def voxels(self) -> int:
        return int(np.prod(self.shape))


def read_geometry(path: str | Path, series: str | None = None, *,
                  regularize: bool = False) -> ImageGeometry:
    """The :class:`ImageGeometry` of an image file or DICOM folder (headers only)."""
    path = Path(path)
    if not path.exists():
        raise ReadError("no such file or folder", path)
    if path.is_dir() or not (is_nifti_path(path) or sitk_format(path)):
        return _dicom_geometry(path, series, regularize)
    if is_nifti_path(path):
        return _nifti_geometry(path)
    return _sitk_geometry(path)


def _nifti_geometry(path: Path) -> ImageGeometry:
    try:
        img = nib.load(path)
        shape = tuple(int(n) for n in img.shape)
        slope, inter = img.header.get_slope_inter()
        itemsize = img.get_data_dtype().itemsize
    except Exception as exc:  # nibabel raises many types for bad headers
        raise ReadError(f"cannot read NIfTI header ({type(exc).__name__}: {exc})", path) from exc
    scaled = (slope not in (None, 1.0) and np.isfinite(slope)) or (
        inter not in (None, 0.0) and np.isfinite(inter))
    spatial = (*shape, 1, 1, 1)[:3]
    channels = int(np.prod(shape[3:])) if len(shape) > 3 else 1
    return ImageGeometry(spatial, np.asarray(img.affine, dtype=np.float64), channels,
                         max(itemsize, 4) if scaled else itemsize)


def _sitk_geometry(path: Path) -> ImageGeometry:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise ReadError(f"cannot read image header ({exc})", path) from exc
    size = (*(int(n) for n in reader.GetSize()), 1, 1, 1)[:3]
    spacing = (*reader.GetSpacing(), 1.0, 1.0, 1.0)[:3]
    origin = (*reader.GetOrigin(), 0.0, 0.0, 0.0)[:3]
    n = reader.GetDimension()
    direction = np.eye(3)
    direction[:n, :n] = np.asarray(reader.GetDirection()).reshape(n, n)
    affine = geometry.lps_to_ras(geometry.compose_affine(direction, spacing, origin))
    itemsize = sitk.GetPixelIDValueAsString(reader.GetPixelID())
    nbytes = {"8": 1, "16": 2, "32": 4, "64": 8}
    width = next((b for k, b in nbytes.items() if k in itemsize), 4)
    return ImageGeometry(size, affine, int(reader.GetNumberOfComponents()), width)


def _dicom_geometry(path: Path, series: str | None, regularize: bool) -> ImageGeometry:
    with dicom_series.malformed_header(path):
        found = dicom_series.scan_folder(path) if path.is_dir() else dicom_series.scan_file(path)
        chosen = dicom_series.select_series(found, series, path)
        layout = slice_layout(chosen.frames, dicom_series.describe(chosen),
                              regularize=regularize)
    first = layout.frames[0]
    depth = len(layout.frames)
    rescaled = any(f.slope != 1.0 or f.intercept != 0.0 for f in layout.frames)
    if layout.regularization is not None:
        depth, rescaled = len(layout.regularization.target_depths), True
    bits = int(chosen.header.get("BitsAllocated", 16) or 16)
    itemsize = 4 if rescaled else max(bits // 8, 1)
    return ImageGeometry((first.columns, first.rows, depth), layout.affine, 1, itemsize)
