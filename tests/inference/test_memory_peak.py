"""Peak memory of a whole ``medseg predict`` process on a synthetic large volume that is
resampled both ways stays under a ``--max-ram`` budget that the whole-volume inversion
(a full-resolution float32 copy of all 8 class maps) cannot meet."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import torch

from medseg.core import Volume
from medseg.io import read_volume, write_volume
from medseg.models import build_network, save_checkpoint
from medseg.preprocess.plan import Plan

ROOT = Path(__file__).resolve().parents[2]
SHAPE = (256, 256, 128)  # 8.4 M voxels at 1 mm, predicted at 4 mm
N_CLASSES = 8

CHILD = textwrap.dedent("""
    import json, sys
    from medseg.cli.main import build_parser, main
    from medseg.inference.memory import current_rss, peak_rss
    build_parser()  # every command module (torch, MONAI, ...) loaded before the base
    base = current_rss()
    budget = base + int(sys.argv[1])
    code = main(["predict", "-m", sys.argv[2], "-i", sys.argv[3], "-o", sys.argv[4],
                 "--device", "cpu", "--no-progress", "--max-ram", str(budget / 1e9)])
    peak = peak_rss()  # (ru_maxrss would include the pytest process's memory at the fork)
    print(json.dumps({"base": base, "budget": budget, "peak": peak, "code": code}))
""")


def write_model(path: Path) -> None:
    layer = {"kernel_sizes": [[3, 3, 3]] * 3, "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
             "filters": [4, 8, 8], "deep_supervision": False}
    plan = Plan.from_dict({
        "format": "medseg-plan-v1", "dataset_name": "Peak",
        "labels": {str(k): f"class{k}" for k in range(N_CLASSES)}, "channels": {"0": "CT"},
        "target_spacing": [4.0, 4.0, 4.0],
        "normalization": [{"scheme": "ct", "clip": [-1000, 1000], "mean": 0.0, "std": 300.0}],
        "image_interpolation": "linear", "crop_to_nonzero": True,
        "configurations": {"3d": {"patch_size": [32, 32, 32], "batch_size": 2,
                                  "spacing": [4.0, 4.0, 4.0], **layer}},
    })
    torch.manual_seed(0)
    save_checkpoint(path, {"plan": plan.to_dict(), "config": "3d", "fold": 0,
                           "model": build_network(plan, "3d").state_dict(), "epoch": 1,
                           "best_metric": 0.0})


def test_predict_process_stays_under_a_budget_the_whole_volume_path_exceeds(tmp_path):
    write_model(tmp_path / "model.pt")
    rng = np.random.default_rng(0)
    array = rng.integers(-1000, 1000, size=(1, *SHAPE), dtype=np.int16)
    source = tmp_path / "in" / "big.nii"
    write_volume(Volume(array, np.diag([-1.0, -1.0, 1.0, 1.0]), {}), source)
    whole_volume_bytes = N_CLASSES * int(np.prod(SHAPE)) * 4  # invert_probabilities' result
    extra = int(0.8 * whole_volume_bytes)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(extra), str(tmp_path / "model.pt"), str(source),
         str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["code"] == 0
    assert result["peak"] <= result["budget"], result
    # the whole-volume path allocates at least this much on top of the same base
    assert result["budget"] < result["base"] + whole_volume_bytes
    labels = read_volume(tmp_path / "out" / "big.nii")
    assert labels.spatial_shape == SHAPE and labels.dtype == np.uint8
