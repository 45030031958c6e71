"""nnU-Net v2 model folders built by nnU-Net's own code (random weights, tiny synthetic
datasets, CPU): medseg's probabilities and labels match nnU-Net's predictor for a 3D
(two-fold ensemble, with and without mirroring), a 2D and an anisotropic two-channel
region-based configuration."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medseg.cli.main import main
from medseg.core.errors import CheckpointError, ConfigError
from medseg.data.reading import stack_channels
from medseg.inference import InferenceSettings, Predictor
from medseg.inference.nnunet import NnunetPredictor
from medseg.io import read_volume

pytest.importorskip("dynamic_network_architectures")
pytest.importorskip("nnunetv2")
from tests.nnunet_builder import build_model_folders, write_inputs, write_synthetic_raw

pytestmark = pytest.mark.slow
FLOAT32 = InferenceSettings(amp=False, tta=False)  # nnU-Net's side ran without mirroring


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("nnunet")
    write_synthetic_raw(root / "raw", 1, spacings=((1, 1, 1), (0.9, 1.1, 1.0)))
    write_synthetic_raw(root / "raw", 2, shape=(28, 24, 12), name="Aniso",
                        spacings=((1, 1, 4), (0.9, 0.9, 4.4), (1.1, 1.1, 3.8)),
                        channel_names=("CT", "MRI"), regions=True)
    in1 = write_inputs(root / "in1", 2, (26, 30, 22), ((0.8, 0.9, 1.3), (1, 1, 1)),
                       oblique=20, prefix="test")
    in2 = write_inputs(root / "in2", 2, (30, 26, 12), ((0.8, 0.8, 3.5), (1, 1, 4)),
                       channels=2, prefix="test")
    out = root / "out"
    folders = build_model_folders(
        root, [{"id": 1, "configs": ["3d_fullres", "2d"], "folds": ["0", "1"]},
               {"id": 2, "configs": ["3d_fullres"], "folds": ["0"]}],
        [{"model": "1/3d_fullres", "inputs": in1, "output": out / "3d", "folds": ["0", "1"]},
         {"model": "1/3d_fullres", "inputs": in1, "output": out / "3d_tta", "folds": ["0"],
          "mirror": True},
         {"model": "1/2d", "inputs": in1, "output": out / "2d", "folds": ["0"]},
         {"model": "2/3d_fullres", "inputs": in2, "output": out / "aniso", "folds": ["0"]}])
    return {"3d": folders["1/3d_fullres"], "2d": folders["1/2d"],
            "aniso": folders["2/3d_fullres"], "in1": in1, "in2": in2, "out": out}


def read_input(folder: Path, case: str) -> object:
    return stack_channels([read_volume(p) for p in sorted(folder.glob(f"{case}_*.nii.gz"))],
                          case)


def assert_matches_nnunet(predictor: Predictor, inputs: Path, reference: Path,
                          cases: tuple[str, ...] = ("test000", "test001")) -> None:
    for case in cases:
        volume = read_input(inputs, case)
        pred = predictor.predict(volume, with_probabilities=True)
        ref = np.load(reference / f"{case}.npz")["probabilities"]  # (K, z, y, x)
        ours = pred.probabilities.transpose(0, 3, 2, 1)
        assert ours.shape == ref.shape
        assert np.abs(ours - ref).mean() < 1e-4
        assert np.abs(ours - ref).max() < 2e-3
        seg = np.asarray(nib.load(reference / f"{case}.nii.gz").dataobj)
        assert np.mean(pred.labels.array[0] == seg) > 0.999
        np.testing.assert_allclose(pred.labels.affine, volume.affine)


def test_3d_two_fold_ensemble_matches_nnunet(built):
    predictor = Predictor.load(built["3d"], ["0", "1"], settings=FLOAT32)
    assert isinstance(predictor, NnunetPredictor) and len(predictor.networks) == 2
    assert_matches_nnunet(predictor, built["in1"], built["out"] / "3d")


def test_3d_mirroring_matches_nnunet(built):
    settings = InferenceSettings(amp=False, tta=True)
    predictor = Predictor.load(built["3d"], ["0"], settings=settings)
    assert predictor.mirror_axes == (0, 1, 2)
    assert_matches_nnunet(predictor, built["in1"], built["out"] / "3d_tta", ("test001",))


def test_2d_matches_nnunet(built):
    assert_matches_nnunet(Predictor.load(built["2d"], ["0"], settings=FLOAT32), built["in1"],
                          built["out"] / "2d")


def test_anisotropic_two_channel_regions_match_nnunet(built):
    predictor = Predictor.load(built["aniso"], settings=FLOAT32)
    plan = predictor.nnunet
    assert plan.labels.has_regions and plan.normalization[0] == "CTNormalization"
    assert max(plan.spacing) / min(plan.spacing) > 3  # a separate low-resolution axis
    assert predictor.label_names == {0: "background", 1: "whole", 2: "core"}
    assert_matches_nnunet(predictor, built["in2"], built["out"] / "aniso")


def test_cli_predicts_with_an_nnunet_folder(built, tmp_path, capsys):
    out = tmp_path / "pred"
    code = main(["predict", "-m", str(built["3d"]), "--folds", "0", "1", "--no-amp", "--no-tta",
                 "--device", "cpu", "--no-progress", "-i", str(built["in1"]), "-o", str(out)])
    assert code == 0
    assert "nnU-Net" in capsys.readouterr().err
    for case in ("test000", "test001"):
        ours = nib.load(out / f"{case}.nii.gz")  # <case>_0000 is <case>, as nnU-Net names it
        ref = nib.load(built["out"] / "3d" / f"{case}.nii.gz")
        np.testing.assert_allclose(ours.affine, nib.load(built["in1"] / f"{case}_0000.nii.gz")
                                   .affine, atol=1e-5)
        assert np.mean(np.asarray(ours.dataobj) == np.asarray(ref.dataobj)) > 0.999


def test_bad_model_folders_are_named(built, tmp_path):
    with pytest.raises(ConfigError, match="fold_7"):
        Predictor.load(built["3d"], ["7"])
    copy = tmp_path / built["3d"].name
    copy.mkdir()
    for name in ("dataset.json", "plans.json"):
        (copy / name).write_text((built["3d"] / name).read_text())
    with pytest.raises(CheckpointError, match="checkpoint_final"):
        Predictor.load(copy)
    plans = json.loads((copy / "plans.json").read_text())
    plans["image_reader_writer"] = "Tiff3DIO"
    (copy / "plans.json").write_text(json.dumps(plans))
    with pytest.raises(ConfigError, match="Tiff3DIO"):
        Predictor.load(copy)
