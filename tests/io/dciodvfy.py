"""Run dicom3tools' ``dciodvfy`` (the DICOM IOD validator) on files medseg writes.

``.ci/run`` installs the Debian package ``dicom3tools`` when it is missing; tests that need
it skip only where it could not be installed.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

DCIODVFY = shutil.which("dciodvfy")
requires_dciodvfy = pytest.mark.skipif(
    DCIODVFY is None, reason="dciodvfy not installed (apt-get install dicom3tools)")


def dciodvfy_errors(path: Path) -> list[str]:
    """The ``Error`` lines dciodvfy reports for ``path`` (warnings are not errors)."""
    assert DCIODVFY is not None
    run = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=120,
                         check=False)
    lines = (run.stdout + run.stderr).splitlines()
    return [line for line in lines if line.startswith("Error")]
