"""Core layer: the Volume type, geometry math, errors and atomic writes. No image I/O."""

from medseg.core import geometry
from medseg.core.errors import (
    CheckpointError,
    ConfigError,
    DatasetError,
    GeometryError,
    InputError,
    MedsegError,
    OutputError,
    ReadError,
)
from medseg.core.volume import Volume

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DatasetError",
    "GeometryError",
    "InputError",
    "MedsegError",
    "OutputError",
    "ReadError",
    "Volume",
    "geometry",
]
