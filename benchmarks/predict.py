"""End-to-end batch prediction: ``medseg predict`` vs MONAI's usual inference recipe.

Both run as whole processes (start-up included) over the same folder of hippocampus
volumes (held-out cases copied under distinct names):

* medseg: ``medseg predict -m MODEL -i IN -o OUT`` (its plan's DynUNet, default settings);
* MONAI: LoadImaged, EnsureChannelFirstd, Orientationd, NormalizeIntensityd,
  ``sliding_window_inference`` (Gaussian, overlap 0.5), Invertd, SaveImaged, with MONAI's
  UNet (16-256 channels), DataLoader with worker processes.

Agreement: the MONAI recipe is run again with medseg's network and weights and both label
maps are compared (Dice per label). ``--memory`` measures the peak RSS of predicting a
synthetic 512x512x300 CT volume with a 3-class 3D model (separate process).

Usage: python benchmarks/predict.py [--model RUN_OR_CHECKPOINT] [--cases 300] [--memory]
Prints one JSON line at the end. Without --model the network is randomly initialised from
the hippocampus plan (same cost, meaningless labels), which the output says.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
HIPPOCAMPUS = ROOT.parent / "shared" / "data" / "hippocampus"
UNET_ROI = (48, 64, 48)  # MONAI UNet with four stride-2 levels needs multiples of 16


# --- the MONAI recipe (run in its own process) ----------------------------------------------


def monai_recipe(in_dir: Path, out_dir: Path, checkpoint: Path | None, workers: int) -> None:
    """MONAI's usual dictionary-transform inference pipeline over every file of ``in_dir``."""
    import torch
    from monai.data import DataLoader, Dataset, decollate_batch
    from monai.inferers import sliding_window_inference
    from monai.networks.nets import UNet
    from monai.transforms import (
        AsDiscreted,
        Compose,
        EnsureChannelFirstd,
        Invertd,
        LoadImaged,
        NormalizeIntensityd,
        Orientationd,
        SaveImaged,
    )

    if checkpoint is None:
        torch.manual_seed(0)
        net, roi = UNet(3, 1, 3, (16, 32, 64, 128, 256), (2, 2, 2, 2), num_res_units=2), UNET_ROI
    else:
        net, roi = _medseg_network(checkpoint)
    net.eval()
    pre = Compose([
        LoadImaged("image", image_only=False), EnsureChannelFirstd("image"),
        Orientationd("image", axcodes="RAS"),
        NormalizeIntensityd("image", nonzero=True, channel_wise=True),
    ])
    post = Compose([
        Invertd("pred", transform=pre, orig_keys="image", nearest_interp=False),
        AsDiscreted("pred", argmax=True),
        SaveImaged("pred", output_dir=str(out_dir), output_postfix="", separate_folder=False,
                   output_dtype=np.uint8, resample=False, print_log=False),
    ])
    files = [{"image": str(p)} for p in sorted(in_dir.glob("*.nii.gz"))]
    loader = DataLoader(Dataset(files, pre), batch_size=1, num_workers=workers)
    with torch.inference_mode():
        for batch in loader:
            batch["pred"] = sliding_window_inference(batch["image"], roi, 4, net, overlap=0.5,
                                                     mode="gaussian")
            for item in decollate_batch(batch):
                post(item)


def _medseg_network(checkpoint: Path):
    """medseg's network and weights, for the agreement run (imports medseg only here)."""
    from medseg.models import build_network, load_checkpoint, load_weights
    from medseg.preprocess import Plan

    ckpt = load_checkpoint(checkpoint)
    plan = Plan.from_dict(ckpt["plan"])
    net = build_network(plan, ckpt["config"])
    load_weights(net, ckpt, checkpoint)
    return net, tuple(plan.configuration(ckpt["config"]).patch_size)


# --- memory probe (own process) -------------------------------------------------------------


def memory_probe(overlap: float) -> dict:
    """Peak RSS of ``predict_volume`` on a 512x512x300 int16 CT volume, 3-class 3D model."""
    import torch

    from medseg.core import Volume
    from medseg.inference.predictor import InferenceSettings, Predictor, predict_volume
    from medseg.models import build_network
    from medseg.preprocess import Plan

    spacing = [0.8, 0.8, 1.5]
    plan = Plan.from_dict({
        "format": "medseg-plan-v1", "dataset_name": "SyntheticCT",
        "labels": {"0": "background", "1": "organ", "2": "lesion"}, "channels": {"0": "CT"},
        "target_spacing": spacing,
        "normalization": [{"scheme": "ct", "clip": [-200, 300], "mean": 50.0, "std": 80.0}],
        "configurations": {"3d": {
            "patch_size": [128, 128, 128], "batch_size": 2, "spacing": spacing,
            "kernel_sizes": [[3, 3, 3]] * 5, "strides": [[1, 1, 1]] + [[2, 2, 2]] * 4,
            "filters": [4, 8, 16, 32, 64], "deep_supervision": False}},
    })
    torch.manual_seed(0)
    predictor = Predictor(plan, "3d", [build_network(plan, "3d")],
                          settings=InferenceSettings(overlap=overlap))
    rng = np.random.default_rng(0)
    array = rng.integers(-30, 30, size=(1, 512, 512, 300), dtype=np.int16)
    array[:, 100:400, 120:420, 40:260] += 60
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])  # LPS-stored, like DICOM CT
    volume = Volume(array, affine, {"case": "synthetic_ct"})
    before = _peak_rss_gb()
    start = time.perf_counter()
    labels = predict_volume(predictor, volume)
    seconds = time.perf_counter() - start
    assert labels.same_grid(volume)
    return {"shape": [512, 512, 300], "classes": 3, "overlap": overlap,
            "rss_before_gb": round(before, 3), "peak_rss_gb": round(_peak_rss_gb(), 3),
            "seconds": round(seconds, 1)}


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB on Linux


# --- driver ----------------------------------------------------------------------------------


def random_model(folder: Path, filters: list[int] | None = None) -> Path:
    """A randomly initialised checkpoint of the hippocampus plan's 3D network (optionally
    with other ``filters`` per level)."""
    import torch

    from medseg.data import load_dataset
    from medseg.models import build_network, save_checkpoint
    from medseg.preprocess import compute_fingerprint, plan_dataset

    dataset = load_dataset(HIPPOCAMPUS)
    plan = plan_dataset(dataset, compute_fingerprint(dataset, progress=False))
    if filters:
        config = replace(plan.configurations["3d"], filters=tuple(filters))
        plan = plan.with_changes(configurations={"3d": config})
    torch.manual_seed(0)
    net = build_network(plan, "3d")
    path = folder / "random_3d.pt"
    save_checkpoint(path, {"plan": plan.to_dict(), "config": "3d", "fold": 0,
                           "model": net.state_dict(), "epoch": 0, "best_metric": 0.0})
    return path


def held_out_cases(n_held_out: int) -> list[Path]:
    """The last ``n_held_out`` hippocampus training images (by name)."""
    return sorted((HIPPOCAMPUS / "imagesTr").glob("*.nii.gz"))[-n_held_out:]


def make_inputs(sources: list[Path], n: int, folder: Path) -> Path:
    folder.mkdir(parents=True)
    for i in range(n):
        shutil.copyfile(sources[i % len(sources)], folder / f"case_{i:04d}.nii.gz")
    return folder


def timed(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the process and its children) of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def median_runs(commands: dict[str, list[str]], repeats: int, folder: Path) -> dict:
    """Run each command ``repeats`` times, alternating their order; median wall and CPU."""
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    for r in range(repeats):
        order = list(commands) if r % 2 == 0 else list(reversed(commands))
        for name in order:
            shutil.rmtree(folder / name, ignore_errors=True)
            runs[name].append(timed([*commands[name], str(folder / name)]))
    return {name: {"wall_s": round(float(np.median([w for w, _ in v])), 2),
                   "cpu_s": round(float(np.median([c for _, c in v])), 2),
                   "wall_runs_s": [round(w, 2) for w, _ in v]}
            for name, v in runs.items()}


def medseg_cmd(model: Path, in_dir: Path, *extra: str) -> list[str]:
    """``medseg predict`` over ``in_dir``; the output folder is appended last."""
    return [sys.executable, "-m", "medseg.cli.main", "predict", "-m", str(model), "-i",
            str(in_dir), "--device", "cpu", "--no-progress", *extra, "-o"]


def monai_cmd(in_dir: Path, workers: int, model: Path | None = None) -> list[str]:
    """The MONAI recipe over ``in_dir``; the output folder is appended last."""
    cmd = [sys.executable, __file__, "--workers", str(workers)]
    return cmd + (["--model", str(model)] if model else []) + ["--monai-recipe", str(in_dir)]


def agreement(a_dir: Path, b_dir: Path, labels: list[int]) -> dict:
    """Dice per label over all voxels of all cases, and the worst per-case mean Dice."""
    import nibabel as nib

    inter = dict.fromkeys(labels, 0)
    total = dict.fromkeys(labels, 0)
    worst = 1.0
    for a_path in sorted(a_dir.glob("*.nii.gz")):
        a_img, b_img = nib.load(a_path), nib.load(b_dir / a_path.name)
        assert np.allclose(a_img.affine, b_img.affine, atol=1e-4), a_path.name
        a, b = np.asarray(a_img.dataobj), np.asarray(b_img.dataobj).reshape(a_img.shape)
        case = []
        for v in labels:
            i, t = int(((a == v) & (b == v)).sum()), int((a == v).sum() + (b == v).sum())
            inter[v] += i
            total[v] += t
            case.append(1.0 if t == 0 else 2 * i / t)
        worst = min(worst, float(np.mean(case)))
    dice = {str(v): round(2 * inter[v] / total[v], 4) if total[v] else 1.0 for v in labels}
    return {"dice": dice, "worst_case_mean_dice": round(worst, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="run folder or checkpoint (default: random)")
    parser.add_argument("--cases", type=int, default=300, help="volumes in the timed folder")
    parser.add_argument("--held-out", type=int, default=40, help="distinct source cases")
    parser.add_argument("--agree-cases", type=int, default=40, help="cases for the Dice check")
    parser.add_argument("--workers", type=int, default=2, help="MONAI DataLoader workers")
    parser.add_argument("--memory", action="store_true", help="also run the memory probe")
    parser.add_argument("--memory-overlap", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per side")
    parser.add_argument("--monai-recipe", nargs=2, type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--memory-probe", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--filters", type=lambda t: [int(v) for v in t.split(",")],
                        help="random model only: filters per level, e.g. 16,32,64,128")
    parser.add_argument("--threads", type=int,
                        help="OMP_NUM_THREADS for both sides (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # inherited by every child
    if args.monai_recipe:
        monai_recipe(*args.monai_recipe, args.model, args.workers)
        return
    if args.memory_probe:
        print(json.dumps(memory_probe(args.memory_overlap)))
        return

    with tempfile.TemporaryDirectory(prefix="medseg-bench-") as tmp_name:
        tmp = Path(tmp_name)
        model = args.model or random_model(tmp, args.filters)
        sources = held_out_cases(args.held_out)
        inputs = make_inputs(sources, args.cases, tmp / "in")
        speed = median_runs({"medseg": medseg_cmd(model, inputs),
                             "monai": monai_cmd(inputs, args.workers)}, args.repeats, tmp)
        agree_in = make_inputs(sources, min(args.agree_cases, len(sources)), tmp / "agree_in")
        checkpoint = _checkpoint_of(model)  # one network for both sides
        for name, cmd in {"agree_medseg": medseg_cmd(checkpoint, agree_in),
                          "agree_medseg_fp32": medseg_cmd(checkpoint, agree_in, "--no-amp"),
                          "agree_monai": monai_cmd(agree_in, args.workers, checkpoint)}.items():
            timed([*cmd, str(tmp / name)])
        m, b = speed["medseg"], speed["monai"]
        result = {
            "benchmark": "predict", "date": time.strftime("%Y-%m-%d"),
            "machine": f"{os.cpu_count()} CPU cores, no GPU, load {os.getloadavg()[0]:.1f}",
            "model": str(args.model) if args.model else
            f"random-init hippocampus 3d DynUNet, filters {args.filters or 'as planned'}",
            "cases": args.cases, "repeats": args.repeats,
            "threads": args.threads or "default", "monai_workers": args.workers,
            "medseg": m, "monai": b,
            "medseg_volumes_per_s": round(args.cases / m["wall_s"], 2),
            "monai_volumes_per_s": round(args.cases / b["wall_s"], 2),
            "ratio_wall": round(b["wall_s"] / m["wall_s"], 2),
            "ratio_cpu": round(b["cpu_s"] / m["cpu_s"], 2),
            "agreement_same_network": agreement(tmp / "agree_medseg", tmp / "agree_monai",
                                                [1, 2]),
            "agreement_same_network_fp32": agreement(tmp / "agree_medseg_fp32",
                                                     tmp / "agree_monai", [1, 2]),
        }
    if args.memory:
        out = subprocess.run([sys.executable, __file__, "--memory-probe", "--memory-overlap",
                              str(args.memory_overlap)], check=True, capture_output=True,
                             text=True).stdout
        result["memory"] = json.loads(out.strip().splitlines()[-1])
    print(json.dumps(result))


def _checkpoint_of(model: Path) -> Path:
    """A checkpoint file of ``model`` (the first fold of a run folder)."""
    if model.is_file():
        return model
    from medseg.inference.predictor import find_checkpoints

    return find_checkpoints(model)[0]


if __name__ == "__main__":
    main()
