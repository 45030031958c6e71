"""The CLI in a real process: one-line errors (library log lines and warnings included in
the count), exit code 2 for bad input and 3 for a batch where some cases failed."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from medseg.cli.main import main
from medseg.core.errors import EXIT_BAD_INPUT, EXIT_PARTIAL, CheckpointError
from medseg.models import load_checkpoint
from tests.inference.helpers import tiny_plan, write_run
from tests.reliability import corpus, corpus_data
from tests.reliability.test_corpus import KINDS

# kinds where nibabel logs, pydicom parses a broken value, and torch refuses a pickle
IN_PROCESS_KINDS = ["NIfTI unknown datatype", "DICOM malformed header value",
                    "checkpoint that runs code"]


@pytest.mark.parametrize("name", IN_PROCESS_KINDS)
def test_cli_process_prints_exactly_one_line(name: str, tmp_path: Path) -> None:
    kind = KINDS[name]
    built = kind.build(tmp_path)
    command = [sys.executable, "-m", "medseg.cli.main", *kind.action.argv(built, tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == EXIT_BAD_INPUT, result.stderr
    assert result.stderr.startswith("medseg: error: "), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / corpus_data.CODE_RAN_MARKER).exists()


def test_batch_with_bad_cases_exits_3_and_keeps_good_outputs(tmp_path: Path, capsys) -> None:
    write_run(tmp_path / "model", tiny_plan(), [0])
    inputs = tmp_path / "inputs"
    corpus.good_nifti(inputs, "good.nii.gz")
    (inputs / "noise.nii.gz").write_bytes(np.random.default_rng(0).bytes(3000))
    corpus.write_nifti(inputs / "four_d.nii.gz", np.stack([corpus.image_array()] * 3, -1))
    out = tmp_path / "out"
    code = main(["predict", "-m", str(tmp_path / "model"), "-i", str(inputs), "-o", str(out),
                 "--no-progress", "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == EXIT_PARTIAL
    assert sorted(p.name for p in out.iterdir()) == ["good.nii.gz"]
    failures = [line for line in captured.err.splitlines() if line.startswith("medseg: case")]
    assert len(failures) == 2
    assert any("four_d.nii.gz: image has 3 channel(s), the plan expects 1" in f for f in failures)
    assert any("noise.nii.gz: cannot read NIfTI file" in f for f in failures)
    assert "failed: four_d, noise" in captured.out


def test_code_running_checkpoint_is_a_real_threat(tmp_path: Path) -> None:
    """Unpickled without ``weights_only`` the corpus checkpoint does run code (so the corpus
    kind proves something), while medseg's loader refuses it."""
    built = corpus_data.checkpoint_runs_code(tmp_path)
    with zipfile.ZipFile(built.path) as archive:  # torch.save's zip: unpickle it unguarded
        payload = next(n for n in archive.namelist() if n.endswith("data.pkl"))
        pickle.loads(archive.read(payload))
    marker = tmp_path / corpus_data.CODE_RAN_MARKER
    assert marker.exists()
    marker.unlink()
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(built.path)
    assert not marker.exists()
