"""Validation: every kind of bad case is reported with its reason and excluded."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medseg.core import Volume
from medseg.core.errors import DatasetError
from medseg.data import load_dataset, read_listing, validate_dataset, write_listing
from medseg.io import read_volume, write_volume
from tests.data.synthetic import write_decathlon


@pytest.fixture
def broken_dataset(tmp_path):
    root = write_decathlon(tmp_path / "ds", n_cases=7, n_test=0)
    images, labels = root / "imagesTr", root / "labelsTr"
    label = read_volume(labels / "case_001.nii.gz")
    bad = label.array.copy()
    bad[0, 0, 0, 0] = 7
    write_volume(label.with_array(bad), labels / "case_001.nii.gz")
    write_volume(Volume(np.zeros((1, 20, 22, 17), np.uint8), label.affine),
                 labels / "case_002.nii.gz")
    nan = np.ones((1, 20, 22, 18), np.float32)
    nan[0, 3, 3, 3] = np.nan
    write_volume(label.with_array(nan), images / "case_003.nii.gz")
    write_volume(label.with_array(np.zeros_like(nan)), images / "case_004.nii.gz")
    (labels / "case_005.nii.gz").unlink()
    (images / "case_006.nii.gz").write_bytes(b"not a nifti file at all")
    return root


EXPECTED = {
    "case_001": "are not among the declared labels",
    "case_002": "label grid differs",
    "case_003": "NaN/Inf",
    "case_004": "empty image",
    "case_005": "missing file",
    "case_006": "unreadable",
}


def test_bad_cases_reported_and_excluded(broken_dataset):
    report = validate_dataset(load_dataset(broken_dataset), progress=False)
    assert [c.case_id for c in report.valid] == ["case_000"]
    reasons = dict(report.excluded)
    assert set(reasons) == set(EXPECTED)
    for case_id, fragment in EXPECTED.items():
        assert fragment in reasons[case_id], (case_id, reasons[case_id])


def test_strict_raises_listing_every_problem(broken_dataset):
    with pytest.raises(DatasetError) as info:
        validate_dataset(load_dataset(broken_dataset), strict=True, progress=False)
    assert all(case_id in str(info.value) for case_id in EXPECTED)


def test_listing_keeps_only_valid_cases(broken_dataset, tmp_path):
    ds = load_dataset(broken_dataset)
    report = validate_dataset(ds, progress=False)
    write_listing(tmp_path / "dataset.json", ds, report)
    listed = json.loads((tmp_path / "dataset.json").read_text())
    assert len(listed["validation"]["excluded"]) == len(EXPECTED)
    assert [c.case_id for c in read_listing(tmp_path / "dataset.json").cases] == ["case_000"]


def test_missing_label_entry(tmp_path):
    root = write_decathlon(tmp_path / "ds", n_cases=2, n_test=0)
    meta = json.loads((root / "dataset.json").read_text())
    del meta["training"][1]["label"]
    (root / "dataset.json").write_text(json.dumps(meta))
    report = validate_dataset(load_dataset(root), progress=False)
    assert report.excluded == (("case_001", "missing label"),)


def test_channels_on_different_grids(tmp_path):
    root = write_decathlon(tmp_path / "ds", n_cases=2, channels=2, n_test=0)
    second = root / "imagesTr" / "case_001_0001.nii.gz"
    moved = read_volume(second)
    affine = moved.affine.copy()
    affine[:3, 3] += 2.0
    write_volume(Volume(moved.array, affine), second)
    report = validate_dataset(load_dataset(root), progress=False)
    assert [c.case_id for c in report.valid] == ["case_000"]
    assert "bad geometry" in dict(report.excluded)["case_001"]


def test_float_labels_with_whole_values_are_accepted(tmp_path):
    root = write_decathlon(tmp_path / "ds", n_cases=2, n_test=0)
    path = root / "labelsTr" / "case_001.nii.gz"
    label = read_volume(path)
    write_volume(label.with_array(label.array.astype(np.float32)), path)  # as BraTS stores them
    report = validate_dataset(load_dataset(root), progress=False)
    assert [c.case_id for c in report.valid] == ["case_000", "case_001"]


def test_non_integral_float_labels_are_refused_naming_the_file(tmp_path):
    root = write_decathlon(tmp_path / "ds", n_cases=2, n_test=0)
    path = root / "labelsTr" / "case_001.nii.gz"
    label = read_volume(path)
    blurred = label.array.astype(np.float32)
    blurred[0, 5, 5, 5] = 0.5  # e.g. a label resampled with linear interpolation
    write_volume(label.with_array(blurred), path)
    report = validate_dataset(load_dataset(root), progress=False)
    reason = dict(report.excluded)["case_001"]
    assert "non-integral values (0.5)" in reason and str(path) in reason
    with pytest.raises(DatasetError, match=r"case_001\.nii\.gz.*non-integral"):
        validate_dataset(load_dataset(root), strict=True, progress=False)
