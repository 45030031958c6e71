"""Does the per-case uncertainty score rank failures? Spearman correlation with Dice.

Predicts every held-out image of a run with ``--uncertainty`` (the same code as
``medseg predict --uncertainty``: every fold, test-time mirroring unless ``--no-tta``),
evaluates the label map against its reference and correlates the per-case score with the
per-case mean Dice (a good score correlates negatively: uncertain cases are the failures).

Classes absent from a case's reference are left out of that case's mean Dice and of the
per-class pairs (the ct_headneck references do not contour every organ on every case);
the deployed score, which cannot know the reference, still averages over every class.

Usage::

    python benchmarks/uncertainty_ranking.py RUN [--images DIR --labels DIR] [--folds F ..]
        [--no-tta] [--device cpu|cuda] [--limit N] [--cases-json PATH]

``--images``/``--labels`` default to RUN/reference/images and RUN/reference/labels (the
pipeline's held-out cases, never trained on); images are matched by case name or
``<case>_0000``. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr
from tqdm import tqdm

from medseg.inference.predictor import InferenceSettings, Predictor
from medseg.inference.uncertainty import predict_with_uncertainty
from medseg.io import read_volume
from medseg.metrics import evaluate_case
from medseg.metrics.cases import list_volumes


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    run = args.run
    images = list_volumes(args.images or run / "reference" / "images")
    labels = list_volumes(args.labels or run / "reference" / "labels")
    pairs = [(case, images.get(case) or images.get(f"{case}_0000"), ref)
             for case, ref in sorted(labels.items())]
    pairs = [p for p in pairs if p[1] is not None][: args.limit or None]
    if len(pairs) < 3:
        sys.exit(f"need at least 3 images with labels, found {len(pairs)}")
    settings = InferenceSettings(tta=not args.no_tta)
    predictor = Predictor.load(run, args.folds, args.config, args.device, settings)
    foreground = [v for v in predictor.plan.label_values if v != 0]
    rows, seconds = [], []
    for case, image_path, ref_path in tqdm(pairs, desc="cases", unit="case", file=sys.stderr):
        image, ref = read_volume(image_path), read_volume(ref_path)
        start = time.perf_counter()
        prediction, uncertainty = predict_with_uncertainty(predictor, image)
        seconds.append(time.perf_counter() - start)
        metrics = evaluate_case(prediction.labels, ref, labels=foreground)
        rows.append(_case_row(case, metrics, ref, uncertainty.score))
    result = _summary(rows, predictor, settings, seconds, run)
    if args.cases_json:
        args.cases_json.write_text(json.dumps(rows, indent=1) + "\n")
    print(json.dumps(result))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="run folder (or configuration/fold folder)")
    parser.add_argument("--images", type=Path, help="held-out images (default RUN/reference)")
    parser.add_argument("--labels", type=Path, help="their labels (default RUN/reference)")
    parser.add_argument("--folds", nargs="+", help="folds to ensemble (default: all trained)")
    parser.add_argument("--config", help="configuration (default 3d, else 2d)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-tta", action="store_true", help="no test-time mirroring")
    parser.add_argument("--limit", type=int, help="only the first N cases (by name)")
    parser.add_argument("--cases-json", type=Path, help="also write the per-case rows here")
    return parser


#: Case-level scores of the uncertainty file compared (the first is the deployed one).
CANDIDATES = ("score", "expected_dice_loss", "mean_entropy_predicted",
              "mean_disagreement_predicted", "mean_entropy")


def _case_row(case: str, metrics: dict, ref: Any, score: dict[str, Any]) -> dict[str, Any]:
    present = [v for v in metrics if (ref.array == v).any()]
    dice = {v: metrics[v]["dice"] for v in present}
    class_scores = {int(v): c["score"] for v, c in score["per_label"].items()}
    return {
        "case": case,
        "mean_dice": float(np.mean(list(dice.values()))) if dice else math.nan,
        **{key: _number(score.get(key)) for key in CANDIDATES},
        "score_present_classes": (float(np.mean([class_scores[v] for v in present]))
                                  if present else math.nan),
        "members": score["members"],
        "dice": {str(v): d for v, d in dice.items()},
        "class_scores": {str(v): class_scores[v] for v in present},
    }


def _number(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _spearman(x: list[float], y: list[float]) -> dict[str, float] | None:
    keep = [i for i in range(len(x)) if math.isfinite(x[i]) and math.isfinite(y[i])]
    if len(keep) < 3:
        return None
    rho, p = spearmanr([x[i] for i in keep], [y[i] for i in keep])
    return {"rho": round(float(rho), 4), "p": float(f"{p:.3g}"), "n": len(keep)}


def _worst_recall(rows: list[dict[str, Any]], fraction: float = 0.2) -> float:
    """Of the worst ``fraction`` of cases by Dice, the share among as many top scores."""
    n = max(1, round(fraction * len(rows)))
    worst = {r["case"] for r in sorted(rows, key=lambda r: (r["mean_dice"], r["case"]))[:n]}
    flagged = {r["case"] for r in sorted(rows, key=lambda r: (-r["score"], r["case"]))[:n]}
    return round(len(worst & flagged) / n, 3)


def _summary(rows: list[dict[str, Any]], predictor: Predictor, settings: InferenceSettings,
             seconds: list[float], run: Path) -> dict[str, Any]:
    scores, dice = [r["score"] for r in rows], [r["mean_dice"] for r in rows]
    pairs = [(r["class_scores"][v], r["dice"][v]) for r in rows for v in r["dice"]]
    return {
        "benchmark": "uncertainty_ranking",
        "run": str(run), "model": predictor.describe(), "date": date.today().isoformat(),
        "n_cases": len(rows), "ensemble_members": rows[0]["members"], "tta": settings.tta,
        "spearman_score_vs_mean_dice": _spearman(scores, dice),
        "spearman_class_score_vs_class_dice": _spearman([p[0] for p in pairs],
                                                        [p[1] for p in pairs]),
        "spearman_score_present_classes_vs_mean_dice": _spearman(
            [r["score_present_classes"] for r in rows], dice),
        "spearman_alternatives_vs_mean_dice": {
            key: _spearman([r[key] for r in rows], dice) for key in CANDIDATES[1:]},
        "worst_20pct_recall": _worst_recall(rows),
        "mean_dice": round(float(np.nanmean(dice)), 4),
        "dice_min_max": [round(float(np.nanmin(dice)), 4), round(float(np.nanmax(dice)), 4)],
        "seconds_per_case_median": round(float(np.median(seconds)), 2),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {predictor.device}",
        "load_average": [round(x, 1) for x in os.getloadavg()],
    }


if __name__ == "__main__":
    raise SystemExit(main())
