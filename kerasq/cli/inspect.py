"""``kerasq inspect``: show a model's layers, quantization formats and sparsity.

Example::

    kerasq inspect model.h5

The table is built from :data:`COLUMNS`, a list of ``(header, function(layer) -> str)``;
other features add columns there (see :func:`register_column`).
"""

from __future__ import annotations

import argparse
import os
from typing import Any, Callable, List, Tuple

from kerasq.errors import ModelFormatError

Column = Tuple[str, Callable[[Any], str]]


def _output_shape(layer: Any) -> str:
    try:
        shape = layer.output_shape
    except (AttributeError, RuntimeError):
        return "?"
    if isinstance(shape, list):
        return ", ".join(str(tuple(s)) for s in shape)
    return str(tuple(shape))


def _params(layer: Any) -> str:
    return f"{int(layer.count_params()):,}" if layer.built else "0"


COLUMNS: List[Column] = [
    ("layer", lambda layer: layer.name),
    ("type", lambda layer: type(layer).__name__),
    ("output shape", _output_shape),
    ("params", _params),
]


def register_column(header: str, fn: Callable[[Any], str]) -> None:
    """Add a column (e.g. quantization format, sparsity) to ``kerasq inspect``."""
    COLUMNS.append((header, fn))


def load_any(path: str) -> Any:
    """Load a .h5 / .keras / SavedModel Keras model (float, converted, quantized or pruned).
    A .keras file written by Keras 3 is shown as its tf_keras twin (same layers, weights and
    quantizer state: :func:`kerasq.dispatch.as_tf_keras`)."""
    from kerasq.dispatch import as_tf_keras, load_model

    return as_tf_keras(load_model(path, compile=False))


def table_rows(model: Any) -> List[List[str]]:
    """One row per layer, one cell per column in :data:`COLUMNS`."""
    return [[fn(layer) for _, fn in COLUMNS] for layer in model.layers]


def format_table(model: Any) -> str:
    """The layer table plus totals, as text."""
    headers = [h for h, _ in COLUMNS]
    rows = table_rows(model)
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    total = int(sum(int(w.shape.num_elements()) for w in model.weights))
    trainable = int(sum(int(w.shape.num_elements()) for w in model.trainable_weights))
    lines.append(f"{len(model.layers)} layers, {total:,} parameters ({trainable:,} trainable)")
    return "\n".join(lines)


def add_parser(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser(
        "inspect",
        help="Show a model's layers, quantization formats and sparsity.",
        description="Show a Keras model's layers (type, output shape, parameters).",
    )
    p.add_argument("model", help="model.h5, model.keras or a SavedModel directory")
    # --- quantization report (kerasq.schemes.report) ---
    p.add_argument(
        "--data",
        metavar="NPY",
        help="model inputs (.npy, or .npz with x) for the SQNR of activations in "
        "the quantization table of a quantized model",
    )
    # --- sparsity report (kerasq.prune) ---
    from kerasq.cli.quantize import add_layout_argument

    add_layout_argument(p)
    p.add_argument(
        "--sparsity",
        action="store_true",
        help="also print exact zeros / count of every kernel and the total "
        "(caffe-jacinto display_sparsity format)",
    )
    # --- run report (kerasq.report) ---
    p.add_argument(
        "--report",
        metavar="FILE",
        help="also write a report: report.html (one self-contained page: tables, SQNR bars, "
        "weight and activation histograms with the quantization grid; needs matplotlib) "
        "or report.json (the same numbers)",
    )
    p.add_argument(
        "--tflite",
        metavar="FILE",
        help="the exported .tflite file: with --data each of its outputs is compared with "
        "the model's; with --report also its size and measured latency",
    )
    p.set_defaults(func=run)


def outputs_section(model: Any) -> str:
    """One line per model output: its name (the Caffe top for a converted net), shape and
    kind ("classifier" for a Softmax output, else "values").

    Example:
        >>> print(outputs_section(model))  # doctest: +SKIP
        outputs: conv5-2 (None, 4) values; prob1 (None, 2) classifier
    """
    from kerasq.export.verify import output_kinds, output_names

    parts = [f"{name} {tuple(t.shape)} {kind}" for name, kind, t in
             zip(output_names(model), output_kinds(model), model.outputs)]
    return "outputs: " + "; ".join(parts)


def file_outputs_section(tflite_path: str, model: Any, data: Any) -> str:
    """Each output of an exported .tflite file against the same-named output of ``model``
    on ``data`` (TFLite interpreter vs Keras), one line per output."""
    from kerasq.errors import KerasqError
    from kerasq.export.verify import verify_tflite

    try:
        with open(tflite_path, "rb") as handle:
            content = handle.read()
    except OSError as err:
        raise ModelFormatError(f"cannot read the file: {err.strerror}", file=tflite_path)
    try:
        report = verify_tflite(content, model, data)
    except KerasqError as err:
        raise err.with_context(file=tflite_path)
    lines = [f"{os.path.basename(tflite_path)} against the model ({report.samples} samples):"]
    lines += [f"  {o.name}: {o.describe()}" for o in report.outputs]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    report_path = getattr(args, "report", None)
    if report_path:
        from kerasq.report import check_report_path

        check_report_path(report_path)
    elif getattr(args, "tflite", None) and not getattr(args, "data", None):
        raise ModelFormatError("--tflite needs --report or --data", file=args.tflite)
    from kerasq.data import load_inputs_and_labels

    if getattr(args, "data", None):
        load_inputs_and_labels(args.data)  # bad data fails before the model is loaded
    model = load_any(args.model)
    print(f"model {model.name}: {args.model}")
    print(format_table(model))
    print(outputs_section(model))
    # --- quantization report (kerasq.schemes.report) ---
    from kerasq.cli.quantize import load_inputs
    from kerasq.schemes.report import inspect_section

    data = (load_inputs(args.data, model, getattr(args, "layout", "auto"))
            if getattr(args, "data", None) else None)
    section = inspect_section(model, data)
    if section:
        print()
        print(section)
    # --- sparsity report (kerasq.prune) ---
    if getattr(args, "sparsity", False):
        from kerasq.prune import format_sparsity, sparsity_report

        print()
        print(format_sparsity(sparsity_report(model)))
    if getattr(args, "tflite", None) and data is not None:
        print()
        print(file_outputs_section(args.tflite, model, data))
    # --- run report (kerasq.report) ---
    if report_path:
        from kerasq.report import build_report, write_report

        write_report(build_report(model, data, model_path=args.model, tflite_path=args.tflite),
                     report_path)
        print(f"wrote {report_path}")
    return 0
