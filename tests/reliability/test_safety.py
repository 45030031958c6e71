"""Safety: inputs are never modified (hashed before and after a full pipeline run), outputs
never land inside input folders, and output files get ordinary permissions."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from medseg.cli.main import main
from medseg.core import Volume
from medseg.core.errors import EXIT_BAD_INPUT, EXIT_OK, OutputError
from medseg.core.paths import ensure_outside_inputs
from medseg.io import write_volume
from tests.conftest import make_affine, sphere_label
from tests.data.synthetic import write_decathlon
from tests.io import dicom_factory
from tests.reliability import corpus


def fingerprint(root: Path) -> dict[str, tuple[str, int, int]]:
    """Every file and folder under ``root``: content hash (files), mtime and mode."""
    entries = {}
    for path in sorted([root, *root.rglob("*")]):
        info = path.stat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        entries[str(path.relative_to(root))] = (digest, info.st_mtime_ns, info.st_mode)
    return entries


def write_dicom_series(folder: Path) -> Path:
    """A 16x16x16 int16 MR series with a bright ball, for prediction from DICOM."""
    shape = (16, 16, 16)
    array = (1000 + 500 * sphere_label(shape).astype(np.int16)).astype(np.int16)
    dicom_factory.write_series(folder, array, make_affine((1, 1, 1), "LPS"))
    return folder


@pytest.mark.slow
def test_full_pipeline_run_leaves_inputs_untouched(tmp_path: Path, capsys) -> None:
    inputs = tmp_path / "inputs"
    dataset = write_decathlon(inputs / "dataset", n_cases=5, n_test=1, shape=(16, 16, 16))
    series = write_dicom_series(inputs / "dicom" / "study1")
    pipeline = inputs / "pipeline.yaml"
    pipeline.write_text(
        f"name: safety\ndataset: {{path: {dataset}, holdout_fraction: 0.2}}\n"
        "preprocess: {workers: 1}\n"
        "train: {folds: [all], epochs: 1, iterations_per_epoch: 2, validate_every: 1, "
        "device: cpu}\n"
        f"predict: {{inputs: [{series}], device: cpu}}\n"
    )
    before = fingerprint(inputs)
    assert main(["run", str(pipeline), "--workdir", str(tmp_path / "run")]) == EXIT_OK
    capsys.readouterr()
    assert fingerprint(inputs) == before
    predictions = [p.name for p in (tmp_path / "run" / "predictions").rglob("*.nii.gz")]
    assert any(name.startswith("study1") for name in predictions), predictions


def test_output_inside_input_folder_is_refused(tmp_path: Path) -> None:
    series = tmp_path / "series"
    series.mkdir()
    for output in (series, series / "seg.nii.gz", series / "deeper" / "seg.nii.gz"):
        with pytest.raises(OutputError, match="input"):
            ensure_outside_inputs(output, [series])
    ensure_outside_inputs(tmp_path / "elsewhere" / "seg.nii.gz", [series])
    ensure_outside_inputs(tmp_path / "series_out", [series])  # a sibling sharing a prefix


def test_convert_refuses_to_write_into_dicom_folder(tmp_path: Path, capsys) -> None:
    series = write_dicom_series(tmp_path / "series")
    before = fingerprint(series)
    code = main(["convert", str(series), str(series / "volume.nii.gz")])
    assert code == EXIT_BAD_INPUT
    assert "inside the input folder" in capsys.readouterr().err
    assert fingerprint(series) == before


def test_outputs_get_umask_permissions(tmp_path: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    path = tmp_path / "out.nii.gz"
    write_volume(Volume(corpus.image_array()[None], corpus.AFFINE), path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
