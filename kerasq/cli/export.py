"""``kerasq export``: export a quantized Keras model to TFLite and verify it.

Example:
    kerasq export qmodel.h5 -o model.tflite --target int8 --data x.npy --verify
"""

from __future__ import annotations

import argparse
from typing import Any

from kerasq.numerics.grid import EXPORT_TARGETS as TARGETS


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
    add_preprocessing_argument(p)
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
    from kerasq.cli.quantize import add_layout_argument

    add_layout_argument(p)

    from kerasq.cli.onnx import add_onnx_options  # `-o model.onnx`

    add_onnx_options(p)
    p.set_defaults(func=run)


def add_preprocessing_argument(p: Any) -> None:
    """``--preprocessing inside|outside`` (the input preprocessing of a converted net)."""
    p.add_argument(
        "--preprocessing",
        choices=("inside", "outside"),
        default="inside",
        help="a converted net's --mean/--scale/--swap-rb: inside (default) as an exact "
        "integer step of the file, or outside: the file takes the preprocessed tensor "
        "(input <name>_preprocessed) and the constants go to FILE.preprocessing.json",
    )


def add_convert_tflite_options(p: argparse.ArgumentParser) -> None:
    """``kerasq convert``'s ``--tflite``, ``--tflite-target``, ``--verify``."""
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
    add_preprocessing_argument(g)


def export_converted(model, args: argparse.Namespace) -> None:
    """``kerasq convert ... --tflite FILE``: export the converted (and quantized) model the
    same way ``kerasq export`` does, verified on the ``--calibration`` data when given."""
    quantized = bool(getattr(args, "quantize", False) or getattr(args, "quantize_config", None))
    target = args.tflite_target or ("int8" if quantized else "float")
    data = None
    if getattr(args, "calibration", None):
        from kerasq.cli.quantize import load_inputs

        data = load_inputs(args.calibration, model, getattr(args, "layout", "auto"))
    export_model(model, args.tflite, target=target, data=data, verify=bool(args.verify),
                 preprocessing=getattr(args, "preprocessing", "inside"))


def export_model(model, output: str, *, target: str, data, verify: bool,
                 int_io: bool = False, kernels: str = "default",
                 max_error_steps: float = 1.0, preprocessing: str = "inside") -> None:
    """The one export path of the command line: write ``output``, print what was written,
    the preprocessing left to the device (``preprocessing="outside"``) and the verification
    figures of every output."""
    import logging

    from kerasq.export.tflite import export_tflite

    logging.getLogger("kerasq.cli.export").info("exporting to %s (target %s)", output, target)
    result = export_tflite(
        model,
        output,
        target=target,
        representative_data=data,
        int_io=int_io,
        verify_data=data,
        verify=verify,
        max_error_steps=max_error_steps,
        kernels=kernels,
        preprocessing=preprocessing,
    )
    print(f"wrote {output} ({result.size} bytes, target {target})")
    if result.preprocessing is not None:
        print(f"input preprocessing outside the file: {result.preprocessing.describe()}")
        for sidecar in result.sidecars:
            print(f"wrote {sidecar}")
    if result.report is not None:
        print(f"verification: {result.report.describe()}")


def run(args: argparse.Namespace) -> int:
    import os

    from kerasq.errors import ExportError, ModelFormatError
    from kerasq._io import check_output, output_kind

    check_output(args.output, output_kind(args.output, ("tflite", "onnx")))
    if not os.path.exists(args.model):
        raise ModelFormatError("no such file or directory", file=args.model)
    try:
        from kerasq.dispatch import load_model  # tf_keras or Keras 3, by the file
    except ImportError as err:  # the quantization core is not installed in this build
        raise ExportError(f"kerasq.load_model is unavailable: {err}", file=args.model)
    from kerasq.data import check_model_file, load_inputs_and_labels, match_model_inputs

    raw_data = load_inputs_and_labels(args.data)[0] if args.data else None  # checked early
    check_model_file(args.model)
    try:
        model = load_model(args.model)
    except ModelFormatError:
        raise
    except Exception as err:  # Keras raises many types for unreadable files
        raise ModelFormatError(
            f"cannot load the model: {str(err).splitlines()[0][:200]}", file=args.model
        )
    data = (match_model_inputs(raw_data, model, args.layout, file=args.data)
            if raw_data is not None else None)
    from kerasq.cli.onnx import export_model_onnx, is_onnx_output

    if is_onnx_output(args.output):
        if args.preprocessing != "inside":
            raise ExportError("--preprocessing outside applies to TFLite files", file=args.output)
        export_model_onnx(
            model, args.output, target=args.target, data=data, opset=args.opset,
            power2_symmetric=args.power2_symmetric, verify=args.verify or data is None,
            channels_first=args.nchw,
        )  # fmt: skip
        return 0
    try:
        export_model(model, args.output, target=args.target, data=data, verify=args.verify,
                     int_io=args.int_io, kernels=args.kernels,
                     max_error_steps=args.max_error_steps, preprocessing=args.preprocessing)
    except ExportError as err:
        raise err.with_context(file=args.model)
    return 0
