"""``kerasq quantize``: quantize a Keras model (post-training calibration or QAT-ready)."""

from __future__ import annotations

import argparse

from kerasq.errors import KerasqError


def add_parser(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser("quantize", help="Quantize a Keras model (post-training calibration or QAT-ready).", description="Quantize a Keras model (post-training calibration or QAT-ready).")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    raise KerasqError("`kerasq quantize` is not available in this version yet (kerasq.schemes)")
