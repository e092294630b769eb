"""The run report: one self-contained HTML page (or JSON) about a model and its deployment.

:func:`build_report` gathers, for a Keras model (float or quantized) and optional data and
TFLite file:

* **summary**: layers, parameters, quantized tensors, overall kernel sparsity, lowest SQNR;
* **files**: size of the Keras file and of the TFLite file, plain and gzip-compressed
  (``gzip`` level 9, what a download or an app bundle roughly costs);
* **latency**: the TFLite file in ai-edge-litert's interpreter, batch 1, 1 thread, default
  kernels: the median and the fastest of timed ``invoke()`` calls after warm-up runs;
* **quantization**: the rows of :func:`kerasq.schemes.report.report` (format, bit width,
  fractional length fl, range, SQNR = 10·log10(Σx² / Σ(x − q(x))²) per quantized tensor);
* **sparsity**: exact zeros of every kernel (:func:`kerasq.prune.sparsity_report`);
* **histograms**: every kernel's float values, and every quantized layer output on ``data``
  (as the quantized model computes it), with the tensor's quantization grid: its clipping
  bounds and, where the levels are few enough to see, the levels themselves. A DFP grid with
  bit width b and fractional length fl has the levels k·2^-fl, k in [-2^(b-1), 2^(b-1) − 1]
  (signed) or [0, 2^b − 1] (unsigned); for per-channel fl the grid of the widest channel
  (lowest fl) is drawn.

:func:`write_report` writes it as ``.html`` (tables plus matplotlib plots embedded as
base64 PNG: a per-tensor SQNR bar chart and the histograms; needs the ``report`` extra) or
``.json`` (the same numbers, histograms as bin edges and counts), atomically.
``kerasq inspect MODEL --data x.npy --report report.html [--tflite model.tflite]`` does both.

Example:
    >>> rep = build_report(kerasq.load_model("q.h5"), x[:256], model_path="q.h5",
    ...                    tflite_path="q.tflite")  # doctest: +SKIP
    >>> write_report(rep, "report.html")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import math
import os
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from kerasq.errors import KerasqError
from kerasq.export.tensor_io import to_tensor

__all__ = ["build_report", "write_report", "RunReport", "file_sizes", "tflite_latency",
           "grid_of", "check_report_path", "REPORT_FORMATS"]

REPORT_FORMATS = (".html", ".json")
HISTOGRAM_BINS = 80
MAX_SAMPLES = 256  # activation histograms use at most this many inputs
MAX_HISTOGRAMS = 48  # per kind; larger nets show the first ones and say so
WEIGHT_NAMES = ("kernel", "depthwise_kernel", "pointwise_kernel", "embeddings")
ACTIVATION_TENSORS = ("output", "post_activation", "input", "pre_activation")


@dataclasses.dataclass
class RunReport:
    """Everything the report shows (see the module docstring); ``to_dict()`` is the JSON."""

    model_name: str
    model_path: Optional[str]
    layers: int
    parameters: int
    samples: Optional[int]
    quantization: List[Dict[str, Any]]
    sparsity: List[Dict[str, Any]]
    files: List[Dict[str, Any]]
    latency: Optional[Dict[str, Any]]
    weight_histograms: List[Dict[str, Any]]
    activation_histograms: List[Dict[str, Any]]
    notes: List[str] = dataclasses.field(default_factory=list)

    @property
    def summary(self) -> Dict[str, Any]:
        """Headline numbers: counts, overall kernel sparsity, lowest and median SQNR."""
        zeros = sum(r["zeros"] for r in self.sparsity)
        count = sum(r["count"] for r in self.sparsity)
        sqnr = [r["sqnr_db"] for r in self.quantization
                if isinstance(r.get("sqnr_db"), float) and not math.isnan(r["sqnr_db"])]
        return {
            "layers": self.layers,
            "parameters": self.parameters,
            "quantized_tensors": len(self.quantization),
            "kernel_sparsity": zeros / count if count else 0.0,
            "lowest_sqnr_db": min(sqnr) if sqnr else None,
            "median_sqnr_db": float(np.median(sqnr)) if sqnr else None,
        }

    def to_dict(self) -> Dict[str, Any]:
        """JSON-friendly dict; inf as the string "inf", nan as null."""
        data = dataclasses.asdict(self)
        data["summary"] = self.summary
        return _json_safe(data)


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        v = float(value)
        if math.isnan(v):
            return None
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return v
    if isinstance(value, np.integer):
        return int(value)
    return value


# ------------------------------------------------------------------------------ files
def file_sizes(path: str, kind: str) -> Dict[str, Any]:
    """Plain and gzip (level 9) size in bytes of a file, or of every file in a directory.

    Example: ``file_sizes("q.tflite", "tflite")`` -> ``{"file": "q.tflite", "kind":
    "tflite", "bytes": 12288, "gzip_bytes": 7013}``.
    """
    paths = [path]
    if os.path.isdir(path):
        paths = sorted(os.path.join(root, f) for root, _, names in os.walk(path) for f in names)
    plain = packed = 0
    for p in paths:
        with open(p, "rb") as f:
            content = f.read()
        plain += len(content)
        packed += len(gzip.compress(content, compresslevel=9, mtime=0))
    return {"file": path, "kind": kind, "bytes": plain, "gzip_bytes": packed}


def tflite_latency(path: str, sample: Optional[np.ndarray] = None, *, runs: int = 50,
                   warmup: int = 5, num_threads: int = 1) -> Dict[str, Any]:
    """Measured latency of one ``invoke()`` (batch 1) of a TFLite file, in microseconds.

    ``sample``: one input (without batch axis) for a single-input model; default zeros.
    Example: ``tflite_latency("q.tflite")["median_us"]`` -> ``41.5``.
    """
    from ai_edge_litert.interpreter import Interpreter

    from kerasq._compat import quiet_native_stderr

    with open(path, "rb") as f:
        content = f.read()
    try:
        with quiet_native_stderr():
            interpreter = Interpreter(model_content=content, num_threads=num_threads)
            interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as err:
        raise KerasqError(f"not a TFLite file: {str(err).splitlines()[0]}", file=path) from None
    details = interpreter.get_input_details()
    for detail in details:
        shape = [1] + [int(d) for d in detail["shape"][1:]]
        if list(detail["shape"]) != shape:
            interpreter.resize_tensor_input(detail["index"], shape)
    interpreter.allocate_tensors()
    for detail in interpreter.get_input_details():
        value = np.zeros(detail["shape"], detail["dtype"])
        if sample is not None and len(details) == 1 and sample.size == value.size:
            value = to_tensor(np.asarray(sample, np.float64).reshape(value.shape), detail)
        interpreter.set_tensor(detail["index"], value)
    for _ in range(warmup):
        interpreter.invoke()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - start)
    us = np.asarray(times) * 1e6
    return {"file": path, "threads": num_threads, "batch": 1, "runs": runs,
            "median_us": float(np.median(us)), "min_us": float(us.min())}


# ------------------------------------------------------------------------------ grids
def grid_of(row: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The DFP grid of a quantization row: step 2^-fl and the clipping bounds, else None.

    Uses the lowest fl of a per-channel row (the widest channel).
    Example: ``grid_of({"format": "dfp", "bits": 8, "frac_bits": (5, 5), "signed": True})``
    -> ``{"step": 0.03125, "low": -4.0, "high": 3.96875, "levels": 256, ...}``.
    """
    if row.get("format") != "dfp" or row.get("bits") is None or row.get("frac_bits") is None:
        return None
    bits = int(row["bits"])
    fl = float(row["frac_bits"][0])
    step = 2.0 ** -fl
    signed = row.get("signed") is not False
    lo_code, hi_code = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)
    return {"bits": bits, "frac_bits": fl, "frac_bits_max": float(row["frac_bits"][1]),
            "signed": signed, "step": step, "low": lo_code * step, "high": hi_code * step,
            "levels": hi_code - lo_code + 1}


def _histogram(values: np.ndarray, grid: Optional[Dict[str, Any]],
               on_grid: bool = False) -> Dict[str, Any]:
    """Counts of ``values`` over the data range, widened to the grid's clipping bounds when
    they lie within twice the data span (so unused headroom shows). ``on_grid``: the values
    are quantized, so bins are whole numbers of grid steps centred on the levels (no
    aliasing between bins and levels)."""
    values = np.asarray(values, np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return {"edges": [], "counts": [], "values": 0, "min": None, "max": None,
                "clipped_low": 0, "clipped_high": 0}
    lo, hi = float(values.min()), float(values.max())
    if grid is not None:
        wide_lo, wide_hi = min(lo, grid["low"]), max(hi, grid["high"])
        if wide_hi - wide_lo <= 2.0 * max(hi - lo, grid["step"]):
            lo, hi = wide_lo, wide_hi
    if on_grid and grid is not None:
        step = grid["step"]
        first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
        per_bin = max(1, math.ceil((last - first + 1) / HISTOGRAM_BINS))
        count = math.ceil((last - first + 1) / per_bin)
        edges = (first - 0.5 + per_bin * np.arange(count + 1)) * step
    else:
        if lo == hi:
            lo, hi = lo - 0.5, hi + 0.5
        bins = int(min(HISTOGRAM_BINS, max(10, 2 * math.sqrt(values.size))))
        edges = np.linspace(lo, hi, bins + 1)
    counts, edges = np.histogram(values, bins=edges)
    out: Dict[str, Any] = {"edges": edges.tolist(), "counts": counts.tolist(),
                           "values": int(values.size), "min": float(values.min()),
                           "max": float(values.max())}
    if grid is not None:
        out["clipped_low"] = int(np.count_nonzero(values < grid["low"]))
        out["clipped_high"] = int(np.count_nonzero(values > grid["high"]))
    return out


# ------------------------------------------------------------------------------ building
def _layer_index(model: Any) -> Dict[str, Any]:
    """User-facing layer name -> model layer (a tfmot wrapper is found by its inner name)."""
    index: Dict[str, Any] = {}
    for layer in model.layers:
        index.setdefault(layer.name, layer)
        inner = getattr(layer, "layer", None)
        if inner is not None and hasattr(inner, "name"):
            index[inner.name] = layer
    return index


def _output_in(model: Any, layer: Any) -> Any:
    """The output tensor of ``layer`` in ``model``'s graph (a layer reused by several
    models, e.g. after pruning and stripping, has one output per model)."""
    from kerasq._compat import keras

    nodes = len(getattr(layer, "inbound_nodes", []) or [None])
    for node in [nodes - 1] + list(range(nodes - 1)):
        tensor = layer.get_output_at(node)
        try:
            keras.Model(model.inputs, tensor)
        except ValueError:
            continue
        return tensor
    return layer.output


def _as_samples(data: Any, limit: int) -> Any:
    if isinstance(data, (list, tuple)):
        return [np.asarray(a)[:limit] for a in data]
    return np.asarray(data)[:limit]


def _weight_histograms(model: Any, rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    by_tensor = {(r["layer"], r["tensor"]): r for r in rows}
    found = []
    for layer in model.layers:
        inner = getattr(layer, "layer", None)
        name = inner.name if inner is not None and hasattr(inner, "name") else layer.name
        for weight in layer.weights:
            tensor = weight.name.split(":")[0].split("/")[-1]
            if tensor not in WEIGHT_NAMES:
                continue
            row = by_tensor.get((name, tensor))
            grid = grid_of(row) if row else None
            found.append({"layer": name, "tensor": tensor,
                          "format": row["format"] if row else "float", "grid": grid,
                          **_histogram(weight.numpy(), grid)})
    return found


def _activation_histograms(model: Any, rows: Sequence[Dict[str, Any]], data: Any,
                           notes: List[str]) -> List[Dict[str, Any]]:
    from kerasq._compat import keras

    index = _layer_index(model)
    chosen: Dict[str, Dict[str, Any]] = {}
    for tensor in ACTIVATION_TENSORS:
        for r in rows:
            if r["tensor"] == tensor and r["layer"] not in chosen and r["layer"] in index:
                chosen[r["layer"]] = r
    order = [layer.name for layer in model.layers]
    names = sorted(chosen, key=lambda n: order.index(index[n].name))
    if len(names) > MAX_HISTOGRAMS:
        notes.append(f"activation histograms: the first {MAX_HISTOGRAMS} of {len(names)} "
                     f"quantized layer outputs")
        names = names[:MAX_HISTOGRAMS]
    if not names:
        return []
    probe = keras.Model(model.inputs, [_output_in(model, index[n]) for n in names])
    outs = probe.predict(_as_samples(data, MAX_SAMPLES), batch_size=32, verbose=0)
    outs = outs if isinstance(outs, (list, tuple)) else [outs]
    result = []
    for name, values in zip(names, outs):
        row = chosen[name]
        grid = grid_of(row)
        result.append({"layer": name, "tensor": row["tensor"], "format": row["format"],
                       "grid": grid, **_histogram(values, grid, on_grid=True)})
    return result


def build_report(model: Any, data: Any = None, *, model_path: Optional[str] = None,
                 tflite_path: Optional[str] = None, latency_runs: int = 50,
                 batch_size: int = 32) -> RunReport:
    """Gather the report of ``model`` (see the module docstring).

    ``data``: model inputs for activation SQNR and histograms (first 256 samples for the
    histograms); ``model_path``/``tflite_path``: files whose sizes are listed (the TFLite
    file is also timed).

    A Keras 3 model is reported through its tf_keras twin (:func:`kerasq.dispatch.as_tf_keras`:
    the same layers, weights and quantizer state, the same outputs).

    Example: ``build_report(qmodel, x, tflite_path="q.tflite").summary["lowest_sqnr_db"]``.
    """
    from kerasq.data import check_array, check_input_file, check_int, check_keras_model
    from kerasq.dispatch import as_tf_keras
    from kerasq.prune import sparsity_report
    from kerasq.schemes.report import report as quantization_report

    model = as_tf_keras(model)
    check_keras_model(model, "model")
    check_array(data, "data", model=model, optional=True)
    check_int(latency_runs, "latency_runs")
    check_int(batch_size, "batch_size")
    if tflite_path is not None:
        check_input_file(tflite_path, "tflite_path", "TFLite file")
    notes: List[str] = []
    rows = [r.to_dict() for r in quantization_report(model, data, batch_size=batch_size)]
    sparsity = [r.to_dict() for r in sparsity_report(model)]
    files = []
    if model_path and os.path.exists(model_path):
        files.append(file_sizes(model_path, "keras"))
    latency = None
    if tflite_path:
        if not os.path.isfile(tflite_path):
            raise KerasqError("no such file", file=tflite_path)
        files.append(file_sizes(tflite_path, "tflite"))
        sample = None
        if data is not None and not isinstance(data, (list, tuple)):
            sample = np.asarray(data[:1])
        latency = tflite_latency(tflite_path, sample, runs=latency_runs)
    weights = _weight_histograms(model, rows)
    if len(weights) > MAX_HISTOGRAMS:
        notes.append(f"weight histograms: the first {MAX_HISTOGRAMS} of {len(weights)} kernels")
        weights = weights[:MAX_HISTOGRAMS]
    activations = _activation_histograms(model, rows, data, notes) if data is not None else []
    if data is None:
        notes.append("no data: activation SQNR and histograms need --data")
    samples = None
    if data is not None:
        samples = len(data[0]) if isinstance(data, (list, tuple)) else len(data)
    return RunReport(
        model_name=model.name, model_path=model_path, layers=len(model.layers),
        parameters=int(model.count_params()), samples=samples, quantization=rows,
        sparsity=sparsity, files=files, latency=latency, weight_histograms=weights,
        activation_histograms=activations, notes=notes)


def check_report_path(path: str) -> None:
    """Refuse a report file name that is neither .html nor .json (before any work).

    Example: ``check_report_path("r.pdf")`` raises :class:`~kerasq.errors.KerasqError`.
    """
    ext = os.path.splitext(path)[1].lower()
    if ext not in REPORT_FORMATS:
        raise KerasqError("unknown report format: name the file .html or .json", file=path,
                          layer="--report")
    if ext == ".html":
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:
            raise KerasqError("the HTML report needs matplotlib: pip install 'kerasq[report]' "
                              "(or write report.json)", file=path, layer="--report")


def write_report(report: RunReport, path: str) -> None:
    """Write ``report`` to ``path`` (.html or .json) atomically.

    Example: ``write_report(build_report(qmodel, x), "report.html")``.
    """
    from kerasq._io import write_bytes_atomic
    from kerasq.data import check_path

    if not isinstance(report, RunReport):
        raise KerasqError(f"expected a RunReport (from build_report), got "
                          f"{type(report).__name__}", layer="report")
    check_report_path(check_path(path, "path"))
    if path.lower().endswith(".json"):
        text = json.dumps(report.to_dict(), indent=1, allow_nan=False) + "\n"
    else:
        from kerasq.report.html import render_html

        text = render_html(report)
    write_bytes_atomic(path, text.encode("utf-8"))
