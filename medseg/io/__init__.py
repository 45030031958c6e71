"""Image I/O: the only place where files become :class:`~medseg.core.Volume` objects and back.

NIfTI via nibabel, DICOM series via pydicom, NRRD/MetaImage via SimpleITK; annotation
files (RTSTRUCT, DICOM-SEG) onto their image series' grid and back. Every reader
returns a channel-first array with a voxel -> RAS affine; LPS (DICOM/ITK) is converted to
RAS here, exactly once. See docs/geometry.md.
"""

from medseg.io.annotation import (
    Annotation,
    annotation_format,
    read_annotation,
    write_annotation,
)
from medseg.io.dicom_series import SeriesInfo, is_dicom_file, list_series
from medseg.io.read_write import check_finite, read_volume, write_volume
from medseg.io.structures import Structure

__all__ = [
    "Annotation",
    "SeriesInfo",
    "Structure",
    "annotation_format",
    "check_finite",
    "is_dicom_file",
    "list_series",
    "read_annotation",
    "read_volume",
    "write_annotation",
    "write_volume",
]
