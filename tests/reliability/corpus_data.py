"""Builders of the bad-input corpus, part 2: datasets, pipeline files, checkpoints and
output locations (part 1, single files and DICOM, is :mod:`tests.reliability.corpus`).

Dataset builders write a 3-case Decathlon dataset and break ``case_000``.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from medseg.models import build_network, save_checkpoint
from medseg.preprocess.plan import Plan
from tests.data.synthetic import write_decathlon
from tests.inference.helpers import tiny_plan, write_run
from tests.io import dicom_factory
from tests.reliability.corpus import AFFINE, SHAPE, Built, series_datasets, write_nifti

BAD_CASE = "case_000"  # the case every dataset builder breaks (case_001, case_002 stay good)
CODE_RAN_MARKER = "checkpoint_code_ran"


# --- datasets (Decathlon layout, case_000 broken) --------------------------------------------


def _dataset(root: Path) -> Path:
    return write_decathlon(root / "ds", n_cases=3, n_test=0, shape=SHAPE)


def _replace(path: Path, array: np.ndarray, affine: np.ndarray = AFFINE) -> None:
    path.unlink()
    write_nifti(path, array, affine)


def nan_image_in_dataset(root: Path) -> Built:
    ds = _dataset(root)
    image = ds / "imagesTr" / f"{BAD_CASE}.nii.gz"
    array = np.asarray(nib.load(image).dataobj, dtype=np.float32)
    array[3, 3, 3] = np.nan
    _replace(image, array, nib.load(image).affine)
    return Built(ds, BAD_CASE, BAD_CASE)


def undeclared_label_values(root: Path) -> Built:
    ds = _dataset(root)
    label = ds / "labelsTr" / f"{BAD_CASE}.nii.gz"
    array = np.asarray(nib.load(label).dataobj).astype(np.uint8)
    array[0, 0, 0] = 7
    _replace(label, array, nib.load(label).affine)
    return Built(ds, BAD_CASE, BAD_CASE)


def label_on_other_grid(root: Path) -> Built:
    ds = _dataset(root)
    label = ds / "labelsTr" / f"{BAD_CASE}.nii.gz"
    array = np.asarray(nib.load(label).dataobj).astype(np.uint8)
    _replace(label, array[:-1], nib.load(label).affine)
    return Built(ds, BAD_CASE, BAD_CASE)


def label_shifted_grid(root: Path) -> Built:
    """Same shape, origin moved by 2 mm: only the affine tells them apart."""
    ds = _dataset(root)
    label = ds / "labelsTr" / f"{BAD_CASE}.nii.gz"
    img = nib.load(label)
    affine = img.affine.copy()
    affine[:3, 3] += 2.0
    _replace(label, np.asarray(img.dataobj).astype(np.uint8), affine)
    return Built(ds, BAD_CASE, BAD_CASE)


def image_without_label(root: Path) -> Built:
    ds = _dataset(root)
    meta = json.loads((ds / "dataset.json").read_text())
    del meta["training"][0]["label"]
    (ds / "dataset.json").write_text(json.dumps(meta))
    return Built(ds, BAD_CASE, BAD_CASE)


def label_file_missing(root: Path) -> Built:
    ds = _dataset(root)
    (ds / "labelsTr" / f"{BAD_CASE}.nii.gz").unlink()
    return Built(ds, f"{BAD_CASE}.nii.gz", BAD_CASE)


def four_d_label(root: Path) -> Built:
    ds = _dataset(root)
    label = ds / "labelsTr" / f"{BAD_CASE}.nii.gz"
    img = nib.load(label)
    array = np.asarray(img.dataobj).astype(np.uint8)
    _replace(label, np.stack([array, array], axis=-1), img.affine)
    return Built(ds, BAD_CASE, BAD_CASE)


def four_d_image_mono_modal(root: Path) -> Built:
    """A 3-volume 4D image in a dataset that declares one channel."""
    ds = _dataset(root)
    image = ds / "imagesTr" / f"{BAD_CASE}.nii.gz"
    img = nib.load(image)
    array = np.asarray(img.dataobj, dtype=np.float32)
    _replace(image, np.stack([array] * 3, axis=-1), img.affine)
    return Built(ds, BAD_CASE, BAD_CASE)


def empty_label_in_dataset(root: Path) -> Built:
    """No foreground at all: a valid (negative) training case, kept."""
    ds = _dataset(root)
    label = ds / "labelsTr" / f"{BAD_CASE}.nii.gz"
    img = nib.load(label)
    _replace(label, np.zeros(img.shape, np.uint8), img.affine)
    return Built(ds, BAD_CASE, BAD_CASE)


def dataset_json_not_json(root: Path) -> Built:
    ds = _dataset(root)
    (ds / "dataset.json").write_text("{'name': 'single quotes are not JSON',")
    return Built(ds, "dataset.json")


def dataset_json_missing_keys(root: Path) -> Built:
    ds = _dataset(root)
    meta = json.loads((ds / "dataset.json").read_text())
    del meta["labels"]
    (ds / "dataset.json").write_text(json.dumps(meta))
    return Built(ds, "dataset.json")


def dataset_json_bad_training_entry(root: Path) -> Built:
    ds = _dataset(root)
    meta = json.loads((ds / "dataset.json").read_text())
    meta["training"][1] = "imagesTr/case_001.nii.gz"
    (ds / "dataset.json").write_text(json.dumps(meta))
    return Built(ds, "dataset.json")


# --- pipeline files --------------------------------------------------------------------------


def pipeline_unknown_key(root: Path) -> Built:
    (root / "data").mkdir()
    path = root / "pipe.yaml"
    path.write_text("name: corpus\ndataset: {path: data}\ntrain: {epoch: 3}\n")
    return Built(path, "train.epoch")


def pipeline_not_a_mapping(root: Path) -> Built:
    path = root / "pipe.yaml"
    path.write_text("- just\n- a list\n")
    return Built(path, path.name)


def pipeline_bad_yaml(root: Path) -> Built:
    path = root / "pipe.yaml"
    path.write_text("dataset: {path: [unclosed\n")
    return Built(path, path.name)


# --- checkpoints -----------------------------------------------------------------------------


def checkpoint_random_bytes(root: Path) -> Built:
    path = root / "model.pt"
    path.write_bytes(np.random.default_rng(3).bytes(2048))
    return Built(path, path.name)


def checkpoint_foreign_dict(root: Path) -> Built:
    """A real torch file, but not a medseg checkpoint (no ``format``)."""
    path = root / "model.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    return Built(path, path.name)


def checkpoint_runs_code(root: Path) -> Built:
    """A pickle that would create a marker file if unpickled without ``weights_only``."""
    path = root / "model.pt"
    marker = root / CODE_RAN_MARKER
    torch.save({"format": "medseg-checkpoint-v1", "x": _CodeOnLoad(str(marker))}, path)
    return Built(path, path.name)


class _CodeOnLoad:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (Path(self.marker),))


def checkpoint_other_plan(root: Path) -> Built:
    """A run folder whose fold_1 was trained for another label set than fold_0."""
    run = root / "run"
    write_run(run, tiny_plan(), [0])
    write_run(run, tiny_plan(labels={0: "background", 1: "ball", 2: "cube"}), [1])
    return Built(run, "fold_1")


def checkpoint_other_channels(root: Path) -> Built:
    """A checkpoint for a two-channel plan in a run whose first fold has one channel."""
    run = root / "run"
    write_run(run, tiny_plan(), [0])
    other = tiny_plan().to_dict()
    other["channels"] = {"0": "T1", "1": "T2"}
    other["normalization"] = other["normalization"] * 2
    plan = Plan.from_dict(other)
    save_checkpoint(run / "train" / "3d" / "fold_1" / "checkpoint_best.pt",
                    {"plan": plan.to_dict(), "config": "3d", "fold": 1,
                     "model": build_network(plan, "3d").state_dict(), "epoch": 1,
                     "best_metric": 0.0})
    return Built(run, "fold_1")


# --- outputs ---------------------------------------------------------------------------------


def output_folder_is_file(root: Path) -> Built:
    blocker = root / "out"
    blocker.write_text("I am a file")
    return Built(blocker / "result.nii.gz", str(blocker))


def output_below_a_file(root: Path) -> Built:
    """The output's grandparent is a file: its folder cannot be created."""
    blocker = root / "out"
    blocker.write_text("I am a file")
    return Built(blocker / "sub" / "result.nii.gz", "cannot create output folder")


def pipeline_run_inside_dataset(root: Path) -> Built:
    """A pipeline whose run folder would be created inside its dataset folder."""
    dataset = _dataset(root)
    path = root / "pipe.yaml"
    path.write_text(f"name: corpus\ndataset: {{path: {dataset}}}\n"
                    f"run: {{workdir: {dataset / 'run'}}}\n")
    return Built(path, str(dataset))


def output_inside_dicom_input(root: Path) -> Built:
    dicom_factory.save_series(series_datasets(), root / "series")
    return Built(root / "series" / "derived" / "seg.nii.gz", str(root / "series"))
