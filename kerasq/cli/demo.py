"""``kerasq demo``: the main job end to end on embedded data (placeholder until issue 7)."""

from __future__ import annotations

import argparse


def add_parser(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser(
        "demo",
        help="Run the main job end to end on embedded data (no arguments needed).",
        description="Run the main job end to end on embedded data (no arguments needed).",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from kerasq import numerics

    x = np.linspace(-1.5, 1.5, 13, dtype=np.float32)
    print("kerasq demo: dynamic fixed point, 4 bits, 2 fractional bits")
    for v, q in zip(x, numerics.dfp_quantize(x, 4, 2)):
        print(f"  {v:+.3f} -> {q:+.3f}")
    return 0
