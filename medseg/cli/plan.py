"""``medseg plan DATASET --out RUN_DIR``: validate, fingerprint and plan a dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

from medseg.cli._annotations import add_structure_options
from medseg.core.errors import EXIT_OK
from medseg.data import DEFAULT_LABEL_SOURCE, LABEL_SOURCES, describe_dataset, load_dataset
from medseg.io.structures import parse_structure_args
from medseg.preprocess import plan_run


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="validate a dataset and write its fingerprint and plan.json",
        description="Discover and validate a dataset (Decathlon, images/ + labels/ folders, "
                    "or DICOM studies labelled by mask series, RTSTRUCT or DICOM-SEG files), "
                    "then write dataset.json, "
                    "fingerprint.json and an editable plan.json into RUN_DIR.",
    )
    parser.add_argument("dataset", type=Path, help="dataset folder")
    parser.add_argument("--out", type=Path, required=True, help="run folder to write")
    parser.add_argument("--strict", action="store_true",
                        help="fail if any case is invalid (all problems are listed) "
                             "instead of excluding the invalid cases")
    parser.add_argument("--mask-pattern", default="MaskTumor",
                        help="DICOM: SeriesDescription pattern of mask series")
    parser.add_argument("--channels", nargs="+", metavar="DESCRIPTION",
                        help="DICOM: series descriptions to use as channels, in order")
    parser.add_argument("--label-source", choices=LABEL_SOURCES, default=DEFAULT_LABEL_SOURCE,
                        help="DICOM: labels from mask series (default), RTSTRUCT or DICOM-SEG "
                             "files")
    add_structure_options(parser, "--structures")  # rtstruct/dicom-seg label sources
    parser.add_argument("--regularize-slices", action="store_true",
                        help="DICOM: resample series with missing slices, non-uniform "
                             "spacing or gantry tilt onto a regular grid instead of "
                             "excluding the case")
    parser.add_argument("--memory-gb", type=float, default=8.0,
                        help="GPU memory budget for patch/batch size (default 8)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    dataset = load_dataset(
        args.dataset, mask_pattern=args.mask_pattern, channels=args.channels,
        regularize_slices=args.regularize_slices, label_source=args.label_source,
        structures=parse_structure_args(args.structures) if args.structures else None,
        overlap=args.overlap)
    for line in describe_dataset(dataset):
        print(f"case {line}")
    plan, report = plan_run(dataset, args.out, strict=args.strict,
                            memory_budget_gb=args.memory_gb)
    print(report.summary())
    print(f"plan for {plan.dataset_name}: target spacing {list(plan.target_spacing)} mm, "
          f"normalization {[n['scheme'] for n in plan.normalization]}")
    for name, config in plan.configurations.items():
        print(f"  {name}: patch {list(config.patch_size)}, batch {config.batch_size}, "
              f"{len(config.strides)} levels, filters {list(config.filters)}")
    print(f"wrote {args.out / 'plan.json'} (edit it before `medseg preprocess` if needed)")
    return EXIT_OK
