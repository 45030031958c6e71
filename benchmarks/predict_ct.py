"""Full-size CT: ``medseg predict`` vs MONAI's inference recipe, whole processes.

Input: the real CT series of ``../shared/data/dicom/ct_lung_rtstruct/LUNG1-001/CT``
(512x512x134, 0.98x0.98x3 mm) read by medseg and stacked along the slices into a longer
volume (``--slices``, default 536 = 4 copies; 1000 for the long case), saved as an int16
NIfTI (HU) with the series' own affine extended along k. The model (``--model``, a medseg
checkpoint of a CT plan such as the one trained on ``ct_headneck``, planned at ~3.9x3.9x2.5
mm) makes both sides resample, down before the network and back up after it.

* medseg: ``medseg predict -m CKPT -i ct.nii -o OUT --device cpu`` (``--no-amp``: float32,
  the precision of the speed ratio; the default bf16 run is reported as its own row);
* MONAI: LoadImaged, EnsureChannelFirstd, Orientationd(RAS), Spacingd(plan spacing,
  bilinear), ScaleIntensityRanged (= medseg's CT clip + z-score), sliding_window_inference
  (plan patch, batch 2, overlap 0.5, Gaussian), softmax, Invertd (bilinear), AsDiscreted
  (argmax), SaveImaged, with the same network and weights in float32.

Each side is a fresh process (start-up, model load, read, preprocess, windows, inversion,
write); wall, CPU and peak RSS are those of that process alone. Agreement: Dice per label
between the two label maps. ``--classes 14`` replaces the model's head by a randomly
initialised 14-class one (same network otherwise; the output says so); ``--no-monai``
runs medseg with its defaults only (the memory runs: MONAI's full-resolution 14-class
inversion alone needs > 10 GB at 1000 slices).

Usage: python benchmarks/predict_ct.py --model CKPT [--slices 536] [--classes 8]
       [--repeats 1] [--no-monai]
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CT_SERIES = ROOT.parent / "shared" / "data" / "dicom" / "ct_lung_rtstruct" / "LUNG1-001" / "CT"
GB = 1e9


# --- inputs -----------------------------------------------------------------------------------


def make_ct(path: Path, slices: int) -> dict:
    """The real CT stacked to ``slices`` slices (int16 HU NIfTI); its grid facts."""
    from medseg.core import Volume
    from medseg.io import read_volume, write_volume

    ct = read_volume(CT_SERIES)
    reps = -(-slices // ct.spatial_shape[2])
    array = np.tile(np.rint(ct.array).astype(np.int16), (1, 1, 1, reps))[..., :slices]
    write_volume(Volume(np.ascontiguousarray(array), ct.affine, {}), path)
    return {"shape": list(array.shape[1:]), "spacing": [round(s, 4) for s in ct.spacing]}


def model_with_classes(checkpoint: Path, n_classes: int, folder: Path) -> Path:
    """``checkpoint`` itself, or its plan and network with a random ``n_classes`` head."""
    import torch

    from medseg.models import build_network, load_checkpoint, save_checkpoint
    from medseg.preprocess import Plan

    ckpt = load_checkpoint(checkpoint)
    plan = Plan.from_dict(ckpt["plan"])
    if n_classes == plan.n_classes:
        return checkpoint
    plan = replace(plan, labels={k: f"class{k}" if k else "background"
                                 for k in range(n_classes)})
    torch.manual_seed(0)
    net = build_network(plan, ckpt["config"])
    own = net.state_dict()
    kept = {k: v for k, v in ckpt["model"].items() if k in own and own[k].shape == v.shape}
    own.update(kept)
    path = folder / f"model_{n_classes}.pt"
    save_checkpoint(path, {"plan": plan.to_dict(), "config": ckpt["config"], "fold": 0,
                           "model": own, "epoch": 0, "best_metric": 0.0})
    return path


# --- the MONAI recipe (own process) -----------------------------------------------------------


def monai_recipe(image: Path, out_dir: Path, checkpoint: Path) -> None:
    import torch
    from monai.inferers import sliding_window_inference
    from monai.transforms import (
        AsDiscreted,
        Compose,
        EnsureChannelFirstd,
        Invertd,
        LoadImaged,
        Orientationd,
        SaveImaged,
        ScaleIntensityRanged,
        Spacingd,
    )

    from medseg.models import build_network, load_checkpoint, load_weights
    from medseg.preprocess import Plan

    ckpt = load_checkpoint(checkpoint)
    plan = Plan.from_dict(ckpt["plan"])
    cfg = plan.configuration(ckpt["config"])
    net = build_network(plan, ckpt["config"])
    load_weights(net, ckpt, checkpoint)
    net.eval()
    norm = plan.normalization[0]
    lo, hi = norm["clip"]
    mean, std = norm["mean"], norm["std"]
    pre = Compose([
        LoadImaged("image", image_only=False), EnsureChannelFirstd("image"),
        Orientationd("image", axcodes="RAS"),
        Spacingd("image", pixdim=plan.target_spacing, mode="bilinear"),
        ScaleIntensityRanged("image", a_min=lo, a_max=hi, b_min=(lo - mean) / std,
                             b_max=(hi - mean) / std, clip=True),
    ])
    post = Compose([
        Invertd("pred", transform=pre, orig_keys="image", nearest_interp=False),
        AsDiscreted("pred", argmax=True),
        SaveImaged("pred", output_dir=str(out_dir), output_postfix="", output_ext=".nii",
                   separate_folder=False, output_dtype=np.uint8, resample=False,
                   print_log=False),
    ])
    data = pre({"image": str(image)})
    with torch.inference_mode():
        logits = sliding_window_inference(data["image"][None], tuple(cfg.patch_size), 2, net,
                                          overlap=0.5, mode="gaussian", sigma_scale=0.125)
        data["pred"] = torch.softmax(logits[0], 0)
    del logits
    post(data)


# --- measuring --------------------------------------------------------------------------------


def measure(cmd: list[str]) -> dict:
    """Wall, CPU and peak RSS of ``cmd`` run in a fresh wrapper process (its only child)."""
    wrapper = [sys.executable, __file__, "--measure-child", json.dumps(cmd)]
    out = subprocess.run(wrapper, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure_child(cmd: list[str]) -> None:
    start = time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{cmd[:4]} failed: {done.stderr[-3000:]}")
    print(json.dumps({"wall_s": round(wall, 2), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
                      "peak_rss_gb": round(usage.ru_maxrss * 1024 / GB, 3)}))


def median_of(runs: list[dict]) -> dict:
    keys = ("wall_s", "cpu_s", "peak_rss_gb")
    out = {k: round(float(np.median([r[k] for r in runs])), 3) for k in keys}
    out["wall_runs_s"] = [r["wall_s"] for r in runs]
    return out


def label_report(a_path: Path, b_path: Path | None, source: Path) -> dict:
    """Grid check against the input, voxel counts, and Dice per label against ``b_path``."""
    import nibabel as nib

    src = nib.load(source)
    a_img = nib.load(a_path)
    a = np.asarray(a_img.dataobj)
    report = {"same_grid": bool(a.shape[:3] == src.shape[:3]
                                and np.allclose(a_img.affine, src.affine, atol=1e-4)),
              "voxels": {str(int(v)): int(c) for v, c in zip(*np.unique(a, return_counts=True),
                                                              strict=True)}}
    if b_path is not None:
        b_img = nib.load(b_path)
        b = np.asarray(b_img.dataobj).reshape(a.shape)
        report["other_same_grid"] = bool(np.allclose(b_img.affine, src.affine, atol=1e-4))
        report["agreement"] = float((a == b).mean())
        dice = {}
        for v in sorted(set(np.unique(a)) | set(np.unique(b))):
            if v == 0:
                continue
            x, y = a == v, b == v
            dice[str(int(v))] = round(2 * float((x & y).sum()) / float(x.sum() + y.sum()), 4)
        report["dice"] = dice
    return report


# --- driver -----------------------------------------------------------------------------------


def medseg_cmd(model: Path, image: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "medseg.cli.main", "predict", "-m", str(model), "-i",
            str(image), "-o", str(out), "--device", "cpu", "--no-progress", "--overwrite",
            *extra]


def estimate(model: Path, image: Path, out: Path) -> str:
    cmd = medseg_cmd(model, image, out, "--estimate")
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="medseg checkpoint of a CT plan")
    parser.add_argument("--slices", type=int, default=536,
                        help="slices of the stacked CT (134: the series as it is)")
    parser.add_argument("--classes", type=int, help="replace the head (random) for K classes")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--no-monai", action="store_true", help="medseg only")
    parser.add_argument("--workdir", type=Path, help="keep inputs/outputs here")
    parser.add_argument("--measure-child", help=argparse.SUPPRESS)
    parser.add_argument("--monai-recipe", nargs=3, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure_child:
        measure_child(json.loads(args.measure_child))
        return
    if args.monai_recipe:
        monai_recipe(*args.monai_recipe)
        return
    if args.model is None:
        parser.error("--model is required")
    with tempfile.TemporaryDirectory(prefix="medseg-ct-") as tmp_name:
        tmp = args.workdir or Path(tmp_name)
        tmp.mkdir(parents=True, exist_ok=True)
        image = tmp / "in" / "ct.nii"
        grid = make_ct(image, args.slices)
        model = args.model
        if args.classes:
            model = model_with_classes(args.model, args.classes, tmp)
        sides = {"medseg_default": medseg_cmd(model, image, tmp / "medseg_default")}
        if not args.no_monai:
            sides["medseg_fp32"] = medseg_cmd(model, image, tmp / "medseg_fp32", "--no-amp")
            sides["monai_fp32"] = [sys.executable, __file__, "--monai-recipe", str(image),
                                   str(tmp / "monai_fp32"), str(model)]
        runs: dict[str, list[dict]] = {name: [] for name in sides}
        for r in range(args.repeats):
            order = list(sides) if r % 2 == 0 else list(reversed(sides))
            for name in order:
                runs[name].append(measure(sides[name]))
        result = {
            "benchmark": "predict_ct", "date": time.strftime("%Y-%m-%d"),
            "machine": f"{os.cpu_count()} CPU cores, no GPU",
            "load_avg": [round(x, 2) for x in os.getloadavg()],
            "input": {**grid, "source": "LUNG1-001 CT stacked along k"},
            "model": str(args.model) + (f" with a random {args.classes}-class head"
                                        if args.classes else ""),
            "estimate": estimate(model, image, tmp / "estimate"),
            "repeats": args.repeats,
            **{name: median_of(v) for name, v in runs.items()},
        }
        result["labels_default"] = label_report(tmp / "medseg_default" / "ct.nii", None, image)
        if not args.no_monai:
            result["labels_fp32_vs_monai"] = label_report(
                tmp / "medseg_fp32" / "ct.nii", tmp / "monai_fp32" / "ct.nii", image)
            result["labels_default_vs_fp32"] = label_report(
                tmp / "medseg_default" / "ct.nii", tmp / "medseg_fp32" / "ct.nii", image)
            m, b = result["medseg_fp32"], result["monai_fp32"]
            result["ratio_wall_fp32"] = round(b["wall_s"] / m["wall_s"], 2)
            result["ratio_cpu_fp32"] = round(b["cpu_s"] / m["cpu_s"], 2)
            result["ratio_wall_default_vs_monai"] = round(
                b["wall_s"] / result["medseg_default"]["wall_s"], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
