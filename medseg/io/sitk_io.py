"""NRRD (.nrrd/.nhdr) and MetaImage (.mha/.mhd) reading and writing via SimpleITK.

ITK works in LPS: its (spacing, origin, direction) is turned into a 4x4 LPS affine and
converted to RAS here, once. ITK's index order (x, y, z) is the array order (i, j, k), so
``GetArrayFromImage``'s (z, y, x[, c]) array is transposed to (c, i, j, k).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medseg.core import Volume, geometry
from medseg.core.atomic import atomic_path
from medseg.core.errors import GeometryError, OutputError, ReadError

if TYPE_CHECKING:  # imported when used: NIfTI-only commands start without SimpleITK
    import SimpleITK as sitk

SITK_FORMATS = {".nrrd": "nrrd", ".nhdr": "nrrd", ".mha": "mha", ".mhd": "mha"}
_HEADER_SUFFIXES = (".mhd", ".nhdr")  # detached headers: their data file is moved first
_WRITE_DTYPE = {np.dtype(bool): np.dtype(np.uint8), np.dtype(np.float16): np.dtype(np.float32)}


def sitk_format(path: str | Path) -> str | None:
    """'nrrd' or 'mha' for a path SimpleITK handles here, else None."""
    return SITK_FORMATS.get(Path(path).suffix.lower())


def sitk_affine_lps(image: sitk.Image) -> np.ndarray:
    """The LPS voxel-to-world affine of a 3D SimpleITK image."""
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    return geometry.compose_affine(direction, image.GetSpacing(), image.GetOrigin())


def sitk_to_volume(image: sitk.Image, meta: dict) -> Volume:
    """Convert a 2D/3D (scalar or vector) SimpleITK image into a RAS :class:`Volume`."""
    import SimpleITK as sitk

    if image.GetDimension() == 2:
        image = sitk.JoinSeries(image)
    if image.GetDimension() != 3:
        raise ReadError(
            f"{image.GetDimension()}D images are not supported; store channels as vector pixels",
            meta.get("source"),
        )
    array = sitk.GetArrayFromImage(image)  # (z, y, x) or (z, y, x, c)
    if array.ndim == 3:
        array = array[..., None]
    array = array.transpose(3, 2, 1, 0)  # a view: Fortran-ordered (c, i, j, k), as from nibabel
    try:
        affine = geometry.check_affine(geometry.lps_to_ras(sitk_affine_lps(image)), "image affine")
    except GeometryError as exc:
        raise GeometryError(str(exc), meta.get("source")) from exc
    return Volume(array, affine, meta)


def volume_to_sitk(volume: Volume) -> sitk.Image:
    """Convert a :class:`Volume` into a 3D SimpleITK image (vector pixels if C > 1)."""
    import SimpleITK as sitk

    dtype = _WRITE_DTYPE.get(volume.dtype, volume.dtype)
    array = np.asarray(volume.array, dtype=dtype).transpose(3, 2, 1, 0)  # (z, y, x, c)
    if volume.n_channels == 1:
        image = sitk.GetImageFromArray(np.ascontiguousarray(array[..., 0]))
    else:
        image = sitk.GetImageFromArray(np.ascontiguousarray(array), isVector=True)
    lps = geometry.ras_to_lps(volume.affine)
    image.SetSpacing(geometry.spacing(lps))
    image.SetOrigin(geometry.origin(lps))
    image.SetDirection(tuple(geometry.direction(lps).ravel()))
    return image


def read_sitk(path: str | Path) -> Volume:
    """Read a NRRD or MetaImage file into a RAS :class:`Volume` (stored dtype kept)."""
    import SimpleITK as sitk

    path = Path(path)
    fmt = sitk_format(path)
    if fmt is None:
        raise ReadError("not a NRRD or MetaImage file name", path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise ReadError(f"cannot read {fmt.upper()} file ({_first_line(exc)})", path) from exc
    return sitk_to_volume(image, {"source": str(path), "format": fmt})


def write_sitk(volume: Volume, path: str | Path) -> None:
    """Write ``volume`` as NRRD or MetaImage, atomically (detached data file first)."""
    import SimpleITK as sitk

    path = Path(path)
    if sitk_format(path) is None:
        raise OutputError("output must end in .nrrd, .nhdr, .mha or .mhd", path)
    image = volume_to_sitk(volume)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent) as tmp_dir:
        staged = Path(tmp_dir) / path.name
        try:
            sitk.WriteImage(image, str(staged))
        except RuntimeError as exc:
            raise OutputError(f"cannot write ({_first_line(exc)})", path) from exc
        # the header names its data file by base name, so files keep their names
        produced = sorted(Path(tmp_dir).iterdir(), key=lambda f: f.suffix in _HEADER_SUFFIXES)
        for file in produced:
            with atomic_path(path.parent / file.name) as final_tmp:
                os.replace(file, final_tmp)


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    useful = [ln for ln in lines if "Exception" not in ln and not ln.startswith("sitk::")]
    return (useful or lines or [type(exc).__name__])[-1][:200]
