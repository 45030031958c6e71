"""Build small nnU-Net v2 raw datasets and trained-model folders with nnU-Net's own code.

Used by the tests (tiny synthetic datasets, CPU, seconds) and the benchmarks (real data).
nnU-Net reads its folders from environment variables at import time, so the nnU-Net side
always runs in a child process (``python -m tests.nnunet_builder``) with its own
``nnUNet_raw``/``nnUNet_preprocessed``/``nnUNet_results``; nothing here imports nnunetv2.

    raw = write_synthetic_raw(root / "raw", 1, spacing=(1, 1, 1))
    model = build_model_folder(root, 1, "3d_fullres", iterations=0)   # random weights
    # model: root/results/Dataset001_Tiny/nnUNetTrainer__nnUNetPlans__3d_fullres
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parents[1]


def nnunet_env(root: Path) -> dict[str, str]:
    """Environment for an nnU-Net child process rooted at ``root`` (CPU, few workers)."""
    env = dict(os.environ)
    for name, sub in (("nnUNet_raw", "raw"), ("nnUNet_preprocessed", "preprocessed"),
                      ("nnUNet_results", "results")):
        env[name] = str(root / sub)
        (root / sub).mkdir(parents=True, exist_ok=True)
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
        img[:2] = 0  # a zero border: exercises crop-to-nonzero
        images.append(img.astype(np.float32))
    return np.stack(images), label


def write_nifti(array: np.ndarray, spacing: Sequence[float], path: Path) -> None:
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = [-5.0, 3.0, 7.0]
    nib.save(nib.Nifti1Image(array, affine), str(path))


def write_synthetic_raw(
    raw_root: Path, dataset_id: int, *, n_cases: int = 5, shape: Sequence[int] = (24, 28, 20),
    spacings: Sequence[Sequence[float]] = ((1.0, 1.0, 1.0),), channels: int = 1,
    seed: int = 0, name: str = "Tiny",
) -> Path:
    """An nnU-Net v2 raw dataset of synthetic cases (spacings cycle over ``spacings``)."""
    folder = raw_root / dataset_name(dataset_id, name)
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n_cases):
        images, label = synthetic_case(shape, rng, channels)
        spacing = spacings[i % len(spacings)]
        for c in range(channels):
            write_nifti(images[c], spacing, folder / "imagesTr" / f"case{i:03d}_{c:04d}.nii.gz")
        write_nifti(label, spacing, folder / "labelsTr" / f"case{i:03d}.nii.gz")
    meta = {"channel_names": {str(c): ("MRI" if c == 0 else f"T{c}") for c in range(channels)},
            "labels": {"background": 0, "outer": 1, "inner": 2},
            "numTraining": n_cases, "file_ending": ".nii.gz", "name": name}
    (folder / "dataset.json").write_text(json.dumps(meta, indent=1))
    return folder


def build_model_folder(
    root: Path, dataset_id: int, configuration: str, *, iterations: int = 0,
    folds: Sequence[str] = ("0",), planner: str = "ExperimentPlanner",
    target_spacing: Sequence[float] | None = None, timeout: float = 900,
) -> Path:
    """Plan + preprocess ``root/raw/DatasetXXX`` with nnU-Net and write a trained-model folder
    (random weights when ``iterations`` is 0, else that many training iterations per fold)."""
    cmd = [sys.executable, "-m", "tests.nnunet_builder", "--root", str(root),
           "--id", str(dataset_id), "--config", configuration, "--iterations", str(iterations),
           "--planner", planner, "--folds", *folds]
    if target_spacing is not None:
        cmd += ["--target-spacing", *(str(s) for s in target_spacing)]
    done = subprocess.run(cmd, env=nnunet_env(root), cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)
    if done.returncode:
        raise RuntimeError(f"nnU-Net build failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


def nnunet_predict(model: Path, root: Path, inputs: Path, output: Path, folds: Sequence[str],
                   timeout: float = 900) -> None:
    """nnU-Net's own predictor (no mirroring, probabilities saved) on a folder of inputs."""
    code = (
        "import sys, torch; from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor;"
        "p = nnUNetPredictor(tile_step_size=0.5, use_mirroring=False, device=torch.device('cpu'),"
        " allow_tqdm=False, perform_everything_on_device=False);"
        "p.initialize_from_trained_model_folder(sys.argv[1], use_folds=sys.argv[4:]);"
        "p.predict_from_files_sequential(sys.argv[2], sys.argv[3], save_probabilities=True)"
    )
    output.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([sys.executable, "-c", code, str(model), str(inputs), str(output),
                           *folds], env=nnunet_env(root), capture_output=True, text=True,
                          timeout=timeout)
    if done.returncode:
        raise RuntimeError(f"nnU-Net predict failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


# --- child process (nnU-Net imported here only) ----------------------------------------------


def _child(args: argparse.Namespace) -> Path:
    import torch
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprints,
        plan_experiments,
        preprocess,
    )
    from nnunetv2.run.run_training import get_trainer_from_args

    torch.manual_seed(0)
    plans_name = "nnUNetPlans" if args.planner == "ExperimentPlanner" else None
    extract_fingerprints([args.id], num_processes=1, check_dataset_integrity=True,
                         verbose=False, show_progress_bar=False)
    spacing = tuple(args.target_spacing) if args.target_spacing else None
    plans_name = plan_experiments([args.id], args.planner, overwrite_target_spacing=spacing) \
        or plans_name
    preprocess([args.id], plans_name, configurations=(args.config,), num_processes=(1,),
               show_progress_bar=False)
    folder = None
    for fold in args.folds:
        trainer = get_trainer_from_args(str(args.id), args.config, fold if fold == "all"
                                        else int(fold), "nnUNetTrainer", plans_name,
                                        device=torch.device("cpu"))
        trainer.initialize()
        folder = Path(trainer.output_folder_base)
        if args.iterations:
            _train(trainer, args.iterations)
        else:
            trainer.on_train_start()  # writes plans.json/dataset.json next to the folds
            trainer.save_checkpoint(str(Path(trainer.output_folder) / "checkpoint_final.pth"))
            _stop_loaders(trainer)
    assert folder is not None
    return folder


def _train(trainer, iterations: int) -> None:
    trainer.num_iterations_per_epoch = iterations
    trainer.num_val_iterations_per_epoch = 1
    trainer.num_epochs = 1
    trainer.run_training()  # saves checkpoint_final.pth


def _stop_loaders(trainer) -> None:
    for loader in (getattr(trainer, "dataloader_train", None),
                   getattr(trainer, "dataloader_val", None)):
        if loader is not None and hasattr(loader, "_finish"):
            loader._finish()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--id", type=int, required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--iterations", type=int, default=0)
    parser.add_argument("--planner", default="ExperimentPlanner")
    parser.add_argument("--folds", nargs="+", default=["0"])
    parser.add_argument("--target-spacing", type=float, nargs=3)
    folder = _child(parser.parse_args())
    sys.stdout.flush()
    print(folder)


if __name__ == "__main__":
    main()
