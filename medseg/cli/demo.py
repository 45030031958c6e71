"""``medseg demo``: the demo pipeline on the bundled sample data, end to end."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from medseg.cli.run import print_results
from medseg.core.errors import EXIT_OK
from medseg.pipeline import demo_pipeline_file, run_pipeline


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="train and evaluate a small model on the bundled sample data (~5 min on CPU)",
        description="Run pipelines/demo.yaml on data_samples/: a few minutes of training, "
        "prediction of the held-out cases and evaluation. Prints Dice per class and where "
        "the report is.",
    )
    parser.add_argument("--workdir", type=Path,
                        help="run folder (default: a new temporary folder, kept afterwards)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.KEY=VALUE", help="override a key of demo.yaml")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="medseg-demo-"))
    result = run_pipeline(demo_pipeline_file(), workdir=workdir, overrides=args.overrides)
    print_results(result.summary_file, result.report, result.run_dir)
    return EXIT_OK
