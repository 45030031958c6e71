"""``medseg info`` and ``medseg convert`` through the CLI entry point."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medseg.cli.main import main
from medseg.core.errors import EXIT_BAD_INPUT, EXIT_OK
from medseg.io import read_volume, write_volume
from tests.conftest import make_affine
from tests.io import dicom_factory

AFFINE = make_affine((0.7, 0.8, 2.0), "LPS", (10.0, 0.0, -15.0), (5, 6, 7))


def _series(folder: Path, description: str = "T1", uid: str | None = None) -> np.ndarray:
    array = np.arange(5 * 4 * 3, dtype=np.int16).reshape(5, 4, 3)
    dicom_factory.write_series(folder, array, AFFINE, description=description, series_uid=uid)
    return array


def test_info_json_for_a_file(tmp_path, volume_factory, capsys):
    vol = volume_factory(orientation="LPS", spacing=(1, 2, 3))
    write_volume(vol, tmp_path / "v.nii.gz")
    assert main(["info", str(tmp_path / "v.nii.gz"), "--json"]) == EXIT_OK
    report = json.loads(capsys.readouterr().out)
    assert report["format"] == "nifti" and report["series"] == []
    assert report["volume"]["shape"] == list(vol.spatial_shape)
    assert report["volume"]["orientation"] == "LPS"
    assert report["volume"]["spacing"] == [1.0, 2.0, 3.0]


def test_info_text_for_a_study_lists_series(tmp_path, capsys):
    _series(tmp_path / "s1", "T1 post", "1.2.3.1")
    _series(tmp_path / "s2", "FLAIR", "1.2.3.2")
    assert main(["info", str(tmp_path)]) == EXIT_OK
    out = capsys.readouterr().out
    assert "2 series" in out and "1.2.3.1" in out and "'FLAIR'" in out
    assert main(["info", str(tmp_path), "--series", "FLAIR", "--json"]) == EXIT_OK
    report = json.loads(capsys.readouterr().out)
    assert report["volume"]["oblique"] is True and len(report["series"]) == 2


def test_convert_dicom_to_nifti(tmp_path, capsys):
    array = _series(tmp_path / "study" / "s1", "T1", "1.2.3.1")
    _series(tmp_path / "study" / "s2", "T2", "1.2.3.2")
    out = tmp_path / "out" / "t1.nii.gz"
    assert main(["convert", str(tmp_path / "study"), str(out), "--series", "1.2.3.1"]) == EXIT_OK
    assert "wrote" in capsys.readouterr().out
    vol = read_volume(out)
    np.testing.assert_array_equal(vol.array[0], array)
    np.testing.assert_allclose(vol.affine, AFFINE, atol=1e-5)


@pytest.mark.parametrize(
    ("make", "args", "match"),
    [
        ("study", ["convert", "{in}", "{tmp}/o.nii.gz"], "2 series found"),
        ("empty", ["info", "{in}"], "folder is empty"),
        ("text", ["convert", "{in}", "{tmp}/o.nii.gz"], "unrecognised image format"),
        ("series", ["convert", "{in}", "{in}/o.nii.gz"], "inside the input folder"),
        ("series", ["convert", "{in}", "{tmp}/o.png"], "unsupported output format"),
        ("missing", ["info", "{in}"], "no such file"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(tmp_path, capsys, make, args, match):
    source = tmp_path / "input"
    if make == "study":
        _series(source / "a", "T1", "1.2.3.1")
        _series(source / "b", "T2", "1.2.3.2")
    elif make == "series":
        _series(source)
    elif make == "empty":
        source.mkdir()
    elif make == "text":
        source = tmp_path / "input.txt"
        source.write_text("hello")
    argv = [a.replace("{in}", str(source)).replace("{tmp}", str(tmp_path)) for a in args]
    assert main(argv) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith("medseg: error: ") and match in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "o.nii.gz").exists()
