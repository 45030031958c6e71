"""``medseg plan DATASET --out RUN``: validate, fingerprint and plan a dataset for this
device."""

from __future__ import annotations

import argparse
from pathlib import Path

from medseg.cli._annotations import add_structure_options
from medseg.core.errors import EXIT_OK
from medseg.data import DEFAULT_LABEL_SOURCE, LABEL_SOURCES, describe_dataset, load_dataset
from medseg.io.structures import parse_structure_args
from medseg.preprocess import plan_run
from medseg.preprocess.planning import PARTIAL_LABELS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="validate a dataset and write its fingerprint and plan.json",
        description="Discover and validate a dataset (Decathlon, images/ + labels/ folders, "
                    "or DICOM studies labelled by mask series, RTSTRUCT or DICOM-SEG files), "
                    "then write dataset.json, fingerprint.json and an editable plan.json into "
                    "RUN_DIR. The plan is nnU-Net's, sized to the device's memory; `medseg "
                    "train --max-minutes N` fits it to the device's measured speed and the "
                    "budget (give --max-minutes here to see that choice now).",
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
    parser.add_argument("--device", default="auto", help="device to plan for (auto, cpu, cuda)")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="fit the networks to this training budget now (measures step "
                             "times on the device)")
    parser.add_argument("--memory-gb", type=float, default=None,
                        help="GPU memory the reference plan is sized for (default: the "
                             "GPU's memory, 8 GB without one)")
    parser.add_argument("--partial-labels", choices=PARTIAL_LABELS, default="auto",
                        help="treat a class absent from a case's label as not annotated "
                             "there (excluded from loss and scores); auto: on when some "
                             "class is missing from some cases")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medseg.train.api import plan_for_device, planning_memory_gb
    from medseg.train.autoplan import describe

    dataset = load_dataset(
        args.dataset, mask_pattern=args.mask_pattern, channels=args.channels,
        regularize_slices=args.regularize_slices, label_source=args.label_source,
        structures=parse_structure_args(args.structures) if args.structures else None,
        overlap=args.overlap)
    for line in describe_dataset(dataset):
        print(f"case {line}")
    memory = args.memory_gb or planning_memory_gb(args.device)
    plan, report = plan_run(dataset, args.out, strict=args.strict, memory_budget_gb=memory,
                            partial_labels=args.partial_labels)
    plan = plan_for_device(plan, args.device, args.max_minutes)
    plan.save(args.out / "plan.json")
    print(report.summary())
    print(f"plan for {plan.dataset_name}: target spacing {list(plan.target_spacing)} mm, "
          f"normalization {[n['scheme'] for n in plan.normalization]}, partial labels "
          f"{'on' if plan.partial_labels else 'off'}")
    for field, why in {**plan.auto.get("reasons", {}),
                       "partial_labels": plan.auto.get("partial_labels", "")}.items():
        print(f"  {field}: {why}")
    budget = (f"a {args.max_minutes:g}-minute budget" if args.max_minutes
              else "no time budget (`medseg train --max-minutes N` fits it to N minutes)")
    print(f"networks for {plan.auto.get('device')} and {budget}:")
    for name, config in plan.configurations.items():
        lines = describe(config)
        print(f"  {name}: {lines[0]}")
        for line in lines[1:]:
            print(f"    {line.strip()}")
    print(f"wrote {args.out / 'plan.json'} (edit it before `medseg preprocess` if needed)")
    return EXIT_OK
