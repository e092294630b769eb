"""``kerasq convert ... --tflite out.tflite``: Caffe to deployed TFLite in one command.

``kerasq.cli.convert`` calls :func:`add_convert_tflite_options` and, after conversion (and
``--quantize`` / ``--calibration``), :func:`export_converted`.

Example:
    kerasq convert deploy.prototxt w.caffemodel --quantize --calibration x.npy --tflite m.tflite
"""

from __future__ import annotations

import argparse
from typing import Any

TARGETS = ("int8", "int16x8", "float16", "float")


def add_convert_tflite_options(p: argparse.ArgumentParser) -> None:
    """Add ``--tflite``, ``--tflite-target``, ``--verify`` to ``kerasq convert``."""
    g = p.add_argument_group("TFLite export", "write the (quantized) model as TFLite too")
    g.add_argument("--tflite", metavar="FILE", help="also write this .tflite file")
    g.add_argument(
        "--tflite-target",
        choices=TARGETS,
        default=None,
        help="TFLite target (default: int8 with --quantize, else float)",
    )
    g.add_argument(
        "--verify",
        action="store_true",
        help="run the .tflite on the --calibration data and fail on a mismatch",
    )


def export_converted(model: Any, args: argparse.Namespace) -> None:
    """Export ``model`` to ``args.tflite`` (verified on ``args.calibration`` when given)."""
    from kerasq.export.tflite import export_tflite

    quantized = bool(getattr(args, "quantize", False) or getattr(args, "quantize_config", None))
    target = args.tflite_target or ("int8" if quantized else "float")
    data = None
    if getattr(args, "calibration", None):
        from kerasq.cli.quantize import load_inputs

        data = load_inputs(args.calibration, model, getattr(args, "layout", "auto"))
    result = export_tflite(
        model,
        args.tflite,
        target=target,
        representative_data=data,
        verify_data=data,
        verify=bool(args.verify),
    )
    print(f"wrote {args.tflite} ({result.size} bytes, target {target})")
    if result.report is not None:
        print(f"  verification: {result.report.describe()}")
