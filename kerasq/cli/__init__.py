"""``kerasq`` command line: thin subcommands over the public Python API.

Each subcommand lives in its own module (``kerasq/cli/<name>.py``) exposing
``add_parser(subparsers)``; the parser it adds sets ``func`` to a function taking
the parsed namespace and returning an exit status. Heavy imports (TensorFlow)
happen inside those functions, so ``kerasq --help`` is instant.

Errors: a :class:`kerasq.errors.KerasqError` is printed as one line,
``kerasq: error: <file>: <layer>: <reason>``, and the exit status is 2;
``--debug`` shows the traceback instead.

Example:
    >>> from kerasq.cli import main
    >>> main(["--version"])  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import List, Optional, Sequence

COMMANDS = ("convert", "compare", "quantize", "export", "inspect", "eval", "demo")
EXIT_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level parser with every subcommand registered."""
    from kerasq import __version__

    parser = argparse.ArgumentParser(
        prog="kerasq",
        description=(
            "Caffe import, dynamic-fixed-point / minifloat quantization, sparsity and "
            "TFLite export for Keras models."
        ),
    )
    parser.add_argument("--version", action="version", version=f"kerasq {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"kerasq.cli.{name}").add_parser(sub)
    return parser


def _configure_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("kerasq").setLevel(level)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the CLI with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    from kerasq.errors import KerasqError

    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    _configure_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except KerasqError as err:
        if args.debug:
            raise
        print(f"kerasq: error: {err}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("kerasq: interrupted", file=sys.stderr)
        return 130


def entry_point() -> None:
    """Console-script entry point."""
    sys.exit(main())


__all__: List[str] = ["main", "build_parser", "COMMANDS"]
