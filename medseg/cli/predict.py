"""``medseg predict -m MODEL -i INPUT [INPUT ...] -o OUT_DIR``: batch segmentation."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

from medseg.core.errors import EXIT_OK, EXIT_PARTIAL
from medseg.inference.batch import (
    FORMATS,
    BatchOptions,
    check_outputs,
    predict_batch,
    summary_table,
    totals_line,
)
from medseg.inference.distributed import ModelSpec, predict_on_cluster
from medseg.inference.estimate import budgeted_options, estimate_jobs
from medseg.inference.jobs import discover_jobs
from medseg.inference.memory import DEFAULT_FRACTION, default_budget, parse_gb
from medseg.inference.predictor import InferenceSettings, Predictor
from medseg.inference.uncertainty import check_supported
from medseg.models.runtime import flush_denormals


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="segment images with a trained model (NIfTI, DICOM-SEG or RTSTRUCT output)",
        description=(
            "Predict label maps on each input's own grid (same shape and affine). INPUT is "
            "an image file, a folder of image files, a DICOM series folder or a study folder "
            "(every series matching the model's channel, or those chosen with --series). "
            "Outputs are named after the inputs; existing ones are skipped unless "
            "--overwrite. Exit code 3 when some cases failed (they are listed)."
        ),
    )
    parser.add_argument("-m", "--model", type=Path, required=True,
                        help="run folder (all trained folds are ensembled), configuration or "
                             "fold folder, or one checkpoint file")
    parser.add_argument("-i", "--input", type=Path, nargs="+", required=True, metavar="INPUT",
                        help="image files, folders of images, DICOM series or study folders")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUT_DIR",
                        help="output folder (created)")
    parser.add_argument("--format", choices=FORMATS, nargs="+", default=["nifti"],
                        metavar="FORMAT",
                        help="nifti (default), dicom-seg and/or rtstruct (DICOM inputs); "
                             "several at once: --format nifti rtstruct")
    parser.add_argument("--folds", nargs="+", metavar="FOLD",
                        help="folds of the run folder to ensemble (default: all trained)")
    parser.add_argument("--config", help="trained configuration to use (default: 3d, else 2d)")
    parser.add_argument("--series", metavar="UID|DESCRIPTION",
                        help="DICOM series to predict in study folders")
    parser.add_argument("--regularize-slices", action="store_true",
                        help="resample DICOM series with missing slices, non-uniform spacing "
                             "or gantry tilt onto a regular grid (the output is on that grid)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                        help="test-time mirroring (default: the plan's choice, on where this "
                             "kind of device predicts a median case with it within a minute)")
    parser.add_argument("--overlap", type=float, default=InferenceSettings.overlap,
                        help="sliding-window overlap in [0, 1) "
                             f"(default {InferenceSettings.overlap:g})")
    parser.add_argument("--batch-size", type=int,
                        help="windows per forward pass (default: 2 for 3D, the plan's for 2D)")
    parser.add_argument("--no-amp", action="store_true",
                        help="full float32 (default: mixed precision where supported)")
    parser.add_argument("--largest-component", action=argparse.BooleanOptionalAction,
                        default=None,
                        help="keep only the largest connected component of every label "
                             "(--no-largest-component: of none; default: of the labels for "
                             "which this raised the model's validation Dice)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--save-probabilities", action="store_true",
                        help="also write <case>_probabilities.npz (float16, source grid)")
    parser.add_argument("--uncertainty", action="store_true",
                        help="also write <case>_uncertainty.nii.gz (entropy of the ensembled "
                             "probabilities, 0-1), <case>_disagreement.nii.gz (between folds "
                             "and mirrorings, when there are several) and the per-case score "
                             "<case>_uncertainty.json")
    parser.add_argument("--report", action="store_true",
                        help="write OUT_DIR/report/index.html: the cases ranked by "
                             "uncertainty, each in a slice viewer with its label volumes and "
                             "QC montage (implies --uncertainty)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--max-ram", metavar="GB",
                        help="memory budget in GB (10^9 bytes): chooses accumulator precision "
                             "(float16, on disk), windows per forward and inversion slabs to "
                             "stay below it, and refuses at once when a case cannot fit "
                             f"(default: {int(DEFAULT_FRACTION * 100)}%% of the memory "
                             "available at start)")
    parser.add_argument("--estimate", action="store_true",
                        help="print each case's expected peak memory and number of windows "
                             "(headers only, the network is not run) and exit")
    cluster = parser.add_mutually_exclusive_group()
    cluster.add_argument("--workers", type=int, metavar="N",
                         help="predict on a local Dask cluster of N worker processes "
                              "(needs medseg[distributed])")
    cluster.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                         help="predict on a running Dask cluster (workers must see the "
                              "model, inputs and output folder at the same paths)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    flush_denormals()  # before torch starts its threads
    settings = InferenceSettings(
        overlap=args.overlap, tta=args.tta, batch_size=args.batch_size, amp=not args.no_amp,
        largest_component=args.largest_component, progress=not args.no_progress,
    )
    predictor = Predictor.load(args.model, args.folds, args.config, args.device, settings)
    jobs = discover_jobs(args.input, list(predictor.plan.channels.values()), args.series,
                         regularize=args.regularize_slices)
    formats = tuple(dict.fromkeys(args.format))
    options = BatchOptions(formats, args.overwrite, args.save_probabilities,
                           progress=not args.no_progress,
                           uncertainty=args.uncertainty or args.report)
    check_outputs(jobs, args.output, options)  # refuse bad outputs before any other output
    if options.uncertainty:
        check_supported(predictor)
    print(f"model: {predictor.describe()}; {len(jobs)} case(s)", file=sys.stderr)
    cluster = args.workers is not None or args.scheduler is not None
    budget = parse_gb(args.max_ram) if args.max_ram is not None else default_budget()
    estimate = estimate_jobs(predictor, jobs, options, None if cluster else budget,
                             disk_folder=args.output if args.output.is_dir() else None)
    if args.estimate:
        print(estimate.text())
        return EXIT_OK
    options = budgeted_options(options, estimate)
    start = time.perf_counter()
    if cluster:
        spec = ModelSpec(args.model, tuple(args.folds) if args.folds else None, args.config,
                         args.device, replace(settings, progress=False))
        results = predict_on_cluster(spec, jobs, args.output, options, args.scheduler,
                                     args.workers)
    else:
        results = predict_batch(predictor, jobs, args.output, options)
    print(summary_table(results, predictor.label_names))
    print(totals_line(results, time.perf_counter() - start))
    failed = [r for r in results if r.status == "failed"]
    for r in failed:
        print(f"medseg: case {r.name} failed: {r.error}", file=sys.stderr)
    if args.report:
        from medseg.cli._review import write_prediction_report

        review = write_prediction_report(predictor, jobs, results, args.output, formats,
                                         progress=not args.no_progress)
        print(f"report: {review.index}")
    return EXIT_PARTIAL if failed else EXIT_OK
