"""Batch prediction through ``medseg predict``: naming, skipping, failures, DICOM-SEG."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from medseg.cli.main import main
from medseg.core.errors import EXIT_BAD_INPUT, EXIT_OK, EXIT_PARTIAL
from medseg.io import read_annotation, read_volume, write_volume
from medseg.io.dicom_seg_read import read_dicom_seg
from tests.inference.dicom_synth import write_dicom_series
from tests.inference.helpers import tiny_plan

SHAPE = (14, 12, 10)
GEOMETRIES = {
    "ras_case": ("RAS", (0, 0, 0), (1.0, 1.0, 1.0)),
    "lps_case": ("LPS", (0, 0, 0), (1.0, 1.5, 2.0)),
    "oblique_case": ("PIL", (20, 0, -15), (0.9, 1.1, 1.3)),
}


@pytest.fixture
def nifti_inputs(tmp_path: Path, volume_factory) -> Path:
    folder = tmp_path / "inputs"
    for i, (name, (orientation, oblique, spacing)) in enumerate(GEOMETRIES.items()):
        volume = volume_factory(SHAPE, spacing, orientation, oblique, origin=(i, 2, -3),
                                kind="sphere", seed=i)
        write_volume(volume, folder / f"{name}.nii.gz")
    (folder / "broken.nii.gz").write_bytes(b"\x1f\x8b this is not a gzip stream")
    (folder / "notes.txt").write_text("ignored: not an image")
    return folder


def _predict(*args: str | Path) -> int:
    return main(["predict", *map(str, args), "--device", "cpu", "--no-progress"])


def test_batch_writes_good_cases_and_reports_the_broken_one(run_dir, nifti_inputs, tmp_path,
                                                            capsys):
    out = tmp_path / "out"
    assert _predict("-m", run_dir, "-i", nifti_inputs, "-o", out) == EXIT_PARTIAL
    captured = capsys.readouterr()
    assert "broken" in captured.err and "failed" in captured.err
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}.nii.gz" for n in GEOMETRIES)
    for name in GEOMETRIES:
        source = read_volume(nifti_inputs / f"{name}.nii.gz")
        labels = read_volume(out / f"{name}.nii.gz")
        assert labels.spatial_shape == source.spatial_shape
        np.testing.assert_allclose(labels.affine, source.affine, atol=1e-5)
        assert labels.dtype.kind == "u" and set(np.unique(labels.array)) <= {0, 1}
    assert "ras_case" in captured.out and "ball" in captured.out  # summary table


def test_existing_outputs_are_skipped_unless_overwrite(run_dir, nifti_inputs, tmp_path):
    out = tmp_path / "out"
    good = nifti_inputs / "ras_case.nii.gz"
    assert _predict("-m", run_dir, "-i", good, "-o", out) == EXIT_OK
    target = out / "ras_case.nii.gz"
    os.utime(target, (1_000_000, 1_000_000))
    assert _predict("-m", run_dir, "-i", good, "-o", out) == EXIT_OK
    assert target.stat().st_mtime == 1_000_000
    assert _predict("-m", run_dir, "-i", good, "-o", out, "--overwrite") == EXIT_OK
    assert target.stat().st_mtime > 1_000_000


def test_probabilities_are_saved_on_the_source_grid(run_dir, nifti_inputs, tmp_path):
    out = tmp_path / "out"
    case = nifti_inputs / "lps_case.nii.gz"
    assert _predict("-m", run_dir, "-i", case, "-o", out, "--save-probabilities") == EXIT_OK
    saved = np.load(out / "lps_case_probabilities.npz")
    assert saved["probabilities"].shape == (2, *SHAPE)
    np.testing.assert_allclose(saved["affine"], read_volume(case).affine)
    labels = read_volume(out / "lps_case.nii.gz").array[0]
    agree = (saved["probabilities"].argmax(0) == labels).mean()
    assert agree > 0.99  # float16 storage may flip exact ties


def test_output_folder_must_not_be_an_input(run_dir, nifti_inputs):
    assert _predict("-m", run_dir, "-i", nifti_inputs, "-o", nifti_inputs) == EXIT_BAD_INPUT


@pytest.fixture
def dicom_study(tmp_path: Path, volume_factory) -> Path:
    study = tmp_path / "study one"
    for i, description in enumerate(["T1 axial", "T2 oblique"]):
        volume = volume_factory(SHAPE, (0.8, 0.8, 2.0), "LPS", (10 * i, 5, 20), kind="sphere",
                                seed=i)
        write_dicom_series(volume, study / f"{i + 1:02d}_{description}", description)
    return study


def test_study_folder_predicts_every_matching_series(run_dir, dicom_study, tmp_path):
    out = tmp_path / "out"
    assert _predict("-m", run_dir, "-i", dicom_study, "-o", out) == EXIT_OK
    assert sorted(p.name for p in out.iterdir()) == ["01_T1_axial.nii.gz", "02_T2_oblique.nii.gz"]
    series = read_volume(dicom_study / "02_T2 oblique")
    labels = read_volume(out / "02_T2_oblique.nii.gz")
    assert labels.spatial_shape == series.spatial_shape
    np.testing.assert_allclose(labels.affine, series.affine, atol=1e-4)


def test_series_option_and_dicom_seg_output(run_dir, dicom_study, tmp_path):
    nifti, seg = tmp_path / "nifti", tmp_path / "seg"
    assert _predict("-m", run_dir, "-i", dicom_study, "-o", nifti, "--series", "T2") == EXIT_OK
    assert [p.name for p in nifti.iterdir()] == ["02_T2_oblique.nii.gz"]
    assert _predict("-m", run_dir, "-i", dicom_study, "-o", seg, "--series", "T2",
                    "--format", "dicom-seg") == EXIT_OK
    series = read_volume(dicom_study / "02_T2 oblique")
    decoded = read_dicom_seg(seg / "02_T2_oblique.dcm", series, tiny_plan().labels).labels
    expected = read_volume(nifti / "02_T2_oblique.nii.gz")
    np.testing.assert_array_equal(decoded.array, expected.array)


def test_dicom_seg_needs_dicom_inputs(run_dir, nifti_inputs, tmp_path):
    code = _predict("-m", run_dir, "-i", nifti_inputs / "ras_case.nii.gz", "-o", tmp_path / "o",
                    "--format", "dicom-seg")
    assert code == EXIT_BAD_INPUT


def test_rtstruct_and_nifti_outputs_at_once(run_dir, dicom_study, tmp_path):
    out = tmp_path / "out"
    assert _predict("-m", run_dir, "-i", dicom_study, "-o", out, "--series", "T2",
                    "--format", "nifti", "rtstruct") == EXIT_OK
    assert sorted(p.name for p in out.iterdir()) == ["02_T2_oblique.nii.gz",
                                                     "02_T2_oblique_rtstruct.dcm"]
    series = read_volume(dicom_study / "02_T2 oblique")
    contours = read_annotation(out / "02_T2_oblique_rtstruct.dcm", series,
                               structures=tiny_plan().labels)
    expected = read_volume(out / "02_T2_oblique.nii.gz")  # the oblique series' own grid
    np.testing.assert_array_equal(contours.labels.array, expected.array)
    assert _predict("-m", run_dir, "-i", dicom_study, "-o", out, "--series", "T2",
                    "--format", "nifti", "rtstruct") == EXIT_OK  # both exist: skipped
