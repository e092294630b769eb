"""``kerasq quantize``: quantize a Keras model (post-training calibration or QAT-ready).

Examples::

    kerasq quantize model.h5 --bits-weights 8 --bits-activations 8 \\
        --calibration x_cal.npy -o qmodel.h5
    kerasq quantize model.h5 --config test.prototxt --calibration x_cal.npy -o qmodel.h5
    kerasq quantize model.h5 --config test.prototxt --int8 --calibration x_cal.npy -o q.h5
    kerasq quantize model.h5 --search --eval val.npz --calibration x_cal.npy -o qmodel.h5

``--config`` takes a caffe-jacinto / Ristretto prototxt (read by
``QuantizationConfig.from_caffe``, optionally with ``--solver``) or a JSON file written by
``QuantizationConfig.to_json`` / ``--save-config``; options given on the command line
override the file; ``--int8`` then makes the config deployable as TFLite int8
(``kerasq.schemes.int8_deployable``: power-of-two symmetric ranges, at most 8 bits) and
prints per layer what changed. Data files: ``.npy`` holds the model input; ``.npz`` holds
``x`` (or ``x0``, ``x1``, ... for several inputs) and, for ``--eval``, integer or one-hot
labels ``y``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from typing import Any, Dict, List, Tuple

from kerasq.errors import KerasqError, ModelFormatError, QuantizationConfigError
from kerasq.numerics.rounding import ROUNDING_MODES as _ROUNDINGS

log = logging.getLogger("kerasq.cli.quantize")

_PRECISIONS = ("dfp", "minifloat", "pow2_weights", "float")
_ESTIMATORS = ("minmax", "max_abs", "ema", "percentile")


def add_parser(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser(
        "quantize",
        help="Quantize a Keras model (post-training calibration or QAT-ready).",
        description="Quantize a Keras model. Writes an .h5 file or a SavedModel "
        "directory that `kerasq.load_model` reads back; with --calibration the ranges and "
        "fractional lengths are fixed from the data (PTQ), otherwise the model is ready "
        "for quantization-aware training.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.split("\n\n")[1:]),
    )
    p.add_argument("model", help="float Keras model (.h5 or SavedModel directory)")
    p.add_argument("-o", "--output", required=True,
                   help="quantized model to write (.h5, or a directory for SavedModel)")
    src = p.add_argument_group("configuration")
    src.add_argument("--config", help="caffe-jacinto/Ristretto .prototxt or kerasq .json config")
    src.add_argument("--solver", help="Caffe solver.prototxt (quantization_start[_iter])")
    src.add_argument("--flavor", choices=("jacinto-0.15", "jacinto-0.16", "jacinto-0.17",
                                          "ristretto"),
                     help="prototxt dialect (default: detected from the field names)")
    src.add_argument("--precision", choices=_PRECISIONS)
    src.add_argument("--bits-weights", type=int, metavar="N")
    src.add_argument("--bits-activations", type=int, metavar="N")
    src.add_argument("--bits-bias", type=int, metavar="N")
    src.add_argument("--rounding", choices=_ROUNDINGS, help="rounding at inference")
    src.add_argument("--train-rounding", choices=_ROUNDINGS, help="rounding while training")
    src.add_argument("--exp-bits", type=int, metavar="E", help="minifloat exponent bits")
    src.add_argument("--mant-bits", type=int, metavar="M", help="minifloat mantissa bits")
    src.add_argument("--per-tensor", action="store_true",
                     help="one fractional length per weight tensor (default: per channel)")
    src.add_argument("--no-power2", action="store_true",
                     help="caffe-jacinto's non-power-of-two scales instead of DFP")
    src.add_argument("--range-estimator", choices=_ESTIMATORS)
    src.add_argument("--quantization-start", type=int, metavar="STEPS")
    src.add_argument("--ignore", action="append", default=[], metavar="LAYER",
                     help="leave this layer in float (repeatable)")
    src.add_argument("--int8", action="store_true",
                     help="make the config deployable as TFLite int8: keep its bit widths where "
                          "int8 holds them, switch to power-of-two symmetric ranges (8 bits at "
                          "most, no offsets, ties-to-even rounding) and print per layer what "
                          "changed")
    src.add_argument("--save-config", metavar="JSON", help="also write the final config as JSON")
    cal = p.add_argument_group("calibration and search")
    cal.add_argument("--calibration", metavar="DATA", help="calibration inputs (.npy or .npz)")
    cal.add_argument("--steps", type=positive_int, help="calibration batches (default: all)")
    cal.add_argument("--batch-size", type=positive_int, default=32)
    add_layout_argument(cal)
    cal.add_argument("--search", action="store_true",
                     help="Ristretto's bit-width search (needs --eval and --calibration)")
    cal.add_argument("--search-mode", choices=("dfp", "minifloat"), default="dfp",
                     help="dfp: smallest bit widths per part; minifloat: Ristretto's whole-net "
                          "minifloat search (default dfp)")
    cal.add_argument("--eval", metavar="NPZ", help="evaluation data: .npz with x and labels y")
    cal.add_argument("--error-margin", type=float, default=1.0,
                     help="allowed accuracy drop in percentage points (default 1.0)")
    cal.add_argument("--strict", action="store_true",
                     help="with --search: fail (exit 2, no output file) when the combined "
                          "result misses the error margin, instead of warning")
    cal.add_argument("--candidates",
                     help="bit widths tried in order (default 16,8,4,2; minifloat 16,8,4)")
    cal.add_argument("--report", action="store_true",
                     help="print the per-layer quantization report (SQNR on --eval or "
                          "--calibration data)")
    p.set_defaults(func=run)


# ------------------------------------------------------------------------------ data files
def load_inputs(path: str, model: Any = None, layout: str = "auto") -> Any:
    """Model inputs from ``.npy`` (one array) or ``.npz`` (``x`` or ``x0``, ``x1``...),
    checked by :mod:`kerasq.data` (regular file, size, dtype, finite) and, with ``model``,
    put into its input layout (Caffe NCHW or NHWC, see ``--layout``)."""
    from kerasq.data import load_model_inputs

    return load_model_inputs(path, model, layout)


def positive_int(text: str) -> int:
    """argparse type: an integer in 1..2^31-1 (TensorFlow's batch and step counters)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    if value > 2**31 - 1:
        raise argparse.ArgumentTypeError(f"{text[:20]}{'...' if len(text) > 20 else ''} is "
                                         f"too large (at most {2**31 - 1})")
    return value


def add_layout_argument(p: Any) -> None:
    """``--layout auto|nchw|nhwc``: the layout of 4-D data files."""
    p.add_argument("--layout", choices=("auto", "nchw", "nhwc"), default="auto",
                   help="layout of 4-D data arrays: Caffe NCHW or the model's NHWC (default: "
                        "recognised from the shape; needed when a shape fits both)")


def _check_layer_names(model: Any, names: Any, option: str) -> None:
    known = {layer.name for layer in model.layers}
    for name in names:
        if name not in known:
            raise KerasqError(f"no layer named {name!r} in the model", layer=option)


def accuracy_fn(x: Any, y: Any, batch_size: int = 256) -> Any:
    """eval_fn for search: top-1 accuracy (fraction) of argmax(model(x)) against ``y``."""
    import numpy as np

    labels = np.asarray(y)
    if labels.ndim > 1:
        labels = labels.argmax(axis=-1)

    def evaluate(model: Any) -> float:
        pred = model.predict(x, batch_size=batch_size, verbose=0)
        return float(np.mean(np.asarray(pred).argmax(axis=-1) == labels))

    return evaluate


# ------------------------------------------------------------------------------ config
def _overrides_from_args(args: argparse.Namespace) -> Dict[str, Any]:
    changes: Dict[str, Any] = {}
    for attr, field in (
        ("precision", "precision"), ("bits_weights", "bitwidth_weights"),
        ("bits_activations", "bitwidth_activations"), ("bits_bias", "bitwidth_bias"),
        ("rounding", "rounding"), ("train_rounding", "train_rounding"),
        ("exp_bits", "exp_bits"), ("mant_bits", "mant_bits"),
        ("range_estimator", "range_estimator"), ("quantization_start", "quantization_start"),
    ):
        value = getattr(args, attr, None)
        if value is not None:
            changes[field] = value
    if args.per_tensor:
        changes["per_channel_weights"] = False
    if args.no_power2:
        changes["power2_range"] = False
    return changes


def build_config(args: argparse.Namespace) -> Any:
    """The QuantizationConfig from ``--config``/``--solver`` and the command-line options."""
    from kerasq.schemes.config import QuantizationConfig

    if args.config:
        ext = os.path.splitext(args.config)[1].lower()
        if ext == ".json":
            try:
                with open(args.config, encoding="utf-8") as handle:
                    text = handle.read()
            except OSError as err:
                raise KerasqError(f"cannot read config: {err.strerror}", file=args.config) from None
            try:
                config = QuantizationConfig.from_json(text)
            except QuantizationConfigError as err:
                raise err.with_context(file=args.config) from None
        elif args.flavor:
            from kerasq.schemes.config import config_from_caffe

            config = config_from_caffe(args.config, solver=args.solver, flavor=args.flavor)
        else:  # the prototxt's settings, or kerasq's default when it has none (said on stderr)
            config = config_for_converted(args.config, args.solver)
    else:
        if args.solver:
            raise KerasqError("--solver needs --config with the net prototxt", layer="--solver")
        config = QuantizationConfig()
    changes = _overrides_from_args(args)
    if args.ignore:
        changes["ignored_layers"] = tuple(config.ignored_layers) + tuple(args.ignore)
    try:
        config = config.replace(**changes) if changes else config
    except QuantizationConfigError as err:
        raise err.with_context(layer="command line") from None
    return to_int8(config) if getattr(args, "int8", False) else config


def to_int8(config: Any) -> Any:
    """``int8_deployable(config)``, printing each change on stderr."""
    from kerasq.schemes.deployable import int8_deployable

    config, changes = int8_deployable(config)
    for line in changes:
        print(f"int8: {line}", file=sys.stderr)
    if not changes:
        print("int8: the config already fits TFLite int8 (nothing changed)", file=sys.stderr)
    return config


def _candidates(text: str) -> Tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise KerasqError(f"--candidates={text!r}: comma-separated integers") from None
    if not values:
        raise KerasqError(f"--candidates={text!r}: give at least one bit width")
    return values


def _load_model(path: str) -> Any:
    from kerasq.dispatch import load_model  # a Keras 3 .keras file: a Keras 3 model

    if not os.path.exists(path):
        raise ModelFormatError("no such file or directory", file=path)
    from kerasq.data import check_model_file

    check_model_file(path)
    try:
        model = load_model(path)
    except KerasqError as err:
        raise err.with_context(file=path) from None
    except (OSError, ValueError, TypeError, ImportError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ModelFormatError(f"cannot load Keras model: {reason}", file=path) from None
    from kerasq.schemes.slots import is_quantized_model

    wrapped = is_quantized_model(model)
    if wrapped:
        raise ModelFormatError("the model is already quantized (give the float model)",
                               file=path, layer=wrapped)
    return model


def _save(model: Any, path: str) -> None:
    from kerasq._io import atomic_output, save_h5
    from kerasq.data import check_model_finite

    check_model_finite(model, path)

    from kerasq.dispatch import save_keras3

    if save_keras3(model, path):
        return
    h5 = path.lower().endswith((".h5", ".hdf5", ".keras"))
    if path.lower().endswith(".keras"):
        raise KerasqError("quantized models are saved as .h5 or SavedModel (tfmot needs "
                          "Keras 2 formats)", file=path)
    with atomic_output(path, kind="h5" if h5 else "savedmodel") as tmp, \
            warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*HDF5 file.*legacy.*")
        if h5:
            save_h5(model, tmp)  # never HDF5's own writes to disk (see kerasq._io.save_h5)
        else:
            model.save(tmp, save_format="tf")


def _progress_verbosity() -> int:
    """Progress bars (Keras Progbar, on stdout) only on a terminal."""
    return 1 if sys.stdout.isatty() else 0


# ------------------------------------------------------------------------------ convert hook
def add_convert_options(p: argparse.ArgumentParser) -> None:
    """``kerasq convert --quantize``: options added to the convert command."""
    g = p.add_argument_group(
        "quantization",
        "quantize the converted model with the settings written in the prototxt "
        "(caffe-jacinto `quantize: true` / net_quantization_param / per-layer "
        "quantization_param, or Ristretto *Ristretto layers); a prototxt without such "
        "settings gets kerasq's default config (int8-exact DFP 8/8)")
    g.add_argument("--quantize", action="store_true",
                   help="quantize with the prototxt's quantization settings, or kerasq's "
                        "default (DFP 8/8) when it has none")
    g.add_argument("--quantize-config", metavar="FILE",
                   help="read the settings from this .prototxt or .json instead")
    g.add_argument("--solver", help="Caffe solver.prototxt (quantization_start[_iter], 0.15 "
                                    "quantization_param)")
    g.add_argument("--int8", action="store_true",
                   help="make the settings deployable as TFLite int8 (as `kerasq quantize "
                        "--int8`): power-of-two symmetric ranges, at most 8 bits")
    g.add_argument("--calibration", metavar="DATA",
                   help="calibration inputs (.npy/.npz, Caffe NCHW or the model's NHWC layout)")
    add_layout_argument(g)


def config_for_converted(source: str, solver: Any = None) -> Any:
    """The config ``kerasq convert --quantize`` uses: the caffe-jacinto / Ristretto settings
    of ``source`` (a .prototxt, or a kerasq .json), or kerasq's default (int8-exact DFP 8/8)
    when the prototxt carries none; the choice is said on stderr."""
    from kerasq.schemes import from_caffe
    from kerasq.schemes.config import QuantizationConfig

    if source.lower().endswith(".json"):
        try:
            with open(source, encoding="utf-8") as handle:
                return QuantizationConfig.from_json(handle.read())
        except OSError as err:
            raise KerasqError(f"cannot read config: {err.strerror}", file=source) from None
        except QuantizationConfigError as err:
            raise err.with_context(file=source) from None
    settings = from_caffe.read_quantization_settings(source, solver)
    if not settings.present:
        print(f"kerasq: {source}: no caffe-jacinto or Ristretto quantization settings; "
              "using kerasq's default config (int8-exact DFP 8/8: power-of-two scales, "
              "8-bit weights per channel and activations)", file=sys.stderr)
        return QuantizationConfig()
    config = from_caffe.build_config(QuantizationConfig, settings)
    print(f"kerasq: {source}: using its {settings.flavor} quantization settings",
          file=sys.stderr)
    if config.precision == "float" and not config.overrides:
        log.warning("%s: the quantization settings leave every layer in float", source)
    return config


def quantize_converted(model: Any, args: argparse.Namespace) -> Any:
    """The converted ``model`` quantized with the settings of the net prototxt (or
    ``--quantize-config``; kerasq's default when it has none, see
    :func:`config_for_converted`), calibrated on ``--calibration`` when given."""
    from kerasq.schemes import calibrate, quantize_model

    source = getattr(args, "quantize_config", None) or args.prototxt
    config = config_for_converted(source, getattr(args, "solver", None))
    if getattr(args, "int8", False):
        config = to_int8(config)
    calibration = (load_inputs(args.calibration, model, getattr(args, "layout", "auto"))
                   if getattr(args, "calibration", None) else None)
    output = str(getattr(args, "output", "") or "")
    if output.lower().endswith(".keras"):
        raise KerasqError("quantized models are saved as .h5 or SavedModel (tfmot needs Keras 2 "
                          "formats)", file=output)
    qmodel = quantize_model(model, config)
    if calibration is not None:
        calibrate(qmodel, calibration, verbose=_progress_verbosity())
    else:
        log.warning("no --calibration data: quantization ranges are not calibrated yet")
    return qmodel


def run(args: argparse.Namespace) -> int:
    from kerasq._io import check_output, output_kind
    from kerasq.dispatch import calibrate, is_keras3_file, quantize_model

    if is_keras3_file(args.model):  # the Keras 3 path: a .keras file in, a .keras file out
        check_output(args.output, output_kind(args.output, ("keras",)))
    elif args.output.lower().endswith(".keras"):
        raise KerasqError("quantized models are saved as .h5 or SavedModel (tfmot needs "
                          "Keras 2 formats)", file=args.output)
    else:
        check_output(args.output, output_kind(args.output, ("h5", "savedmodel")))
    if args.save_config:
        check_output(args.save_config, output_kind(args.save_config, ("json",)))
    config = build_config(args)
    if args.search and not (args.eval and args.calibration):
        raise KerasqError("--search needs --eval (x and y) and --calibration data",
                          layer="--search")
    calibration = load_inputs(args.calibration) if args.calibration else None
    eval_x = eval_y = None
    if args.eval:
        from kerasq.data import load_inputs_and_labels

        eval_x, eval_y = load_inputs_and_labels(args.eval, need_labels=True)
    model = _load_model(args.model)
    from kerasq.data import match_model_inputs

    if calibration is not None:
        calibration = match_model_inputs(calibration, model, args.layout, file=args.calibration)
    if eval_x is not None:
        eval_x = match_model_inputs(eval_x, model, args.layout, file=args.eval)
    if args.ignore:
        _check_layer_names(model, args.ignore, "--ignore")

    if args.search:
        from kerasq.dispatch import search_bitwidths, search_minifloat  # tf_keras or Keras 3

        minifloat = args.search_mode == "minifloat"
        search = search_minifloat if minifloat else search_bitwidths
        default = "16,8,4" if minifloat else "16,8,4,2"
        result = search(
            model, accuracy_fn(eval_x, eval_y), calibration, args.error_margin,
            candidates=_candidates(args.candidates or default), config=config,
            steps=args.steps, batch_size=args.batch_size,
            progress=lambda label, score: print(f"search: {label}: {score:.4f}",
                                                file=sys.stderr, flush=True),
        )
        print(result.table())
        if not result.within_margin:
            if args.strict:
                raise KerasqError(result.margin_warning(), file=args.model, layer="--search")
            print(f"kerasq: warning: {result.margin_warning()}", file=sys.stderr)
        config = result.config

    qmodel = quantize_model(model, config)
    if calibration is not None:
        calibrate(qmodel, calibration, args.steps, batch_size=args.batch_size,
                  verbose=_progress_verbosity())
    else:
        log.warning("no --calibration data: ranges are set during training (QAT) or from "
                    "each batch until calibrated")
    if eval_x is not None:
        evaluate = accuracy_fn(eval_x, eval_y)
        print(f"accuracy: float {evaluate(model):.4f}  quantized {evaluate(qmodel):.4f}")
    if args.report:
        from kerasq.dispatch import quantization_report
        from kerasq.schemes.report import format_report

        data = eval_x if eval_x is not None else calibration
        print(format_report(quantization_report(qmodel, data, batch_size=args.batch_size,
                                                steps=args.steps)))
    _save(qmodel, args.output)  # the output path was checked before the work started
    if args.save_config:
        from kerasq._io import write_bytes_atomic

        write_bytes_atomic(args.save_config, (config.to_json() + "\n").encode("utf-8"))
    print(f"wrote {args.output}")
    return 0


__all__: List[str] = ["add_parser", "run", "build_config", "load_inputs", "accuracy_fn",
                       "add_convert_options", "quantize_converted", "config_for_converted", "to_int8"]
