"""``kerasq export``: export a quantized Keras model to TFLite and verify it."""

from __future__ import annotations

import argparse

from kerasq.errors import KerasqError


def add_parser(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser("export", help="Export a quantized Keras model to TFLite and verify it.", description="Export a quantized Keras model to TFLite and verify it.")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    raise KerasqError("`kerasq export` is not available in this version yet (kerasq.export)")
