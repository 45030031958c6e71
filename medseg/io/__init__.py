"""Image I/O: the only place where files become :class:`~medseg.core.Volume` objects and back.

NIfTI via nibabel, DICOM series via pydicom, NRRD/MetaImage via SimpleITK. Every reader
returns a channel-first array with a voxel -> RAS affine; LPS (DICOM/ITK) is converted to
RAS here, exactly once. See docs/geometry.md.
"""

from medseg.io.dicom_series import SeriesInfo, is_dicom_file, list_series
from medseg.io.read_write import check_finite, read_volume, write_volume

__all__ = [
    "SeriesInfo",
    "check_finite",
    "is_dicom_file",
    "list_series",
    "read_volume",
    "write_volume",
]
