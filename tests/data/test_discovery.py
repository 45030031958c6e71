"""Dataset discovery: Decathlon (multi-channel, imagesTs), paired folders, DICOM studies."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from medseg.core.errors import DatasetError
from medseg.data import Dataset, describe_pairs, load_dataset, read_case
from medseg.data.dataset import Case
from tests.conftest import DICOM_ROOT, HIPPOCAMPUS, requires_shared
from tests.data.synthetic import write_decathlon


def test_decathlon_multichannel_and_test_cases(tmp_path):
    root = write_decathlon(tmp_path / "ds", n_cases=2, channels=2, n_test=1)
    ds = load_dataset(root)
    assert ds.name == "Synthetic"
    assert ds.labels == {0: "background", 1: "left", 2: "right"}
    assert ds.channels == {0: "MRI", 1: "MRI"}
    assert [c.case_id for c in ds.cases] == ["case_000", "case_001"]
    assert [p.name for p in ds.cases[0].images] == ["case_000_0000.nii.gz",
                                                    "case_000_0001.nii.gz"]
    assert [c.case_id for c in ds.test_cases] == ["case_002"]  # found in imagesTs
    image, label = read_case(ds.cases[1])
    assert image.array.shape == (2, 20, 22, 18)
    assert label is not None and label.array.dtype == np.uint8
    assert np.array_equal(image.affine, label.affine)


def test_paired_folders_infer_labels(tmp_path):
    src = write_decathlon(tmp_path / "src", n_cases=2, n_test=0)
    root = tmp_path / "paired"
    shutil.copytree(src / "imagesTr", root / "images")
    shutil.copytree(src / "labelsTr", root / "labels")
    (root / "images" / "extra.nii.gz").write_bytes((src / "imagesTr" / "case_000.nii.gz")
                                                   .read_bytes())
    ds = load_dataset(root)
    assert [c.case_id for c in ds.cases] == ["case_000", "case_001"]
    assert [c.case_id for c in ds.test_cases] == ["extra"]  # no label: a test case
    assert ds.labels == {0: "background", 1: "label_1", 2: "label_2"}


def test_orphan_label_is_an_error(tmp_path):
    src = write_decathlon(tmp_path / "src", n_cases=1, n_test=0)
    root = tmp_path / "paired"
    shutil.copytree(src / "imagesTr", root / "images")
    shutil.copytree(src / "labelsTr", root / "labels")
    (root / "labels" / "ghost.nii.gz").write_bytes(b"x")
    with pytest.raises(DatasetError, match="ghost"):
        load_dataset(root)


def test_unknown_layout_is_an_error(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DatasetError, match="unrecognised dataset layout"):
        load_dataset(tmp_path)


def test_dataset_dict_round_trip(tmp_path):
    ds = load_dataset(write_decathlon(tmp_path / "ds", n_cases=2))
    assert Dataset.from_dict(ds.to_dict()) == ds


def test_duplicate_case_ids_rejected(tmp_path):
    case = Case("a", (tmp_path / "a.nii.gz",), None)
    with pytest.raises(DatasetError, match="duplicate"):
        Dataset("x", tmp_path, {0: "bg"}, {0: "MRI"}, (case, case))


@requires_shared
@pytest.mark.slow
def test_hippocampus_decathlon():
    ds = load_dataset(HIPPOCAMPUS)
    assert len(ds.cases) == 208 and len(ds.test_cases) == 1
    assert ds.labels == {0: "background", 1: "Anterior", 2: "Posterior"}


@requires_shared
@pytest.mark.slow
def test_pgbm_mask_pairing():
    ds = load_dataset(DICOM_ROOT / "pgbm")
    assert len(ds.cases) == 2
    assert sorted(ds.channels.values()) == ["FLAIR_reg", "T1post", "T2_reg"]
    for case in ds.cases:
        assert "MaskTumor" in case.label.name  # the mask series folder
        assert len(case.image_series) == 3 and case.label_series
        image, label = read_case(case)
        assert image.n_channels == 3 and image.same_grid(label)
        assert set(np.unique(label.array)) <= {0, 1}
    assert len(describe_pairs(ds)) == 2
    t1_only = load_dataset(DICOM_ROOT / "pgbm", channels=["T1post"])
    assert t1_only.channels == {0: "T1post"}
    with pytest.raises(DatasetError, match="no mask series"):
        load_dataset(DICOM_ROOT / "pgbm", mask_pattern="NoSuchMask")
