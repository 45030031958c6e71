"""``medseg`` entry point: discovers sub-commands and turns errors into one-line messages.

Each module in :mod:`medseg.cli` that defines ``register(subparsers)`` adds one
sub-command and sets ``func`` (taking the parsed ``argparse.Namespace``, returning an exit
code) on its parser. Exit codes are documented in :mod:`medseg.core.errors`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import sys
import warnings
from collections.abc import Sequence

import medseg
from medseg.core.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, MedsegError

# Order in `medseg --help`; modules not listed here follow alphabetically.
PREFERRED_ORDER = [
    "demo", "run", "info", "convert", "plan", "preprocess", "train", "predict", "evaluate",
]


def _command_modules() -> list[str]:
    import medseg.cli as pkg

    names = [m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_")]
    names = [n for n in names if n != "main"]
    return sorted(names, key=lambda n: (PREFERRED_ORDER.index(n) if n in PREFERRED_ORDER
                                        else len(PREFERRED_ORDER), n))


def _requested_command(argv: Sequence[str] | None, names: Sequence[str]) -> str | None:
    """The sub-command named on the command line, if any (first non-option argument)."""
    args = sys.argv[1:] if argv is None else list(argv)
    first = next((a for a in args if not a.startswith("-")), None)
    module = None if first is None else first.replace("-", "_")  # export-nnunet: export_nnunet
    return module if module in names else None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser: only the requested sub-command's module is imported when
    ``argv`` names one (start-up cost), every discovered sub-command otherwise."""
    parser = argparse.ArgumentParser(
        prog="medseg", description="Medical image segmentation pipeline."
    )
    parser.add_argument("--version", action="version", version=f"medseg {medseg.__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    parser.add_argument("-v", "--verbose", action="store_true", help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    names = _command_modules()
    requested = _requested_command(argv, names)
    for name in [requested] if requested else names:
        module = importlib.import_module(f"medseg.cli.{name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    return parser


def quiet_libraries() -> None:
    """Keep nibabel's and pydicom's own log lines and warnings off stderr.

    They describe header problems that medseg reports itself, as one line (with the file
    name); ``--verbose`` shows them again.
    """
    for name in ("nibabel", "pydicom", "highdicom"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore", module=r"(nibabel|pydicom)(\.|$)")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    return _run(argv)[0]


def entry() -> None:
    """The ``medseg`` executable: :func:`main`, then exit. A command whose promise includes
    the end of the process (``medseg train --max-minutes``: the budget covers the whole
    command) ends at once once its files are written and its output flushed, instead of
    waiting for the interpreter to tear down torch and the memory maps of the cache (seconds
    on a busy machine)."""
    code, args = _run(None)
    if getattr(args, "exit_at_once", False):
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        os._exit(code)
    sys.exit(code)


def _run(argv: Sequence[str] | None) -> tuple[int, argparse.Namespace]:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    return _dispatch(parser, args), args


def _dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(message)s",
    )
    if not args.verbose:
        quiet_libraries()
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_OK
    try:
        return int(args.func(args) or EXIT_OK)
    except MedsegError as exc:
        if args.debug:
            raise
        print(f"medseg: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("medseg: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # the one place that turns bugs into exit codes
        if args.debug:
            raise
        print(
            f"medseg: internal error: {type(exc).__name__}: {exc} (re-run with --debug for "
            "the traceback, and please report it)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


if __name__ == "__main__":
    entry()
