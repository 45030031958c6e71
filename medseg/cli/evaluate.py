"""``medseg evaluate PRED GT -o REPORT_DIR``: per-class metrics, report and QC pictures."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

from medseg.core.errors import EXIT_OK, EXIT_PARTIAL, ConfigError
from medseg.metrics import evaluate_folders, parse_labels, parse_regions
from medseg.metrics.batch import DEFAULT_QC_CASES
from medseg.metrics.evaluate import DEFAULT_NSD_TOLERANCE_MM
from medseg.metrics.report import format_summary


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="compare predicted label volumes with reference ones (Dice, HD95, NSD, ...)",
        description=(
            "Match prediction and reference label volumes by case name (any format medseg "
            "reads), compute Dice, IoU, precision, recall, HD95, ASSD, normalized surface "
            "Dice and volumes per class, and write per_case.csv, summary.json, box plots, "
            "QC montages of the worst cases and index.html into REPORT_DIR."
        ),
    )
    parser.add_argument("pred", type=Path, help="folder of predicted label volumes")
    parser.add_argument("gt", type=Path, help="folder of reference label volumes")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="REPORT_DIR",
                        help="folder for the report (created; must be outside PRED and GT)")
    parser.add_argument("--labels", metavar="V:NAME,...",
                        help="labels to evaluate, e.g. 1:Anterior,2:Posterior (default: "
                             "dataset.json in or above GT, else every value found)")
    parser.add_argument(
        "--nsd-tolerance", type=_at_least(0.0, float), default=DEFAULT_NSD_TOLERANCE_MM,
        metavar="MM",
        help=f"normalized surface Dice tolerance in mm (default {DEFAULT_NSD_TOLERANCE_MM:g})",
    )
    parser.add_argument("--images", type=Path, metavar="DIR",
                        help="folder of images (same case names) to draw QC outlines on")
    parser.add_argument("--resample-pred", action="store_true",
                        help="resample predictions on another grid onto the reference grid "
                             "(nearest neighbour) instead of failing the case")
    parser.add_argument(
        "--qc-cases", type=_at_least(0, int), default=DEFAULT_QC_CASES, metavar="N",
        help=f"QC montages for the N worst cases (default {DEFAULT_QC_CASES})",
    )
    parser.add_argument(
        "--regions", type=_regions, metavar="NAME=V,V;...",
        help="also score unions of labels, e.g. for BraTS "
             "'whole_tumour=1,2,3,4;tumour_core=1,3,4;enhancing=4'")
    parser.add_argument(
        "--partial-labels", action="store_true",
        help="a class absent from a reference was not annotated there: do not score it in "
             "that case (per_case.csv shows scored=0)")
    parser.add_argument(
        "--workers", type=_at_least(1, int), default=min(4, os.cpu_count() or 1), metavar="N",
        help="parallel processes (default: up to 4)",
    )
    parser.set_defaults(func=run)


def _at_least(minimum: float, kind: type) -> Callable[[str], float]:
    """argparse type: a number of ``kind`` not below ``minimum``."""

    def convert(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {text}")
        return value

    return convert


def _regions(text: str) -> dict[str, tuple[int, ...]]:
    try:
        return parse_regions(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    labels = parse_labels(args.labels) if args.labels is not None else None
    result = evaluate_folders(
        args.pred, args.gt, args.output, labels=labels, nsd_tolerance=args.nsd_tolerance,
        workers=args.workers, images_dir=args.images, resample_pred=args.resample_pred,
        qc_cases=args.qc_cases, regions=args.regions, partial_labels=args.partial_labels,
    )
    print(format_summary(result.summary))
    if result.failed:
        print(f"{len(result.failed)} case(s) failed (see summary.json 'failed'):")
        for case, message in list(result.failed.items())[:5]:
            print(f"  {case}: {message}")
    if result.missing_predictions:
        print(f"{len(result.missing_predictions)} reference case(s) have no prediction")
    print(f"report: {result.out_dir / 'index.html'}")
    return EXIT_OK if result.complete else EXIT_PARTIAL
