"""nnU-Net v2 raw datasets: channel_names, label and region declarations, file endings,
imagesTs; they plan and preprocess like any medseg dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medseg.core.errors import DatasetError
from medseg.data import Dataset, load_dataset, read_case, validate_dataset
from medseg.io import read_volume
from medseg.preprocess import compute_fingerprint, open_cache, plan_dataset, preprocess_dataset
from tests.conftest import SHARED_DATA, requires_shared
from tests.data.synthetic import write_nnunet_raw


def plan_and_preprocess(ds: Dataset, run):
    plan = plan_dataset(ds, compute_fingerprint(ds, progress=False))
    summary = preprocess_dataset(ds, plan, run, workers=1, progress=False)
    assert not summary.failed
    return plan, summary, open_cache(summary.folder)


def test_nrrd_dataset_with_two_channels_plans_and_preprocesses(tmp_path):
    root = write_nnunet_raw(tmp_path / "Dataset007_Nrrd", n_cases=3, channels=2,
                            file_ending=".nrrd", orientation="LPS", oblique_degrees=(0, 8, 0))
    ds = load_dataset(root)
    assert ds.channels == {0: "MRI", 1: "T2"}
    assert ds.labels == {0: "background", 1: "left", 2: "right"}
    assert [c.case_id for c in ds.cases] == ["pt00", "pt01", "pt02"]
    assert [p.name for p in ds.cases[0].images] == ["pt00_0000.nrrd", "pt00_0001.nrrd"]
    assert ds.cases[0].label is not None and ds.cases[0].label.name == "pt00.nrrd"
    assert [c.case_id for c in ds.test_cases] == ["pt03"]
    assert validate_dataset(ds).valid
    image, _label = read_case(ds.cases[1])
    # the same voxels and world geometry as the files (read independently, channel by channel)
    first = read_volume(ds.cases[1].images[1])
    np.testing.assert_array_equal(image.array[1], first.array[0])
    np.testing.assert_allclose(image.affine, first.affine)
    plan, _summary, cache = plan_and_preprocess(ds, tmp_path / "run")
    assert plan.n_channels == 2 and plan.label_values == (0, 1, 2)
    assert sorted(cache.case_ids) == ["pt00", "pt01", "pt02"]
    assert set(np.unique(cache.label("pt00"))) == {0, 1, 2}


def test_region_labels_keep_values_and_regions(tmp_path):
    root = write_nnunet_raw(tmp_path / "Dataset008_Regions", n_cases=3, regions=True)
    ds = load_dataset(root)
    # region i is painted with regions_class_order[i]: value 1 = "whole" only, 2 = "core"
    assert ds.labels == {0: "background", 1: "whole", 2: "core"}
    assert ds.regions == {"whole": (1, 2), "core": (2,)}
    assert Dataset.from_dict(ds.to_dict()).regions == ds.regions
    plan, _, cache = plan_and_preprocess(ds, tmp_path / "run")
    assert plan.label_values == (0, 1, 2)
    assert len(cache.case_ids) == 3


def test_listed_cases_and_v1_dataset_json_still_work(tmp_path):
    root = write_nnunet_raw(tmp_path / "Dataset009_Listed", n_cases=2, n_test=0)
    meta = json.loads((root / "dataset.json").read_text())
    meta["dataset"] = {"b": {"images": ["imagesTr/pt01_0000.nii.gz"],
                             "label": "labelsTr/pt01.nii.gz"}}
    (root / "dataset.json").write_text(json.dumps(meta))
    ds = load_dataset(root)
    assert [c.case_id for c in ds.cases] == ["b"]
    assert ds.cases[0].images[0].name == "pt01_0000.nii.gz"


def test_decathlon_label_order_next_to_channel_names(tmp_path):
    # many v2-style files keep the Decathlon's value -> name labels (the shared CT and
    # BraTS datasets do): read as they are meant, not refused
    root = write_nnunet_raw(tmp_path / "Dataset012_Mixed", n_cases=2, n_test=0)
    meta = json.loads((root / "dataset.json").read_text())
    meta["labels"] = {"0": "background", "1": "left", "2": "right"}
    (root / "dataset.json").write_text(json.dumps(meta))
    assert load_dataset(root).labels == {0: "background", 1: "left", 2: "right"}


@requires_shared
@pytest.mark.parametrize("name", ["ct_headneck", "mri_brats2ch", "hippocampus"])
def test_shared_datasets_load(name):
    meta = json.loads((SHARED_DATA / name / "dataset.json").read_text())
    ds = load_dataset(SHARED_DATA / name)
    expected = {int(k): v for k, v in meta["labels"].items()}
    assert ds.labels == expected and len(ds.cases) == meta["numTraining"]


@pytest.mark.parametrize(("change", "message"), [
    ({"labels": {"background": 0, "whole": [1, 2]}}, "regions_class_order"),
    ({"labels": {"tumour": 1}}, "background"),
    ({"channel_names": {"1": "CT"}}, "channel indices"),
    ({"labels": {"background": 0, "a": "x"}}, "integers"),
])
def test_bad_dataset_json_names_the_problem(tmp_path, change, message):
    root = write_nnunet_raw(tmp_path / "Dataset010_Bad", n_cases=1, n_test=0)
    meta = {**json.loads((root / "dataset.json").read_text()), **change}
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match=message) as info:
        load_dataset(root)
    assert "dataset.json" in str(info.value)


def test_missing_channel_file_is_reported_by_validation(tmp_path):
    root = write_nnunet_raw(tmp_path / "Dataset011_Gap", n_cases=2, channels=2, n_test=0)
    (root / "imagesTr" / "pt01_0001.nii.gz").unlink()
    report = validate_dataset(load_dataset(root))
    assert [case for case, _ in report.excluded] == ["pt01"]
