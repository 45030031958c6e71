"""``medseg clean RUN_DIR [--dry-run]``: remove preprocessed caches the run no longer uses."""

from __future__ import annotations

import argparse
from pathlib import Path

from medseg.core.errors import EXIT_OK
from medseg.pipeline.runner import run_lock
from medseg.preprocess.prune import prune_caches


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "clean",
        help="remove preprocessed caches that the run's current plan no longer uses",
        description="Delete every RUN_DIR/preprocessed/<key>/ folder except the cache of the "
                    "current plan.json (older plans, changed inputs, interrupted runs). Data "
                    "still hard-linked from the kept cache is not lost; the freed space is "
                    "reported. Refused while another medseg run uses the folder.",
    )
    parser.add_argument("run_dir", type=Path, help="run folder")
    parser.add_argument("--dry-run", action="store_true",
                        help="list what would be removed, remove nothing")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with run_lock(args.run_dir):
        summary = prune_caches(args.run_dir, dry_run=args.dry_run)
    for folder in summary.removed:
        print(f"{'would remove' if summary.dry_run else 'removed'} {folder}")
    print(summary.summary())
    return EXIT_OK
