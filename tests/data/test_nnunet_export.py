"""Export to nnU-Net v2: the written dataset reads back to the same voxels and geometry,
labels are renumbered 0..K-1, and nnU-Net's own integrity check accepts it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medseg.cli.main import main
from medseg.core.errors import OutputError
from medseg.data import load_dataset, read_case
from medseg.data.nnunet_export import export_nnunet
from tests.data.synthetic import write_decathlon, write_nnunet_raw
from tests.data.test_dicom_study import studies  # noqa: F401 (fixture)


def test_roundtrip_renumbers_labels_and_keeps_geometry(tmp_path):
    src = write_decathlon(tmp_path / "src", n_cases=2, channels=2, n_test=1,
                          orientation="LPS", oblique_degrees=(0, 12, 0))
    meta = json.loads((src / "dataset.json").read_text())
    meta["labels"] = {"0": "background", "1": "left", "4": "right"}
    (src / "dataset.json").write_text(json.dumps(meta))
    for f in (src / "labelsTr").iterdir():  # value 2 becomes 4 in the source
        import nibabel as nib
        img = nib.load(f)
        data = np.asarray(img.dataobj).copy()
        data[data == 2] = 4
        nib.save(nib.Nifti1Image(data, img.affine), f)
    source = load_dataset(src)
    summary = export_nnunet(source, tmp_path / "raw", 12, name="My Set")
    assert summary.folder.name == "Dataset012_My_Set"
    assert (summary.training, summary.test, summary.failed) == (2, 1, ())
    meta = json.loads((summary.folder / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "left": 1, "right": 2}
    assert meta["channel_names"] == {"0": "MRI", "1": "MRI"} and meta["numTraining"] == 2
    exported = load_dataset(summary.folder)
    for before, after in zip(source.cases, exported.cases, strict=True):
        (img0, lab0), (img1, lab1) = read_case(before), read_case(after)
        np.testing.assert_array_equal(img0.array, img1.array)
        np.testing.assert_allclose(img0.affine, img1.affine, atol=1e-5)
        expected = np.select([lab0.array == 4, lab0.array == 1], [2, 1], 0)
        np.testing.assert_array_equal(lab1.array, expected)
    assert [c.case_id for c in exported.test_cases] == ["case_002"]


def test_region_dataset_keeps_its_regions(tmp_path):
    src = write_nnunet_raw(tmp_path / "Dataset003_R", n_cases=2, n_test=0, regions=True)
    summary = export_nnunet(load_dataset(src), tmp_path / "out", 4)
    meta = json.loads((summary.folder / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "whole": [1, 2], "core": [2]}
    assert meta["regions_class_order"] == [1, 2]


def test_output_inside_the_inputs_is_refused(tmp_path):
    src = write_decathlon(tmp_path / "src", n_cases=1, n_test=0)
    with pytest.raises(OutputError):
        export_nnunet(load_dataset(src), src / "imagesTr", 5)


def test_cli_exports_a_dicom_study_and_nnunet_accepts_it(studies, tmp_path_factory):  # noqa: F811
    pytest.importorskip("nnunetv2")
    from tests.nnunet_builder import verify_dataset_integrity

    out = tmp_path_factory.mktemp("export") / "raw"
    code = main(["export-nnunet", str(studies), str(out), "--id", "21", "--name", "Studies",
                 "--channels", "T1", "--channel-names", "MR", "--no-progress"])
    assert code == 0
    folder = out / "Dataset021_Studies"
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["numTraining"] == 2 and meta["channel_names"] == {"0": "MR"}
    assert meta["labels"] == {"background": 0, "Mask_Tumor": 1}  # the first mask name
    done = verify_dataset_integrity(folder)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
