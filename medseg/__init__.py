"""medseg: medical image segmentation with exact geometry, from DICOM to DICOM-SEG."""

from medseg.core import Volume
from medseg.core.errors import InputError, MedsegError

__version__ = "0.1.0"

__all__ = ["InputError", "MedsegError", "Volume", "__version__"]
