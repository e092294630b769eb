"""``kerasq export``: export a quantized Keras model to TFLite and verify it.

Example:
    kerasq export qmodel.h5 -o model.tflite --target int8 --data x.npy --verify
"""

from __future__ import annotations

import argparse

TARGETS = ("int8", "int16x8", "float16", "float")


def add_parser(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser(
        "export",
        help="Export a quantized Keras model to TFLite and verify it.",
        description=(
            "Export a kerasq-quantized Keras model (.h5 or SavedModel) to TFLite. int8 keeps "
            "kerasq's power-of-two scales; float/float16 store the quantized weights and "
            "round activations with float builtins. With --data the file is run in the TFLite "
            "interpreter and compared with the Keras model; --verify makes a mismatch an error."
        ),
    )
    p.add_argument("model", help="quantized Keras model (.h5 file or SavedModel directory)")
    p.add_argument("-o", "--output", required=True, help="output .tflite or .onnx file")
    p.add_argument("--target", choices=TARGETS, default="int8", help="TFLite target (default int8)")
    p.add_argument(
        "--data", help=".npy array of inputs (calibration of uncovered tensors and verification)"
    )
    p.add_argument(
        "--verify",
        action="store_true",
        help="fail (exit 2, no file) if the file disagrees with the Keras model",
    )
    p.add_argument("--int-io", action="store_true", help="integer input/output tensors")
    p.add_argument(
        "--kernels",
        choices=("default", "builtin", "reference"),
        default="default",
        help="TFLite kernels for verification: default (XNNPACK, as on a device), "
        "builtin (no delegate) or reference",
    )
    p.add_argument(
        "--max-error-steps",
        type=float,
        default=1.0,
        help="--verify tolerance in output quantization steps (default 1)",
    )
    from kerasq.export.onnx_cli import add_onnx_options  # `-o model.onnx`

    add_onnx_options(p)
    p.set_defaults(func=run)


def _load_data(path: str):
    import numpy as np

    from kerasq.errors import ModelFormatError

    try:
        return np.load(path, allow_pickle=False).astype("float32")
    except (OSError, ValueError) as err:
        raise ModelFormatError(f"cannot read input array: {err}", file=path)


def run(args: argparse.Namespace) -> int:
    import os

    from kerasq.errors import ExportError, ModelFormatError
    from kerasq.export.tflite import export_tflite

    if not os.path.exists(args.model):
        raise ModelFormatError("no such file or directory", file=args.model)
    try:
        from kerasq.schemes import load_model
    except ImportError as err:  # the quantization core is not installed in this build
        raise ExportError(f"kerasq.load_model is unavailable: {err}", file=args.model)
    try:
        model = load_model(args.model)
    except ModelFormatError:
        raise
    except Exception as err:  # Keras raises many types for unreadable files
        raise ModelFormatError(
            f"cannot load the model: {str(err).splitlines()[0][:200]}", file=args.model
        )
    data = _load_data(args.data) if args.data else None
    from kerasq.export.onnx_cli import export_model_onnx, is_onnx_output

    if is_onnx_output(args.output):
        export_model_onnx(
            model, args.output, target=args.target, data=data, opset=args.opset,
            power2_symmetric=args.power2_symmetric, verify=args.verify or data is None,
            channels_first=args.nchw,
        )  # fmt: skip
        return 0
    try:
        result = export_tflite(
            model,
            args.output,
            target=args.target,
            representative_data=data,
            int_io=args.int_io,
            verify_data=data,
            verify=args.verify,
            max_error_steps=args.max_error_steps,
            kernels=args.kernels,
        )
    except ExportError as err:
        raise err.with_context(file=args.model)
    print(f"wrote {args.output} ({result.size} bytes, target {args.target})")
    if result.report is not None:
        print(f"verification: {result.report.describe()}")
    return 0
