"""The CLI skeleton: subcommands, one-line errors, exit status 2, --debug tracebacks."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kerasq.cli import COMMANDS, main
from kerasq.errors import CaffeFormatError, KerasqError


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in ("convert", "compare", "quantize", "export", "inspect", "eval", "demo"):
        assert name in out
    assert set(COMMANDS) == {"convert", "compare", "quantize", "export", "inspect", "eval", "demo"}


def test_console_script_help_runs_as_a_process():
    proc = subprocess.run(
        [sys.executable, "-m", "kerasq", "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "convert" in proc.stdout and "demo" in proc.stdout


def test_kerasq_error_is_one_line_with_exit_2(capsys, monkeypatch):
    import argparse

    def boom(args: argparse.Namespace) -> int:
        raise CaffeFormatError("unexpected token\n  at line 3", file="net.prototxt", layer="conv1")

    from kerasq import cli

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    parser.set_defaults(func=boom)
    args_ok = ["demo"]
    parser._subparsers._group_actions[0].choices["demo"].set_defaults(func=boom)
    assert main(args_ok) == 2
    err = capsys.readouterr().err.strip()
    assert err == "kerasq: error: net.prototxt: conv1: unexpected token at line 3"
    assert "\n" not in err
    with pytest.raises(KerasqError):
        main(["--debug", *args_ok])


def test_error_context_is_filled_once():
    err = KerasqError("bad").with_context(file="a.caffemodel").with_context(file="b", layer="L")
    assert str(err) == "a.caffemodel: L: bad"


def test_control_characters_in_names_stay_on_one_line():
    err = KerasqError("bad\tvalue\n", file="a\nb.prototxt", layer="conv\x00\r1")
    text = str(err)
    assert "\n" not in text and "\r" not in text and "\x00" not in text
    assert text == "a\\nb.prototxt: conv\\x00\\r1: bad value"
