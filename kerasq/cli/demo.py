"""``kerasq demo``: the main job end to end on real handwritten digits (no arguments needed).

Trains a small CNN on scikit-learn's digits, writes it as a Caffe net, imports it, runs
PTQ DFP-8, QAT with pruning, exports int8 TFLite and prints one table.
"""

from __future__ import annotations

import argparse
import os


def add_parser(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser(
        "demo",
        help="Run the main job end to end on real handwritten digits (no arguments needed).",
        description=(
            "Train a small CNN on scikit-learn's digits, write it as a Caffe net with kerasq's "
            "writer, import it, quantize (PTQ DFP-8, QAT with pruning), export int8 TFLite, "
            "verify it and print accuracy, sparsity, size and latency."
        ),
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=int(os.environ.get("KERASQ_DEMO_EPOCHS", "15")),
        help="float training epochs (default 15, env KERASQ_DEMO_EPOCHS)",
    )
    p.add_argument(
        "--qat-epochs",
        type=int,
        default=int(os.environ.get("KERASQ_DEMO_QAT_EPOCHS", "3")),
        help="quantization-aware training epochs (default 3)",
    )
    p.add_argument("--sparsity", type=float, default=0.5, help="pruned fraction (default 0.5)")
    p.add_argument("--out", help="keep the files (Caffe net, .tflite) in this directory")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kerasq.demo import format_table, print_progress, run_demo

    print("kerasq demo: real handwritten digits (scikit-learn), Caffe -> Keras -> TFLite")
    rows = run_demo(
        epochs=args.epochs,
        qat_epochs=args.qat_epochs,
        sparsity=args.sparsity,
        out_dir=args.out,
        progress=print_progress(),
    )
    print()
    print(format_table(rows))
    if args.out:
        print(f"files in {args.out}")
    return 0
