"""``medseg info PATH [--json] [--regularize-slices]``: geometry and intensity summary of an
image or DICOM folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from medseg.core.errors import EXIT_OK
from medseg.io import SeriesInfo, list_series, read_volume


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "info",
        help="show shape, spacing, orientation and value range of an image or DICOM folder",
        description="Describe an image file, a DICOM series folder or a DICOM study folder.",
    )
    parser.add_argument("path", type=Path, help="image file, DICOM series or study folder")
    parser.add_argument("--series", help="DICOM series UID or description (study folders)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--regularize-slices", action="store_true",
        help="describe a DICOM series with missing slices, non-uniform slice spacing or "
        "gantry tilt as resampled onto a regular grid instead of refusing it",
    )  # fmt: skip
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    report = describe_path(args.path, args.series, regularize=args.regularize_slices)
    print(json.dumps(report) if args.json else format_report(report))
    return EXIT_OK


def describe_path(
    path: Path, series: str | None = None, *, regularize: bool = False
) -> dict[str, Any]:
    """Summary of ``path``: the volume (unless a folder holds several series) and its series.

    ``regularize``: read an irregular DICOM series resampled onto a regular grid (see
    ``read_volume``); the report's ``regularized`` says what was done (None if nothing).
    """
    listing = list_series(path) if path.is_dir() else []
    volume = None
    if not path.is_dir() or series is not None or len(listing) == 1:
        volume = read_volume(path, series=series, regularize=regularize)
    return {
        "path": str(path),
        "format": volume.meta.get("format") if volume is not None else "dicom",
        "volume": volume.summary() if volume is not None else None,
        "regularized": volume.meta.get("regularized") if volume is not None else None,
        "series": [_series_dict(s) for s in listing],
    }


def format_report(report: dict[str, Any]) -> str:
    """Human-readable text of :func:`describe_path`'s report."""
    lines = [f"{report['path']} ({report['format']})"]
    if report["volume"] is not None:
        vol = report["volume"]
        lines += [
            f"  shape        {vol['shape']} x {vol['channels']} channel(s), {vol['dtype']}",
            f"  spacing      {vol['spacing']} mm",
            f"  origin       {vol['origin']} mm (RAS)",
            f"  orientation  {vol['orientation']}{' (oblique)' if vol['oblique'] else ''}",
            f"  range        {vol['range']}",
        ]
    if report["regularized"]:
        reg = report["regularized"]
        lines.append(
            f"  regularized  {', '.join(reg['reasons'])}: {reg['source_slices']} source "
            f"slices -> {reg['slices']} at {reg['step_mm']:.4g} mm ({reg['interpolation']})"
        )
    if report["series"]:
        lines.append(f"  {len(report['series'])} series:")
        for s in report["series"]:
            problem = f"  PROBLEM: {s['problem']}" if s["problem"] else ""
            lines.append(
                f"    {s['uid']}  {s['modality']:<3} {s['description']!r:<24} "
                f"{s['shape']} {[round(v, 4) for v in s['spacing']]} mm, {s['n_files']} files, "
                f"{s['folder']}{problem}"
            )
    return "\n".join(lines)


def _series_dict(info: SeriesInfo) -> dict[str, Any]:
    return {
        "uid": info.uid,
        "description": info.description,
        "modality": info.modality,
        "shape": list(info.shape),
        "spacing": list(info.spacing),
        "n_files": info.n_files,
        "folder": str(info.folder),
        "frame_of_reference_uid": info.frame_of_reference_uid,
        "problem": info.problem,
    }
