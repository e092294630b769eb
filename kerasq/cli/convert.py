"""``kerasq convert``: convert a Caffe net (deploy.prototxt + .caffemodel) to a Keras model.

Example::

    kerasq convert deploy.prototxt weights.caffemodel -o model.h5 \\
        --input-shape data:1,3,224,224 --mean 104,117,123 --swap-rb

The output format follows the name: ``.h5`` (HDF5), ``.keras`` (Keras v3 zip), anything
else a SavedModel directory. The file appears only when the conversion succeeded.
``--keras 3`` builds a Keras 3 model instead of a tf_keras one and writes ``.keras`` only::

    kerasq convert deploy.prototxt weights.caffemodel --keras 3 -o net.keras
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

from kerasq.errors import CaffeFormatError, KerasqError

log = logging.getLogger("kerasq.cli.convert")

PROGRESS_MIN_LAYERS = 30  # show a progress bar for nets at least this big


def parse_input_shapes(specs: Optional[Sequence[str]]) -> Dict[str, Tuple[int, ...]]:
    """``["data:1,3,224,224"]`` -> ``{"data": (1, 3, 224, 224)}``.

    Example:
        >>> parse_input_shapes(["data:1,3,8,8", "im_info:1,3"])
        {'data': (1, 3, 8, 8), 'im_info': (1, 3)}
    """
    shapes: Dict[str, Tuple[int, ...]] = {}
    for spec in specs or ():
        name, sep, dims = spec.rpartition(":")
        try:
            shape = tuple(int(d) for d in dims.replace("x", ",").split(",") if d.strip())
        except ValueError:
            shape = ()
        if not sep or not name or not shape or any(d <= 0 for d in shape):
            raise KerasqError(
                f"--input-shape {spec!r}: expected NAME:N,C,H,W (e.g. data:1,3,224,224)"
            )
        shapes[name] = shape
    return shapes


def parse_mean(value: Optional[str]) -> Any:
    """``"104,117,123"`` -> list of floats; an existing file path stays a path (.binaryproto)."""
    if value is None:
        return None
    if os.path.exists(value) or value.endswith(".binaryproto"):
        return value
    try:
        values = [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or not all(math.isfinite(v) for v in values):
        raise KerasqError(
            f"--mean {value!r}: expected comma-separated finite values or a .binaryproto file"
        )
    return values


def finite_float(text: str) -> float:
    """argparse type: a finite number (NaN and Inf are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value == 0.0:
        raise argparse.ArgumentTypeError(f"expected a finite non-zero number, got {text!r}")
    return value


def add_conversion_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by commands that convert a Caffe net (convert, compare)."""
    p.add_argument("prototxt", help="Caffe net definition (deploy or train_test .prototxt)")
    p.add_argument(
        "caffemodel",
        nargs="?",
        default=None,
        help="trained weights (.caffemodel); omit for weight-free nets",
    )
    p.add_argument(
        "--input-shape",
        action="append",
        metavar="NAME:N,C,H,W",
        help="shape of an input or data layer (repeatable), e.g. data:1,3,224,224",
    )
    p.add_argument(
        "--no-fold-batchnorm",
        action="store_true",
        help="keep BatchNorm/Scale as separate layers (default: fold into the conv)",
    )
    p.add_argument(
        "--batchnorm",
        choices=("auto", "bvlc", "jacinto"),
        default="auto",
        help="BatchNorm semantics where a file is ambiguous: bvlc divides the statistics by the "
        "factor blob (0 -> 0), jacinto ignores it and reads caffe-jacinto 0.15's blob order; "
        "auto (default) uses jacinto for nets with caffe-jacinto/NVIDIA BatchNorm",
    )
    p.add_argument(
        "--outputs",
        metavar="TOP[,TOP...]",
        help="expose these Caffe tops instead of the net outputs; layers not needed for them "
        "(e.g. SSD PriorBox/DetectionOutput) are dropped",
    )
    p.add_argument(
        "--stage",
        action="append",
        default=[],
        metavar="NAME",
        help="NetState stage for include/exclude rules (repeatable)",
    )


def load_options(args: argparse.Namespace) -> Dict[str, Any]:
    """``load()`` options from parsed arguments."""
    options: Dict[str, Any] = {
        "input_shape": parse_input_shapes(args.input_shape),
        "fold_batchnorm": not args.no_fold_batchnorm,
        "stages": list(args.stage),
        "batchnorm": getattr(args, "batchnorm", "auto") or "auto",
    }
    if getattr(args, "outputs", None):
        options["outputs"] = [t.strip() for t in args.outputs.split(",") if t.strip()]
    for key in ("mean", "scale", "swap_rb", "dynamic_spatial"):
        if getattr(args, key, None) not in (None, False):
            options[key] = parse_mean(args.mean) if key == "mean" else getattr(args, key)
    return options


def add_parser(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser(
        "convert",
        help="Convert a Caffe net (deploy.prototxt + .caffemodel) to a Keras model.",
        description="Convert a Caffe net (deploy.prototxt + .caffemodel) to a Keras model "
        "(.h5, .keras or a SavedModel directory).",
    )
    add_conversion_arguments(p)
    p.add_argument(
        "-o",
        "--output",
        help="output: model.h5, model.keras, net.onnx or a SavedModel directory "
        "(optional with --tflite)",
    )
    p.add_argument(
        "--mean",
        metavar="B,G,R|FILE",
        help="mean to subtract: per-channel values or a .binaryproto mean file",
    )
    p.add_argument(
        "--keras",
        type=int,
        choices=(2, 3),
        default=2,
        help="2: a tf_keras model (default; quantize, export); 3: a Keras 3 model, written "
        "as .keras",
    )
    p.add_argument("--scale", type=finite_float, default=None, help="multiply by this after the mean")
    p.add_argument(
        "--swap-rb",
        action="store_true",
        help="reverse the channel order first (feed RGB to a BGR-trained net)",
    )
    p.add_argument(
        "--dynamic-spatial",
        action="store_true",
        help="leave input height/width free (fully convolutional nets)",
    )
    # `--quantize` options (kerasq.cli.quantize)
    from kerasq.cli.quantize import add_convert_options

    add_convert_options(p)
    # --- `--tflite` (the export path of `kerasq export`) ---
    from kerasq.cli.export import add_convert_tflite_options

    add_convert_tflite_options(p)
    from kerasq.cli.onnx import add_onnx_options  # `-o net.onnx`

    add_onnx_options(p)
    p.set_defaults(func=run)


MODEL_OUTPUT_KINDS = ("h5", "keras", "savedmodel", "onnx")


def save_model(model: Any, output: str) -> None:
    """Save atomically; format from the name (.h5 / .keras / SavedModel directory)."""
    import warnings

    from kerasq._io import atomic_output, output_kind, save_h5

    kind = output_kind(output, MODEL_OUTPUT_KINDS)
    with atomic_output(output, kind=kind) as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*HDF5 file.*legacy.*")
        if kind == "h5":
            save_h5(model, tmp)  # never HDF5's own writes to disk (see kerasq._io.save_h5)
        elif kind == "keras":
            model.save(tmp)
        else:
            model.save(tmp, save_format="tf")


def summary_lines(model: Any) -> List[str]:
    """A short summary: layer count, parameter count, inputs and outputs."""
    params = int(sum(math.prod(int(d) for d in w.shape) for w in model.weights))
    lines = [f"layers: {len(model.layers)}  parameters: {params:,}"]
    for t in model.inputs:
        lines.append(f"input  {t.name.split(':')[0]}: {tuple(t.shape)}")
    for name, t in zip(model.output_names, model.outputs):
        lines.append(f"output {name}: {tuple(t.shape)}")
    return lines


def run(args: argparse.Namespace) -> int:
    from kerasq.converters import caffe

    if not args.output and not getattr(args, "tflite", None):
        raise KerasqError("give -o/--output (Keras model) and/or --tflite (TFLite file)")
    from kerasq._io import check_output, output_kind

    if getattr(args, "keras", 2) == 3:
        _check_keras3_request(args)
    if args.output:
        check_output(args.output, output_kind(args.output, MODEL_OUTPUT_KINDS))
    if getattr(args, "tflite", None):
        check_output(args.tflite, output_kind(args.tflite, ("tflite",), "--tflite"))
    options = load_options(args)
    bar = _progress_bar()
    if bar is not None:
        options["progress"] = bar
    model = caffe.load(args.prototxt, args.caffemodel, keras=getattr(args, "keras", 2), **options)
    if getattr(args, "quantize", None) or getattr(args, "quantize_config", None):
        from kerasq.cli.quantize import quantize_converted

        model = quantize_converted(model, args)
    if getattr(args, "tflite", None):  # Caffe -> TFLite in one command
        from kerasq.cli.export import export_converted

        export_converted(model, args)
    if not args.output:
        return 0
    from kerasq.cli.onnx import export_converted_onnx, is_onnx_output

    if is_onnx_output(args.output):  # Caffe -> ONNX in one command
        export_converted_onnx(model, args)
        return 0
    try:
        save_model(model, args.output)
    except KerasqError:
        raise
    except (OSError, ValueError) as err:
        raise CaffeFormatError(f"cannot write the model: {err}", file=args.output) from err
    print(f"wrote {args.output}")
    for line in summary_lines(model):
        print("  " + line)
    return 0


def _check_keras3_request(args: argparse.Namespace) -> None:
    """``--keras 3`` writes a Keras 3 ``.keras`` file and nothing else (one-line errors)."""
    from kerasq._io import output_kind

    other = [flag for flag, given in (
        ("--tflite", getattr(args, "tflite", None)),
        ("--quantize", getattr(args, "quantize", None) or getattr(args, "quantize_config", None)),
    ) if given]  # fmt: skip
    if other:
        raise KerasqError(f"--keras 3 converts to a float Keras 3 .keras file; {other[0]} "
                          "works on the tf_keras model (drop --keras 3)")
    output_kind(args.output, ("keras",), "--keras 3 output")


def _progress_bar():
    """A callback drawing a Progbar for big nets (stderr must be a terminal)."""
    if not sys.stderr.isatty():
        return None
    state: Dict[str, Any] = {}

    def update(index: int, total: int, name: str) -> None:
        if total < PROGRESS_MIN_LAYERS:
            return
        if "bar" not in state:
            from kerasq._compat import keras

            state["bar"] = keras.utils.Progbar(total, unit_name="layer")
        state["bar"].update(index)

    return update
