"""Output-location checks shared by every command that writes next to user data."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from medseg.core.errors import OutputError


def ensure_outside_inputs(output: str | Path, inputs: Iterable[str | Path]) -> None:
    """Raise :class:`OutputError` if ``output`` is an input or lies inside an input folder.

    Writing into an input folder would modify the user's data and, for DICOM folders,
    make the next scan of that folder pick the outputs up as another series.
    """
    out = Path(output).resolve()
    for raw in inputs:
        source = Path(raw).resolve()
        if out == source:
            raise OutputError(f"output would overwrite the input {raw}", output)
        if source.is_dir() and out.is_relative_to(source):
            raise OutputError(f"output is inside the input folder {raw}; choose another place",
                              output)
