"""``medseg convert INPUT OUTPUT [--series SEL] [--regularize-slices]``: convert an image or
DICOM series."""

from __future__ import annotations

import argparse
from pathlib import Path

from medseg.core.errors import EXIT_OK
from medseg.core.paths import ensure_outside_inputs
from medseg.io import read_volume, write_volume
from medseg.io.dicom_regularize import INTERPOLATIONS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert an image file or DICOM series to NIfTI, NRRD or MetaImage",
        description="Read INPUT (file, DICOM series or study folder) and write OUTPUT; the "
        "output format follows its extension (.nii.gz, .nii, .nrrd, .mha).",
    )
    parser.add_argument("input", type=Path, help="image file, DICOM series or study folder")
    parser.add_argument("output", type=Path, help="output file (.nii.gz, .nii, .nrrd, .mha)")
    parser.add_argument("--series", help="DICOM series UID or description (study folders)")
    parser.add_argument(
        "--regularize-slices", action="store_true",
        help="resample a DICOM series with missing slices, non-uniform slice spacing or gantry "
        "tilt onto a regular grid instead of refusing it",
    )  # fmt: skip
    parser.add_argument(
        "--slice-interpolation", choices=INTERPOLATIONS, default="linear",
        help="interpolation between slices with --regularize-slices (nearest for label/mask "
        "series; default linear)",
    )  # fmt: skip
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    ensure_outside_inputs(args.output, [args.input])
    volume = read_volume(
        args.input, series=args.series, regularize=args.regularize_slices,
        interpolation=args.slice_interpolation,
    )  # fmt: skip
    write_volume(volume, args.output)
    s = volume.summary()
    print(
        f"wrote {args.output}: shape {s['shape']} x {s['channels']}, spacing {s['spacing']} mm, "
        f"{s['orientation']}, {s['dtype']}"
    )
    return EXIT_OK
