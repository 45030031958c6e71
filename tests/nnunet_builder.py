"""Build small nnU-Net v2 raw datasets and trained-model folders with nnU-Net's own code.

Used by the tests (tiny synthetic datasets, CPU, seconds) and the benchmarks (real data).
nnU-Net reads its folders from environment variables at import time, so the nnU-Net side
always runs in a child process (``python -m tests.nnunet_builder``) with its own
``nnUNet_raw``/``nnUNet_preprocessed``/``nnUNet_results``; nothing here imports nnunetv2.

    write_synthetic_raw(root / "raw", 1, spacings=((1, 1, 1),))
    folders = build_model_folders(root, [{"id": 1, "configs": ["3d_fullres"]}])
    # folders["1/3d_fullres"]: root/results/Dataset001_Tiny/nnUNetTrainer__nnUNetPlans__3d_fullres
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parents[1]


def nnunet_env(root: Path, small: bool = True) -> dict[str, str]:
    """Environment for an nnU-Net child process rooted at ``root``; ``small`` limits nnU-Net
    to one worker process (tiny test datasets), otherwise its defaults stay (benchmarks)."""
    env = dict(os.environ)
    for name, sub in (("nnUNet_raw", "raw"), ("nnUNet_preprocessed", "preprocessed"),
                      ("nnUNet_results", "results")):
        env[name] = str(root / sub)
        (root / sub).mkdir(parents=True, exist_ok=True)
    if small:
        env.update(nnUNet_def_n_proc="1", nnUNet_n_proc_DA="1", OMP_NUM_THREADS="2")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


def dataset_name(dataset_id: int, name: str = "Tiny") -> str:
    return f"Dataset{dataset_id:03d}_{name}"


def synthetic_case(shape: Sequence[int], rng: np.random.Generator,
                   channels: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(channels, *shape)`` with two blobs over noise, and their labels (0, 1, 2)."""
    grid = np.indices(shape).astype(np.float32)
    centre = np.asarray(shape, dtype=np.float32) / 2 + rng.uniform(-2, 2, 3)
    d2 = sum(((grid[i] - centre[i]) / (shape[i] / 4)) ** 2 for i in range(3))
    label = np.zeros(shape, np.uint8)
    label[d2 < 1] = 1
    label[(d2 < 0.35) & (grid[0] > centre[0])] = 2
    images = []
    for c in range(channels):
        img = 100 + 40 * (label == 1) + 80 * (label == 2) + rng.normal(0, 10, shape)
        img = img * (1 + 0.2 * c)
        img[:7] = 0  # a zero slab: crop-to-nonzero (and nnU-Net's use_mask_for_norm)
        img[7:10, :5] = 0  # a notch open to the outside: the normalisation mask matters
        images.append(img.astype(np.float32))
    return np.stack(images), label


def write_nifti(array: np.ndarray, spacing: Sequence[float], path: Path,
                oblique: float = 0.0) -> None:
    """NIfTI with the given voxel spacing (optionally rotated ``oblique`` degrees about z)."""
    c, si = np.cos(np.radians(oblique)), np.sin(np.radians(oblique))
    rotation = np.array([[c, -si, 0], [si, c, 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation * np.asarray(spacing, dtype=np.float64)
    affine[:3, 3] = [-5.0, 3.0, 7.0]
    nib.save(nib.Nifti1Image(array, affine), str(path))


def write_synthetic_raw(
    raw_root: Path, dataset_id: int, *, n_cases: int = 5, shape: Sequence[int] = (24, 28, 20),
    spacings: Sequence[Sequence[float]] = ((1.0, 1.0, 1.0),),
    channel_names: Sequence[str] = ("MRI",), regions: bool = False, seed: int = 0,
    name: str = "Tiny",
) -> Path:
    """An nnU-Net v2 raw dataset of synthetic cases (spacings cycle over ``spacings``); with
    ``regions`` its labels are regions (``whole`` = {1, 2}, ``core`` = {2})."""
    folder = raw_root / dataset_name(dataset_id, name)
    (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
    write_inputs(folder / "imagesTr", n_cases, shape, spacings, len(channel_names), seed,
                 labels=folder / "labelsTr")
    labels: dict[str, Any] = {"background": 0, "outer": 1, "inner": 2}
    meta: dict[str, Any] = {"channel_names": dict(enumerate(channel_names)),
                            "numTraining": n_cases, "file_ending": ".nii.gz", "name": name}
    if regions:
        labels = {"background": 0, "whole": [1, 2], "core": [2]}
        meta["regions_class_order"] = [1, 2]
    meta["labels"] = labels
    (folder / "dataset.json").write_text(json.dumps(meta, indent=1))
    return folder


def write_inputs(folder: Path, n_cases: int, shape: Sequence[int],
                 spacings: Sequence[Sequence[float]], channels: int = 1, seed: int = 1,
                 labels: Path | None = None, oblique: float = 0.0, prefix: str = "case") -> Path:
    """``<prefix>NNN_<cccc>.nii.gz`` images (and labels into ``labels``) of synthetic cases."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n_cases):
        images, label = synthetic_case(shape, rng, channels)
        spacing = spacings[i % len(spacings)]
        for c in range(channels):
            write_nifti(images[c], spacing, folder / f"{prefix}{i:03d}_{c:04d}.nii.gz", oblique)
        if labels is not None:
            write_nifti(label, spacing, labels / f"{prefix}{i:03d}.nii.gz", oblique)
    return folder


def build_model_folders(root: Path, jobs: Sequence[Mapping[str, Any]],
                        predictions: Sequence[Mapping[str, Any]] = (),
                        timeout: float = 1800) -> dict[str, Path]:
    """Plan, preprocess and write trained-model folders with nnU-Net, then run nnU-Net's
    predictor, all in one child process (one nnU-Net import).

    ``jobs``: ``{"id": 1, "configs": ["3d_fullres", "2d"], "folds": ["0"], "iterations": 0,
    "target_spacing": None}`` (random weights when ``iterations`` is 0, else that many
    training iterations per fold). ``predictions``: ``{"model": "<id>/<config>", "inputs":
    DIR, "output": DIR, "folds": [...], "mirror": False}`` (probabilities saved).
    Returns ``{"<id>/<config>": model folder}``.
    """
    spec = root / "nnunet_jobs.json"
    spec.write_text(json.dumps({"jobs": list(jobs), "predictions": [
        {**p, "inputs": str(p["inputs"]), "output": str(p["output"])} for p in predictions]}))
    done = subprocess.run([sys.executable, "-m", "tests.nnunet_builder", str(spec)],
                          env=nnunet_env(root), cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)
    if done.returncode:
        raise RuntimeError(f"nnU-Net failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return {k: Path(v) for k, v in json.loads(done.stdout.strip().splitlines()[-1]).items()}


# --- child process (nnU-Net imported here only) ----------------------------------------------


def _build(job: Mapping[str, Any]) -> dict[str, str]:
    import torch
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprints,
        plan_experiments,
        preprocess,
    )
    from nnunetv2.run.run_training import get_trainer_from_args

    torch.manual_seed(0)
    extract_fingerprints([job["id"]], num_processes=1, check_dataset_integrity=True,
                         verbose=False, show_progress_bar=False)
    spacing = job.get("target_spacing")
    plans_name = plan_experiments([job["id"]], overwrite_target_spacing=spacing and
                                  tuple(spacing)) or "nnUNetPlans"
    preprocess([job["id"]], plans_name, configurations=tuple(job["configs"]),
               num_processes=(1,) * len(job["configs"]), show_progress_bar=False)
    folders = {}
    for config in job["configs"]:
        for fold in job.get("folds", ["0"]):
            trainer = get_trainer_from_args(str(job["id"]), config, fold if fold == "all"
                                            else int(fold), "nnUNetTrainer", plans_name,
                                            device=torch.device("cpu"))
            if job.get("iterations"):
                trainer.num_iterations_per_epoch = job["iterations"]
                trainer.num_val_iterations_per_epoch = 1
                trainer.num_epochs = 1
                trainer.run_training()  # writes checkpoint_final.pth
            else:  # nnU-Net's initialised network, saved as its trainer saves it
                trainer.initialize()
                trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
                base = Path(trainer.output_folder_base)
                (base / "plans.json").write_text(json.dumps(trainer.plans_manager.plans))
                (base / "dataset.json").write_text(json.dumps(trainer.dataset_json))
                trainer.save_checkpoint(str(Path(trainer.output_folder) / "checkpoint_final.pth"))
            folders[f"{job['id']}/{config}"] = str(trainer.output_folder_base)
    return folders


def _predict(folder: str, prediction: Mapping[str, Any]) -> None:
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(tile_step_size=0.5, use_mirroring=prediction.get("mirror", False),
                                device=torch.device("cpu"), perform_everything_on_device=False,
                                allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(folder, prediction.get("folds", ["0"]))
    Path(prediction["output"]).mkdir(parents=True, exist_ok=True)
    predictor.predict_from_files_sequential(prediction["inputs"], prediction["output"],
                                            save_probabilities=True)


def _threads_for_spawned_pools() -> None:
    """Run nnU-Net's ``get_context("spawn").Pool`` workers as threads: each spawned process
    would re-import nnU-Net (seconds) for a few tiny cases. Test fixtures only."""
    import multiprocessing.context
    import multiprocessing.dummy

    def pool(self, processes=None, *args, **kwargs):
        return multiprocessing.dummy.Pool(processes)

    multiprocessing.context.SpawnContext.Pool = pool  # type: ignore[method-assign]


def verify_dataset_integrity(folder: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """nnU-Net's own integrity check (``--verify_dataset_integrity``) of a raw dataset folder;
    the completed child process (return code 0 when nnU-Net accepts the dataset)."""
    return subprocess.run([sys.executable, "-m", "tests.nnunet_builder", "--verify", str(folder)],
                          env=nnunet_env(folder.parent.parent / "nnunet_env"), cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def main() -> None:
    _threads_for_spawned_pools()
    if sys.argv[1] == "--verify":
        from nnunetv2.experiment_planning.verify_dataset_integrity import (
            verify_dataset_integrity as verify,
        )
        verify(sys.argv[2], num_processes=1)
        return
    spec = json.loads(Path(sys.argv[1]).read_text())
    folders: dict[str, str] = {}
    for job in spec["jobs"]:
        folders.update(_build(job))
    for prediction in spec["predictions"]:
        _predict(folders[prediction["model"]], prediction)
    sys.stdout.flush()
    print(json.dumps(folders))


if __name__ == "__main__":
    main()
