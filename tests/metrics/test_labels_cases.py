"""Label names (--labels, dataset.json) and matching cases by name across formats."""

from __future__ import annotations

import json

import pytest

from medseg.core.errors import ConfigError, DatasetError, InputError
from medseg.metrics.cases import case_id, list_volumes, match_cases
from medseg.metrics.labels import (
    find_dataset_json,
    labels_from_dataset_json,
    name_labels,
    parse_labels,
)


def test_parse_labels():
    assert parse_labels("1:Anterior, 2:Posterior") == {1: "Anterior", 2: "Posterior"}
    assert parse_labels("3,1") == {3: "label_3", 1: "label_1"}
    for bad in ("x:Anterior", "", "1:a,1:b"):
        with pytest.raises(ConfigError):
            parse_labels(bad)


@pytest.mark.parametrize("labels", [
    {"0": "background", "1": "Anterior", "2": "Posterior"},  # Decathlon
    {"background": 0, "Anterior": 1, "Posterior": 2},  # nnU-Net v2
])
def test_dataset_json_next_to_the_labels_folder(tmp_path, labels):
    (tmp_path / "labelsTr").mkdir()
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": labels}))
    path = find_dataset_json(tmp_path / "labelsTr")
    assert path == tmp_path / "dataset.json"
    assert labels_from_dataset_json(path) == {1: "Anterior", 2: "Posterior"}


def test_unusable_dataset_json_names_the_file(tmp_path):
    path = tmp_path / "dataset.json"
    path.write_text('{"labels": {"whole": [1, 2]}}')
    with pytest.raises(DatasetError, match=r"dataset\.json.*region labels"):
        labels_from_dataset_json(path)
    path.write_text("{not json")
    with pytest.raises(DatasetError, match=r"dataset\.json"):
        labels_from_dataset_json(path)
    assert find_dataset_json(tmp_path / "a" / "b") is None


def test_name_labels_falls_back_to_value_names():
    assert name_labels({2, 1}, {1: "Anterior"}) == {1: "Anterior", 2: "label_2"}


def test_case_ids_strip_image_suffixes_only():
    assert case_id("a/hippocampus_001.nii.gz") == "hippocampus_001"
    assert case_id("case.v2.NRRD") == "case.v2"
    assert case_id("b/series_folder") == "series_folder"


def test_match_cases_across_formats(tmp_path):
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    pred.mkdir(), ref.mkdir()
    for name in ("a.nii.gz", "b.nrrd", "extra.mha", "notes.txt", ".hidden.nii"):
        (pred / name).write_bytes(b"x")
    for name in ("a.nii", "b.nii.gz", "c.nii.gz", "dataset.json"):
        (ref / name).write_bytes(b"x")
    (ref / "d_dicom").mkdir()
    pairs = match_cases(pred, ref)
    assert [(c, p.name, r.name) for c, p, r in pairs.pairs] == [
        ("a", "a.nii.gz", "a.nii"), ("b", "b.nrrd", "b.nii.gz")]
    assert pairs.missing_predictions == ("c", "d_dicom")
    assert pairs.unmatched_predictions == ("extra",)


def test_matching_errors(tmp_path):
    (tmp_path / "p").mkdir(), (tmp_path / "r").mkdir()
    (tmp_path / "p" / "x.nii.gz").write_bytes(b"x")
    (tmp_path / "r" / "y.nii.gz").write_bytes(b"x")
    with pytest.raises(InputError, match="no prediction"):
        match_cases(tmp_path / "p", tmp_path / "r")
    (tmp_path / "p" / "x.nrrd").write_bytes(b"x")
    with pytest.raises(InputError, match="two volumes for case 'x'"):
        list_volumes(tmp_path / "p")
    with pytest.raises(InputError, match="not a folder"):
        list_volumes(tmp_path / "missing")
