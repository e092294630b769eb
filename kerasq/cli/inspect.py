"""``kerasq inspect``: show a model's layers, quantization formats and sparsity."""

from __future__ import annotations

import argparse

from kerasq.errors import KerasqError


def add_parser(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser("inspect", help="Show a model's layers, quantization formats and sparsity.", description="Show a model's layers, quantization formats and sparsity.")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    raise KerasqError("`kerasq inspect` is not available in this version yet (kerasq.inspect)")
