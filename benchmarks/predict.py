"""End-to-end batch prediction: ``medseg predict`` vs MONAI's inference recipe, with the
same network, weights and precision on both sides (hippocampus batch).

Both run as whole processes (start-up, model load, read, preprocess, sliding window,
invert, write) over the same folder of hippocampus volumes (held-out cases copied under
distinct names), alternating which goes first; medians of ``--repeats`` runs:

* medseg: ``medseg predict -m CKPT -i IN -o OUT --device cpu`` (``--no-amp`` for float32);
* MONAI: LoadImaged, EnsureChannelFirstd, Orientationd, NormalizeIntensityd(nonzero),
  ``sliding_window_inference`` (roi = the plan's patch, 2 windows per pass as medseg,
  Gaussian, overlap 0.5), Invertd, AsDiscreted(argmax), SaveImaged, in a DataLoader with
  ``--workers`` worker processes, with medseg's network (MONAI's DynUNet built from the
  plan) and the checkpoint's weights.

Rows: ``fp32`` (the headline: float32 on both sides), ``bf16`` (both in bfloat16: medseg
converts the weights, MONAI runs under ``torch.autocast``; CPUs with native bf16 only) and
the precision gain ``medseg bf16 vs MONAI fp32``. Agreement: Dice per label between the
two sides' label maps (float32), and between medseg bf16 and float32. In-process figures,
labelled as such: one forward pass of the network on one window (CPU ms, 1 thread), with
PyTorch's own kernel choice and with medseg's (``medseg.inference.cpu_kernels``).
``--memory`` adds the peak RSS of predicting a synthetic 512x512x300 CT volume.

Usage: python benchmarks/predict.py [--model RUN_OR_CHECKPOINT] [--cases 300] [--repeats 3]
Prints one JSON line (a table on stderr). Without --model the network is randomly
initialised from the hippocampus plan (same cost, meaningless labels), which the output
says.
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
PRECISIONS = ("fp32", "bf16")


# --- the MONAI recipe (run in its own process) ----------------------------------------------


def monai_recipe(in_dir: Path, out_dir: Path, checkpoint: Path, workers: int,
                 precision: str) -> None:
    """MONAI's usual dictionary-transform inference pipeline over every file of ``in_dir``,
    with medseg's network and weights; ``bf16`` runs the network under autocast."""
    import torch
    from monai.data import DataLoader, Dataset, decollate_batch
    from monai.inferers import sliding_window_inference
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

    net, roi = monai_network(checkpoint)
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
    bf16 = precision == "bf16"
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for batch in loader:
            batch["pred"] = sliding_window_inference(batch["image"], roi, 2, net, overlap=0.5,
                                                     mode="gaussian").float()
            for item in decollate_batch(batch):
                post(item)


def monai_network(checkpoint: Path):
    """medseg's network as a MONAI user builds it: MONAI's DynUNet with the plan's
    configuration (the arguments of ``medseg.models.build_network``), the checkpoint's
    weights loaded strictly (so it is the same network), and the plan's patch as roi.
    The MONAI process imports no medseg code (its start-up stays MONAI's own)."""
    import torch
    from monai.networks.nets import DynUNet

    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    plan = ckpt["plan"]
    config = plan["configurations"][ckpt["config"]]
    strides = config["strides"]
    heads = max(0, min(2, len(strides) - 2)) if config.get("deep_supervision") else 0
    net = DynUNet(len(config["patch_size"]), len(plan["channels"]), len(plan["labels"]),
                  config["kernel_sizes"], strides, strides[1:], filters=config["filters"],
                  norm_name=("INSTANCE", {"affine": True}),
                  act_name=("leakyrelu", {"inplace": True, "negative_slope": 0.01}),
                  deep_supervision=heads > 0, deep_supr_num=max(heads, 1),
                  res_block=bool(config.get("residual", False)))
    net.load_state_dict(ckpt["model"])
    return net, tuple(config["patch_size"])


def _medseg_network(checkpoint: Path):
    """medseg's network and weights, built by medseg (in-process figures)."""
    from medseg.models import build_network, load_checkpoint, load_weights
    from medseg.preprocess.plan import Plan

    ckpt = load_checkpoint(checkpoint)
    plan = Plan.from_dict(ckpt["plan"])
    net = build_network(plan, ckpt["config"])
    load_weights(net, ckpt, checkpoint)
    return net, tuple(plan.configuration(ckpt["config"]).patch_size)


# --- in-process figures ----------------------------------------------------------------------


def forward_probe(checkpoint: Path, repeats: int = 7) -> dict:
    """CPU ms of one forward pass on one window (1 thread, median): PyTorch's own kernel
    choice vs medseg's prepared network, float32 and bfloat16."""
    import torch

    from medseg.inference.predictor import prepare_network
    from medseg.inference.sliding_window import cpu_supports_bfloat16

    torch.set_num_threads(1)
    net, roi = _medseg_network(checkpoint)
    x = torch.randn(1, 1, *roi)
    variants = {"pytorch_fp32": (net.eval(), x)}
    ours, _ = _medseg_network(checkpoint)
    variants["medseg_fp32"] = (prepare_network(ours, torch.device("cpu"), amp=False), x)
    if cpu_supports_bfloat16():
        half, _ = _medseg_network(checkpoint)
        variants["medseg_bf16"] = (prepare_network(half, torch.device("cpu"), amp=True),
                                   x.bfloat16())
    times: dict[str, list[float]] = {name: [] for name in variants}
    with torch.inference_mode():
        for _ in range(repeats + 1):  # the first round warms up
            for name, (model, inp) in variants.items():
                start = time.process_time()
                model(inp)
                times[name].append(1000 * (time.process_time() - start))
    return {"window": list(roi), "threads": 1,
            **{name: round(float(np.median(v[1:])), 1) for name, v in times.items()}}


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
    """Run each command ``repeats`` times, rotating their order; median wall and CPU. The
    last run's output folder of each is kept (``folder / name``)."""
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    names = list(commands)
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            shutil.rmtree(folder / name, ignore_errors=True)
            runs[name].append(timed([*commands[name], str(folder / name)]))
    return {name: {"wall_s": round(float(np.median([w for w, _ in v])), 2),
                   "cpu_s": round(float(np.median([c for _, c in v])), 2),
                   "wall_runs_s": [round(w, 2) for w, _ in v]}
            for name, v in runs.items()}


def medseg_cmd(model: Path, in_dir: Path, *extra: str) -> list[str]:
    """``medseg predict`` over ``in_dir``; the output folder is appended last."""
    return [sys.executable, "-m", "medseg", "predict", "-m", str(model), "-i", str(in_dir),
            "--device", "cpu", "--no-progress", *extra, "-o"]


def monai_cmd(in_dir: Path, workers: int, model: Path, precision: str) -> list[str]:
    """The MONAI recipe over ``in_dir``; the output folder is appended last."""
    return [sys.executable, __file__, "--workers", str(workers), "--model", str(model),
            "--precision", precision, "--monai-recipe", str(in_dir)]


def agreement(a_dir: Path, b_dir: Path, labels: list[int], names: list[str]) -> dict:
    """Dice per label over all voxels of the cases ``names``, and the worst per-case mean
    Dice."""
    import nibabel as nib

    inter = dict.fromkeys(labels, 0)
    total = dict.fromkeys(labels, 0)
    worst = 1.0
    for name in names:
        a_path = a_dir / name
        a_img, b_img = nib.load(a_path), nib.load(b_dir / name)
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


def ratios(speed: dict, precisions: list[str]) -> dict:
    """MONAI time over medseg time: per precision (same work) and the precision gain."""
    out = {}
    for p in precisions:
        m, b = speed[f"medseg_{p}"], speed[f"monai_{p}"]
        out[p] = {"wall": round(b["wall_s"] / m["wall_s"], 2),
                  "cpu": round(b["cpu_s"] / m["cpu_s"], 2)}
    if "bf16" in precisions and "fp32" in precisions:
        m, b = speed["medseg_bf16"], speed["monai_fp32"]
        out["precision_gain_medseg_bf16_vs_monai_fp32"] = {
            "wall": round(b["wall_s"] / m["wall_s"], 2), "cpu": round(b["cpu_s"] / m["cpu_s"], 2)}
    return out


def print_table(speed: dict, cases: int) -> None:
    print(f"{'side':14} {'wall s':>8} {'CPU s':>8} {'vol/s':>7}", file=sys.stderr)
    for name, v in speed.items():
        print(f"{name:14} {v['wall_s']:8.1f} {v['cpu_s']:8.1f} {cases / v['wall_s']:7.2f}",
              file=sys.stderr)


def run(args: argparse.Namespace) -> dict:
    from medseg.inference.sliding_window import cpu_supports_bfloat16

    precisions = [p for p in args.precisions if p != "bf16" or cpu_supports_bfloat16()]
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="medseg-bench-") as tmp_name:
        tmp = Path(tmp_name)
        model = _checkpoint_of(args.model) if args.model else random_model(tmp, args.filters)
        sources = held_out_cases(args.held_out)
        inputs = make_inputs(sources, args.cases, tmp / "in")
        commands = {}
        for p in precisions:
            commands[f"medseg_{p}"] = medseg_cmd(model, inputs,
                                                 *(["--no-amp"] if p == "fp32" else []))
            commands[f"monai_{p}"] = monai_cmd(inputs, args.workers, model, p)
        speed = median_runs(commands, args.repeats, tmp)
        distinct = [f"case_{i:04d}.nii.gz" for i in range(min(len(sources), args.cases))]
        agree = {f"medseg_vs_monai_{p}": agreement(tmp / f"medseg_{p}", tmp / f"monai_{p}",
                                                   [1, 2], distinct) for p in precisions}
        if "bf16" in precisions and "fp32" in precisions:
            agree["medseg_bf16_vs_medseg_fp32"] = agreement(tmp / "medseg_bf16",
                                                            tmp / "medseg_fp32", [1, 2], distinct)
        forward = forward_probe(model)
    load.append(os.getloadavg()[0])
    print_table(speed, args.cases)
    return {
        "benchmark": "predict", "date": time.strftime("%Y-%m-%d"),
        "machine": f"{os.cpu_count()} CPU cores, no GPU",
        "load_avg_1min": [round(v, 1) for v in load],
        "model": str(args.model) if args.model else
        f"random-init hippocampus 3d DynUNet, filters {args.filters or 'as planned'}",
        "cases": args.cases, "repeats": args.repeats,
        "threads": args.threads or "default", "monai_workers": args.workers,
        "whole_process": speed,
        "volumes_per_s": {name: round(args.cases / v["wall_s"], 2) for name, v in speed.items()},
        "ratio_monai_over_medseg": ratios(speed, precisions),
        "agreement": agree,
        "in_process_forward_cpu_ms": forward,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="run folder or checkpoint (default: random)")
    parser.add_argument("--cases", type=int, default=300, help="volumes in the timed folder")
    parser.add_argument("--held-out", type=int, default=40, help="distinct source cases")
    parser.add_argument("--workers", type=int, default=2, help="MONAI DataLoader workers")
    parser.add_argument("--precisions", type=lambda t: t.split(","), default=list(PRECISIONS),
                        help="rows to run: fp32,bf16 (default both; bf16 needs native bf16)")
    parser.add_argument("--memory", action="store_true", help="also run the memory probe")
    parser.add_argument("--memory-overlap", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per side")
    parser.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
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
        monai_recipe(*args.monai_recipe, args.model, args.workers, args.precision)
        return
    if args.memory_probe:
        print(json.dumps(memory_probe(args.memory_overlap)))
        return
    result = run(args)
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
