"""``medseg run PIPELINE_FILE``: run a pipeline's stages in a run folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from medseg.core.errors import EXIT_OK
from medseg.pipeline import STAGE_NAMES, format_dice, read_summary, run_pipeline


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run a pipeline file: ingest, plan, preprocess, train, predict, evaluate",
        description="Run the stages of a pipeline file in a run folder. Stages whose inputs "
        "and configuration are unchanged are skipped; an interrupted stage resumes.",
    )
    parser.add_argument("pipeline", type=Path, help="pipeline file, e.g. pipelines/demo.yaml")
    add_run_options(parser)
    parser.set_defaults(func=run)


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """--workdir, --set, --from and --only (shared with ``medseg demo``)."""
    parser.add_argument("--workdir", type=Path, help="run folder (default: runs/<name>)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.KEY=VALUE",
                        help="override a key of the pipeline file (value parsed as YAML); "
                        "repeatable")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--from", dest="start", choices=STAGE_NAMES,
                       help="re-run this stage and every later one")
    group.add_argument("--only", choices=STAGE_NAMES, help="run only this stage")


def run(args: argparse.Namespace) -> int:
    result = run_pipeline(args.pipeline, workdir=args.workdir, overrides=args.overrides,
                          start=args.start, only=args.only)
    print_results(result.summary_file, result.report, result.run_dir)
    return EXIT_OK


def print_results(summary_file: Path, report: Path, run_dir: Path) -> None:
    """The Dice summary and where the report is (or just the run folder)."""
    summary = read_summary(summary_file)
    if summary is not None:
        print(format_dice(summary))
        print(f"report: {report}")
    print(f"run folder: {run_dir}")
