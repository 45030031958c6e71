"""``medseg convert INPUT OUTPUT``: convert an image or DICOM series, read an RTSTRUCT or
DICOM-SEG into a label map, or write a label map as RTSTRUCT or DICOM-SEG."""

from __future__ import annotations

import argparse
from pathlib import Path

from medseg.cli._annotations import (
    add_structure_options,
    annotation_to_labels,
    labels_to_annotation,
)
from medseg.core.errors import EXIT_OK
from medseg.core.paths import ensure_outside_inputs
from medseg.io import annotation_format, read_volume, write_volume
from medseg.io.annotation import ANNOTATION_FORMATS
from medseg.io.dicom_regularize import INTERPOLATIONS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert images and DICOM series; RTSTRUCT/DICOM-SEG to label maps and back",
        description="Read INPUT (file, DICOM series or study folder) and write OUTPUT in the "
        "format of its extension (.nii.gz, .nii, .nrrd, .mha). An RTSTRUCT or DICOM-SEG INPUT "
        "becomes a label map on its image series' grid plus OUTPUT's .json (value -> name). "
        "With --format rtstruct|dicom-seg, the label map INPUT is written into the folder "
        "OUTPUT as that DICOM object on the series --reference.",
    )
    parser.add_argument("input", type=Path,
                        help="image file, DICOM series or study folder, RTSTRUCT/SEG file, or "
                             "a label map (with --format)")
    parser.add_argument("output", type=Path,
                        help="output file (.nii.gz, .nii, .nrrd, .mha), or a folder with --format")
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
    annotations = parser.add_argument_group("annotations (RTSTRUCT, DICOM-SEG)")
    annotations.add_argument("--format", choices=ANNOTATION_FORMATS,
                             help="write the label map INPUT as this DICOM object")
    annotations.add_argument("--reference", type=Path, metavar="SERIES_DIR",
                             help="the DICOM series the annotation lies on (default for "
                                  "RTSTRUCT/SEG input: found in the file's folder tree)")
    add_structure_options(annotations, "--names")
    annotations.add_argument("--per-structure", action="store_true",
                             help="one 0/1 channel per structure instead of one label map")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.format is not None:
        labels_to_annotation(args)
    elif annotation_format(args.input) is not None:
        annotation_to_labels(args)
    else:
        convert_image(args)
    return EXIT_OK


def convert_image(args: argparse.Namespace) -> None:
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
