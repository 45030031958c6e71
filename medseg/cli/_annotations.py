"""``medseg convert`` for annotation files: RTSTRUCT / DICOM-SEG → label map + JSON sidecar,
and a label map → RTSTRUCT / DICOM-SEG on its DICOM series."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from medseg.core import Volume
from medseg.core.atomic import write_json
from medseg.core.errors import GeometryError, InputError
from medseg.core.paths import ensure_outside_inputs
from medseg.io import read_annotation, read_volume, write_annotation, write_volume
from medseg.io.annotation import (
    OVERLAP_POLICIES,
    annotation_file_name,
    sidecar_names,
    sidecar_path,
)
from medseg.io.structures import parse_structure_args


def add_structure_options(parser: argparse._ActionsContainer, names_flag: str) -> None:
    """``names_flag`` (structures in label-value order, with other spellings) and
    ``--overlap``: the same meaning for ``convert`` and ``plan``."""
    parser.add_argument(names_flag, nargs="+", metavar="NAME[=PATTERN]",
                        help="structure names, label values 1, 2, ... in order; NAME=PATTERN "
                             "adds another spelling (or /regex/) of NAME's ROI/segment name")
    parser.add_argument("--overlap", choices=OVERLAP_POLICIES,
                        help="where structures overlap: the smaller or later one wins, or "
                             "error (default: smaller for RTSTRUCT, error for DICOM-SEG)")


def annotation_to_labels(args: argparse.Namespace) -> None:
    """Read the RTSTRUCT/SEG ``args.input``; write the label map and ``OUT.json``."""
    ensure_outside_inputs(args.output, [args.input])
    structures = parse_structure_args(args.names) if args.names else None
    result = read_annotation(args.input, args.reference, structures=structures,
                             overlap=args.overlap, per_structure=args.per_structure)
    write_volume(result.labels, args.output)
    write_json(sidecar_path(args.output), result.sidecar())
    names = ", ".join(f"{v} {n}" for v, n in sorted(result.names.items()) if v)
    print(f"wrote {args.output} ({'one channel per structure' if args.per_structure else 'labels'}"
          f" {names}) and {sidecar_path(args.output)}; shape {list(result.labels.spatial_shape)}"
          f" on series {result.reference_series}")
    for title, items in (("empty", result.empty), ("missing", result.missing),
                         ("not selected", result.unmatched), ("skipped", result.skipped)):
        if items:
            print(f"  {title}: {'; '.join(items)}")


def labels_to_annotation(args: argparse.Namespace) -> None:
    """Write the label map ``args.input`` as ``args.format`` into the folder ``args.output``."""
    if args.reference is None:
        raise InputError(f"--format {args.format} needs --reference SERIES_DIR (the DICOM "
                         "series the label map lies on)")
    ensure_outside_inputs(args.output, [args.input, args.reference])
    labels = read_volume(args.input)
    reference = read_volume(args.reference, series=args.series)
    if not labels.same_grid(reference):
        raise GeometryError(
            f"the label map (shape {labels.spatial_shape}) is not on the grid of the reference "
            f"series {reference.meta.get('series_uid')} (shape {reference.spatial_shape}, or "
            "affine differs by more than 1e-3 mm)", args.input)
    names = label_names(args, labels)
    args.output.mkdir(parents=True, exist_ok=True)
    stem = sidecar_path(args.input).stem
    target = args.output / annotation_file_name(stem, args.format)
    write_annotation(reference.with_array(integer_labels(labels, args.input)), target, names,
                     args.format)
    listed = ", ".join(n for v, n in sorted(names.items()) if v)
    print(f"wrote {target}: {args.format} with {listed} on series "
          f"{reference.meta.get('series_uid')}")


def label_names(args: argparse.Namespace, labels: Volume) -> dict[int, str]:
    """Names by value: ``--names`` in order, else the input's JSON sidecar, else label_N."""
    if args.names:
        return {0: "background", **{v: s.name for v, s in
                                    enumerate(parse_structure_args(args.names), start=1)}}
    found = sidecar_names(args.input)
    if found is not None:
        return {0: "background", **{v: n for v, n in found.items() if v}}
    values = [int(v) for v in np.unique(labels.array) if v]
    return {0: "background", **{v: f"label_{v}" for v in values}}


def integer_labels(labels: Volume, where: Path) -> np.ndarray:
    """The label array as integers (a float NIfTI of whole numbers is accepted)."""
    array = labels.array
    if labels.n_channels != 1:
        raise InputError(f"expected a one-channel label map, got {labels.n_channels} channels",
                         where)
    floating = array.dtype.kind == "f"
    if floating and (not np.all(np.isfinite(array)) or np.any(array != np.round(array))):
        raise InputError("label map has non-integer values", where)
    if array.size and array.min() < 0:
        raise InputError("label map has negative values", where)
    return array.astype(np.uint16 if array.max() > 255 else np.uint8) if floating else array
