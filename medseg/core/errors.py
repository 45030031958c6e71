"""medseg's documented exception types and the CLI exit codes they map to.

Every error raised on purpose by medseg derives from :class:`MedsegError`. Errors about
what the user handed us (files, folders, configs, checkpoints) derive from
:class:`InputError`; the CLI prints them on one line and exits with ``EXIT_BAD_INPUT``.
Anything else escaping is a bug and exits with ``EXIT_INTERNAL``.
"""

from __future__ import annotations

from pathlib import Path

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2
EXIT_PARTIAL = 3  # a batch finished, but some cases failed
EXIT_INTERRUPTED = 130


class MedsegError(Exception):
    """Base class of every error medseg raises on purpose."""

    exit_code = EXIT_INTERNAL

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)


class InputError(MedsegError):
    """Bad input: a file, folder, series, dataset or argument medseg cannot use."""

    exit_code = EXIT_BAD_INPUT


class ReadError(InputError):
    """A file or series could not be read (missing, corrupt, unsupported)."""


class GeometryError(InputError):
    """Geometry is unusable or inconsistent (singular affine, irregular slices, grid mismatch)."""


class DatasetError(InputError):
    """A dataset description or case is invalid (missing keys, unknown labels, ...)."""


class ConfigError(InputError):
    """A pipeline file, plan or CLI override is invalid."""


class CheckpointError(InputError):
    """A checkpoint cannot be loaded or does not match the plan."""


class OutputError(InputError):
    """An output location cannot be used (a file where a folder is needed, inside inputs, ...)."""
