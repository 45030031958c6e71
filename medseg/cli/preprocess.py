"""``medseg preprocess RUN_DIR``: fill the preprocessed cache of a planned run."""

from __future__ import annotations

import argparse
from pathlib import Path

from medseg.core.errors import EXIT_OK, EXIT_PARTIAL
from medseg.preprocess import preprocess_run


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "preprocess",
        help="preprocess the planned dataset into the run's cache",
        description="Apply RUN_DIR/plan.json to the valid cases of RUN_DIR/dataset.json; "
                    "unchanged cases are reused from the cache.",
    )
    parser.add_argument("run_dir", type=Path, help="run folder written by `medseg plan`")
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes (default: CPU count)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    summary = preprocess_run(args.run_dir, workers=args.workers)
    print(summary.text())
    return EXIT_PARTIAL if summary.failed else EXIT_OK
