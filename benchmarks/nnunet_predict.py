"""Benchmark: medseg's prediction with an nnU-Net v2 model folder against nnU-Net's own
predictor, on the same model folder and inputs (no test-time mirroring, float32 networks,
CPU).

    python benchmarks/nnunet_predict.py hippocampus [--work DIR] [--repeats 1]
    python benchmarks/nnunet_predict.py ct [--work DIR] [--repeats 3]

Model folders come from ``benchmarks/nnunet_models.py`` (built with nnU-Net's code on
first use, not timed). Two parts, one JSON line:

- agreement: ``nnUNetv2_predict_from_modelfolder --save_probabilities --disable_tta``
  against ``Predictor.load(model).predict(..., with_probabilities=True)``: mean and max
  absolute difference of the probabilities on the source grid, and the Dice of each
  label between the two label maps (minimum over cases and labels; a label absent from
  both maps of a case is skipped);
- speed and memory (whole processes, start-up included, run alternately ``--repeats``
  times; medians): ``nnUNetv2_predict -d ID -c 3d_fullres -f all --disable_tta -device
  cpu`` (nnU-Net's defaults: 3 preprocessing and 3 export processes) against ``medseg
  predict -m MODEL --folds all --no-amp --device cpu``; wall seconds and the peak RSS of
  each process tree (``benchmarks/process_tree.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.nnunet_models import CT_ID, DEFAULT_WORK, HIPPO_ID, build_ct, build_hippocampus  # noqa: E402
from benchmarks.process_tree import machine, run_measured  # noqa: E402
from tests.nnunet_builder import nnunet_env  # noqa: E402

BIN = Path(sys.executable).parent


def nnunet_probabilities(model: Path, inputs: Path, out: Path, work: Path) -> None:
    cmd = [str(BIN / "nnUNetv2_predict_from_modelfolder"), "-i", str(inputs), "-o", str(out),
           "-m", str(model), "-f", "all", "--disable_tta", "-device", "cpu",
           "--save_probabilities", "-npp", "1", "-nps", "1"]
    done = run_measured(cmd, nnunet_env(work, small=False))
    if done.returncode:
        raise RuntimeError(f"nnU-Net failed:\n{done.tail}")


def agreement(model: Path, inputs: Path, work: Path) -> dict[str, object]:
    from medseg.data.reading import stack_channels
    from medseg.inference import InferenceSettings, Predictor
    from medseg.io import read_volume

    out = Path(tempfile.mkdtemp(prefix="nnunet-agree-", dir=work))
    nnunet_probabilities(model, inputs, out, work)
    predictor = Predictor.load(model, ["all"], device="cpu",
                               settings=InferenceSettings(amp=False, tta=False))
    means, maxes, dices = [], [], []
    for image in sorted(inputs.glob("*_0000.nii.gz")):
        case = image.name[: -len("_0000.nii.gz")]
        volume = stack_channels([read_volume(image)], case)
        pred = predictor.predict(volume, with_probabilities=True)
        ref = np.load(out / f"{case}.npz")["probabilities"]  # (K, z, y, x)
        diff = np.abs(pred.probabilities.transpose(0, 3, 2, 1) - ref)
        means.append(float(diff.mean()))
        maxes.append(float(diff.max()))
        del diff, ref
        theirs = np.asarray(nib.load(out / f"{case}.nii.gz").dataobj)
        dices.append(label_dice(pred.labels.array[0], theirs, predictor.label_names))
    shutil.rmtree(out)
    worst = min((d for case in dices for d in case.values()), default=float("nan"))
    return {"cases": len(means), "prob_mean_abs_diff": max(means),
            "prob_max_abs_diff": max(maxes), "min_label_dice": worst,
            "label_dice_per_case": dices}


def label_dice(a: np.ndarray, b: np.ndarray, names: dict[int, str]) -> dict[str, float]:
    out = {}
    for value, name in names.items():
        if value == 0:
            continue
        x, y = a == value, b == value
        total = int(x.sum() + y.sum())
        if total:
            out[name] = round(2 * int((x & y).sum()) / total, 5)
    return out


def speed(model: Path, inputs: Path, dataset_id: int, work: Path,
          repeats: int) -> dict[str, object]:
    env = nnunet_env(work, small=False)
    runs: dict[str, list] = {"nnunet": [], "medseg": []}
    commands = {
        "nnunet": [str(BIN / "nnUNetv2_predict"), "-i", str(inputs), "-o", "{out}", "-d",
                   str(dataset_id), "-c", "3d_fullres", "-f", "all", "--disable_tta",
                   "-device", "cpu"],
        "medseg": [str(BIN / "medseg"), "predict", "-m", str(model), "--folds", "all",
                   "--no-amp", "--no-tta", "--device", "cpu", "--no-progress", "-i", str(inputs),
                   "-o", "{out}"],
    }
    medseg_env = {**env, "PYTHONPATH": str(REPO)}
    for _ in range(repeats):
        for side in ("nnunet", "medseg"):
            out = Path(tempfile.mkdtemp(prefix=f"{side}-", dir=work))
            cmd = [str(out) if c == "{out}" else c for c in commands[side]]
            done = run_measured(cmd, env if side == "nnunet" else medseg_env)
            if done.returncode:
                raise RuntimeError(f"{side} failed:\n{done.tail}")
            runs[side].append(done)
            shutil.rmtree(out)
    med = {side: {"seconds": statistics.median(r.seconds for r in rs),
                  "peak_rss_gb": statistics.median(r.peak_rss_gb for r in rs),
                  "all_seconds": [round(r.seconds, 1) for r in rs],
                  "all_peak_rss_gb": [round(r.peak_rss_gb, 3) for r in rs]}
           for side, rs in runs.items()}
    return {**med, "speedup": med["nnunet"]["seconds"] / med["medseg"]["seconds"],
            "rss_ratio": med["medseg"]["peak_rss_gb"] / med["nnunet"]["peak_rss_gb"],
            "commands": {k: " ".join(v) for k, v in commands.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task", choices=("hippocampus", "ct"))
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=250,
                        help="hippocampus: training iterations of the model (when built)")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-agreement", action="store_true")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    start = time.time()
    built = build_hippocampus(args.work, args.iterations) if args.task == "hippocampus" \
        else build_ct(args.work)
    model, inputs = Path(built["model"]), Path(built["inputs"])
    if args.task == "hippocampus":  # predict the held-out images only (labels sit beside)
        images = Path(tempfile.mkdtemp(prefix="heldout-", dir=args.work))
        for f in inputs.glob("*_0000.nii.gz"):
            os.link(f, images / f.name)
        inputs = images
    result: dict[str, object] = {"benchmark": "nnunet_predict", "task": args.task,
                                 "model": str(model), "date": time.strftime("%Y-%m-%d"),
                                 "machine_before": machine()}
    if not args.skip_agreement:
        result["agreement"] = agreement(model, inputs, args.work)
    if not args.skip_speed:
        dataset_id = HIPPO_ID if args.task == "hippocampus" else CT_ID
        result["speed"] = speed(model, inputs, dataset_id, args.work, args.repeats)
    result["machine_after"] = machine()
    result["total_seconds"] = round(time.time() - start, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
