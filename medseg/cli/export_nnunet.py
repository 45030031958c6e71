"""``medseg export-nnunet DATASET_OR_RUN OUT_DIR --id N``: write an nnU-Net v2 raw dataset."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from medseg.cli._annotations import add_structure_options
from medseg.core.errors import EXIT_OK, EXIT_PARTIAL
from medseg.data import DEFAULT_LABEL_SOURCE, LABEL_SOURCES, Dataset, load_dataset, read_listing
from medseg.data.dicom_study import DEFAULT_MASK_PATTERN
from medseg.data.nnunet_export import export_nnunet
from medseg.io.structures import parse_structure_args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export-nnunet",
        help="write a dataset (or a run's valid cases) as an nnU-Net v2 raw dataset",
        description=(
            "Read every case of DATASET (any layout medseg reads: Decathlon, nnU-Net, "
            "images/ + labels/, DICOM studies labelled by mask series, RTSTRUCT or DICOM-SEG "
            "files) or of a run folder's "
            "validated listing, and write OUT_DIR/DatasetNNN_<name>/ with imagesTr/, "
            "labelsTr/, imagesTs/ and dataset.json for nnU-Net v2. Label values are "
            "renumbered 0..K-1 in value order. Exit code 3 when some cases could not be read."
        ),
    )
    parser.add_argument("dataset", type=Path, metavar="DATASET_OR_RUN",
                        help="dataset folder, or a run folder (its dataset.json listing)")
    parser.add_argument("out", type=Path, metavar="OUT_DIR",
                        help="nnU-Net raw folder to write into (e.g. $nnUNet_raw)")
    parser.add_argument("--id", type=int, required=True, help="nnU-Net dataset id (1-999)")
    parser.add_argument("--name", help="dataset name (default: the dataset's)")
    parser.add_argument("--channel-names", nargs="+", metavar="NAME",
                        help="channel names for nnU-Net (it normalises 'CT' channels as CT)")
    parser.add_argument("--mask-pattern", default=DEFAULT_MASK_PATTERN,
                        help="DICOM: SeriesDescription pattern of mask series")
    parser.add_argument("--channels", nargs="+", metavar="DESCRIPTION",
                        help="DICOM: series descriptions to use as channels, in order")
    parser.add_argument("--label-source", choices=LABEL_SOURCES, default=DEFAULT_LABEL_SOURCE,
                        help="DICOM: labels from mask series (default), RTSTRUCT or DICOM-SEG "
                             "files")
    add_structure_options(parser, "--structures")  # rtstruct/dicom-seg label sources
    parser.add_argument("--regularize-slices", action="store_true",
                        help="DICOM: resample irregular series onto a regular grid")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    dataset = _dataset(args)
    summary = export_nnunet(
        dataset, args.out, args.id, name=args.name, channel_names=args.channel_names,
        progress=lambda cases: tqdm(cases, desc="export", unit="case",
                                    disable=args.no_progress))
    print(f"wrote {summary.folder}: {summary.training} training case(s), {summary.test} "
          f"test case(s); check it with nnUNetv2_plan_and_preprocess -d {args.id} "
          "--verify_dataset_integrity")
    for case_id, reason in summary.failed:
        print(f"medseg: case {case_id} skipped: {reason}", file=sys.stderr)
    return EXIT_PARTIAL if summary.failed else EXIT_OK


def _dataset(args: argparse.Namespace) -> Dataset:
    """A run folder's validated listing, else the dataset folder as ``load_dataset`` reads it."""
    if (args.dataset / "plan.json").is_file() and (args.dataset / "dataset.json").is_file():
        return read_listing(args.dataset / "dataset.json")
    return load_dataset(
        args.dataset, mask_pattern=args.mask_pattern, channels=args.channels,
        regularize_slices=args.regularize_slices, label_source=args.label_source,
        structures=parse_structure_args(args.structures) if args.structures else None,
        overlap=args.overlap)
