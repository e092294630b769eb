"""``kerasq`` command line: thin subcommands over the public Python API.

Each subcommand lives in its own module (``kerasq/cli/<name>.py``) exposing
``add_parser(subparsers)``; the parser it adds sets ``func`` to a function taking
the parsed namespace and returning an exit status. Heavy imports (TensorFlow)
happen inside those functions, so ``kerasq --help`` is instant.

Errors: every failure (a :class:`kerasq.errors.KerasqError`, and also OSError,
MemoryError, RecursionError or an error raised by TensorFlow, h5py or protobuf) is
printed as one line, ``kerasq: error: <file>: <layer>: <reason>``, and the exit status is
2; ``--debug`` shows the traceback instead. Usage errors are one line too.

Example:
    >>> from kerasq.cli import main
    >>> main(["--version"])  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import threading
from typing import Any, Callable, Dict, List, NoReturn, Optional, Sequence

COMMANDS = ("convert", "compare", "quantize", "export", "inspect", "eval", "demo")
EXIT_ERROR = 2


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors: ``kerasq: error: <command>: <reason>``, exit 2."""

    def error(self, message: str) -> "NoReturn":  # type: ignore[override]
        reason = " ".join(str(message).split())
        sys.stderr.write(f"kerasq: error: {self.prog}: {reason}\n")
        sys.exit(EXIT_ERROR)


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level parser with every subcommand registered."""
    from kerasq import __version__

    parser = _Parser(
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
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"kerasq.cli.{name}").add_parser(sub)
    return parser


def _configure_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("kerasq").setLevel(level)


# Argument destinations that name outputs; every other string argument naming an existing
# path is an input that no output of the same command may replace.
_OUTPUT_DESTS = ("output", "tflite", "save_config", "report", "json", "html", "dump")


def _input_paths(args: argparse.Namespace) -> List[str]:
    found: List[str] = []
    for dest, value in vars(args).items():
        if any(word in dest for word in _OUTPUT_DESTS) or dest == "func":
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        for item in values:
            if not isinstance(item, str):
                continue
            for candidate in (item, item.rpartition("=")[2], item.rpartition(":")[2]):
                if candidate and os.path.lexists(candidate):
                    found.append(candidate)
    return found


def _primary_file(args: argparse.Namespace) -> Optional[str]:
    for dest in ("model", "prototxt"):
        value = getattr(args, dest, None)
        if isinstance(value, str):
            return value
    return None


def _first_line(text: str) -> str:
    for line in str(text).splitlines():
        if line.strip():
            return " ".join(line.split())[:300]
    return ""


def describe_exception(err: BaseException, args: Optional[argparse.Namespace] = None) -> str:
    """One line ``<file>: <layer>: <reason>`` for any exception raised by a command.

    Example:
        >>> describe_exception(FileNotFoundError(2, "No such file or directory", "x.npy"))
        'x.npy: No such file or directory'
    """
    from kerasq.errors import KerasqError

    if isinstance(err, KerasqError):
        return str(err)
    if isinstance(err, OSError):
        name = err.filename if isinstance(err.filename, str) else None
        reason = err.strerror or _first_line(str(err)) or type(err).__name__
        if err.errno == 27:  # EFBIG
            reason = "file too large (file-size limit reached)"
        return KerasqError(reason, file=name or (_primary_file(args) if args else None)).__str__()
    if isinstance(err, MemoryError):
        reason = "not enough memory (input too large?)"
    elif isinstance(err, RecursionError):
        reason = "input nested too deeply (recursion limit)"
    else:
        reason = f"{type(err).__name__}: {_first_line(str(err)) or 'failed'}"
    return KerasqError(reason, file=_primary_file(args) if args else None).__str__()


# Deep Caffe chains make Keras's functional-graph code (recursive in tf_keras) recurse once
# per layer: commands run in a thread with a big stack and a raised recursion limit.
_STACK_BYTES = 1 << 30
_RECURSION_LIMIT = 250000


def _run_with_deep_stack(func: Callable[[], int]) -> int:
    box: Dict[str, Any] = {}

    def target() -> None:
        try:
            box["status"] = func()
        except BaseException as err:  # re-raised in the calling thread
            box["error"] = err

    old_limit = sys.getrecursionlimit()
    try:
        old_size = threading.stack_size(_STACK_BYTES)
    except (ValueError, RuntimeError):
        return func()
    try:
        sys.setrecursionlimit(max(old_limit, _RECURSION_LIMIT))
        worker = threading.Thread(target=target, name="kerasq-command", daemon=True)
        worker.start()
    finally:
        threading.stack_size(old_size)
    try:
        while worker.is_alive():
            worker.join(0.5)
    except KeyboardInterrupt:
        from kerasq import _io

        _io.remove_live_temporaries()
        print("kerasq: interrupted", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(130)
    finally:
        if not worker.is_alive():
            sys.setrecursionlimit(old_limit)
    if "error" in box:
        raise box["error"]
    return int(box.get("status") or 0)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the CLI with ``argv`` (default ``sys.argv[1:]``); return the exit status.

    Every failure prints one line ``kerasq: error: <file>: <layer>: <reason>`` and returns
    2 (``--debug`` raises with the traceback instead).
    """
    from kerasq import _io

    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    _configure_logging(args.verbose)
    _io.clear_protected()
    _io.protect_inputs(_input_paths(args))
    _io.install_signal_handlers()
    try:
        return _run_with_deep_stack(lambda: int(args.func(args) or 0))
    except KeyboardInterrupt:
        print("kerasq: interrupted", file=sys.stderr)
        return 130
    except SystemExit:
        raise
    except BaseException as err:
        if args.debug:
            raise
        sys.stdout.flush()
        print(f"kerasq: error: {describe_exception(err, args)}", file=sys.stderr, flush=True)
        return EXIT_ERROR
    finally:
        _io.clear_protected()


def entry_point() -> None:
    """Console-script entry point."""
    sys.exit(main())


__all__: List[str] = ["main", "build_parser", "describe_exception", "COMMANDS"]
