"""The ``.onnx`` output of ``kerasq export`` and ``kerasq convert``.

``kerasq export MODEL -o model.onnx`` and ``kerasq convert deploy.prototxt w.caffemodel -o
net.onnx`` dispatch here on the extension. Without data, a float export is verified on a
few seeded random inputs (fixed input shapes only); with ``--data`` / ``--calibration`` on
those arrays.

Example:
    kerasq convert deploy.prototxt w.caffemodel -o net.onnx
    kerasq export qmodel.h5 -o q.onnx --target int8 --data x.npy --power2-symmetric
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

import numpy as np

log = logging.getLogger("kerasq.cli.onnx")

ONNX_SUFFIX = ".onnx"


def is_onnx_output(path: str | None) -> bool:
    """True if ``path`` names an ONNX file (``.onnx``, any case)."""
    return bool(path) and str(path).lower().endswith(ONNX_SUFFIX)


def add_onnx_options(p: argparse.ArgumentParser) -> None:
    """Add ``--opset`` and ``--power2-symmetric`` (used when the output ends in .onnx)."""
    g = p.add_argument_group("ONNX export", "used when the output file ends in .onnx")
    g.add_argument("--opset", type=int, default=None, help="ONNX opset (default 17)")
    g.add_argument(
        "--nchw",
        action="store_true",
        help="4-D inputs and outputs in Caffe's NCHW layout (default: the Keras NHWC layout)",
    )
    g.add_argument(
        "--power2-symmetric",
        action="store_true",
        help="int8: per-tensor symmetric power-of-two activation scales, zero point 0 "
        "(the form TIDL imports for pre-quantized models)",
    )


def _random_inputs(model: Any, count: int = 2) -> np.ndarray | None:
    shapes = [tuple(t.shape) for t in model.inputs]
    if len(shapes) != 1 or any(d is None for d in shapes[0][1:]):
        return None
    return np.random.RandomState(0).uniform(0.0, 1.0, (count,) + shapes[0][1:]).astype(np.float32)


def export_model_onnx(
    model: Any, output: str, *, target: str, data: Any, opset: int | None,
    power2_symmetric: bool, verify: bool = True, channels_first: bool = False,
) -> None:  # fmt: skip
    """Export ``model`` to ``output`` (verified on ``data``, else on random inputs for
    float) and print what was written."""
    from kerasq.errors import ExportError
    from kerasq.export.onnx import DEFAULT_OPSET, export_onnx, is_quantized

    if target not in ("float", "int8"):
        raise ExportError(f"ONNX targets are 'float' and 'int8', not {target!r}", file=output)
    if target == "int8" and not is_quantized(model):
        log.info("the model is not quantized: exporting float ONNX")
        target = "float"
    if data is None and target == "float":
        data = _random_inputs(model)
    try:
        result = export_onnx(
            model,
            output,
            target=target,
            opset=opset or DEFAULT_OPSET,
            verify_data=data,
            verify=verify,
            power2_symmetric=power2_symmetric,
            channels_first=channels_first,
        )
    except ExportError as err:
        raise err.with_context(file=output)
    print(f"wrote {output} ({result.size} bytes, ONNX {target})")
    if result.report is not None:
        print(f"  verification (onnxruntime): {result.report.describe()}")


def export_converted_onnx(model: Any, args: argparse.Namespace) -> None:
    """``kerasq convert ... -o net.onnx``: float, or int8 with ``--quantize``."""
    quantized = bool(getattr(args, "quantize", False) or getattr(args, "quantize_config", None))
    data = None
    if getattr(args, "calibration", None):
        from kerasq.cli.quantize import load_inputs

        data = load_inputs(args.calibration)
    export_model_onnx(
        model,
        args.output,
        target="int8" if quantized else "float",
        data=data,
        opset=args.opset,
        power2_symmetric=args.power2_symmetric,
        channels_first=args.nchw,
    )


__all__ = [
    "ONNX_SUFFIX",
    "add_onnx_options",
    "export_converted_onnx",
    "export_model_onnx",
    "is_onnx_output",
]  # fmt: skip
