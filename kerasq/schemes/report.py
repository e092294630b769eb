"""Per-layer quantization report: caffe-jacinto's ``display_quantization`` table, plus SQNR.

:func:`report` lists every quantized tensor of a quantized Keras model (weights, layer
outputs, activations inside a layer, quantized model inputs): its format (DFP bit width and
fractional length fl, or caffe-jacinto's scale/offset, minifloat ExMy, power-of-two
exponent range), signedness, the range the quantizer holds, and the signal-to-quantization-
noise ratio

    SQNR = 10·log10( Σ x² / Σ (x − q(x))² )  dB

where x is the float tensor that enters the quantizer and q(x) what leaves it. For weights x
is the float (shadow) weight; for activations x is the tensor computed by the quantized
model just before it is quantized, accumulated over all batches of ``data``, so the column
is the noise each quantizer adds locally (not the error accumulated from earlier layers).
An exact quantization gives ``inf``; an all-zero tensor ``nan``.

``format_report(rows)`` renders the rows as a text table; ``kerasq inspect model.h5
[--data x.npy]`` prints it.

Example:
    >>> rows = kerasq.schemes.report(qmodel, x_val[:256])  # doctest: +SKIP
    >>> print(kerasq.schemes.report.format_report(rows))  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
import types
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from kerasq.schemes import slots

log = logging.getLogger("kerasq.schemes.report")

__all__ = ["report", "format_report", "inspect_section", "ReportRow", "sqnr_db"]


@dataclasses.dataclass
class ReportRow:
    """One quantized tensor. ``frac_bits`` (and min/max) may summarize per-channel values
    as ``(lowest, highest)``; fields that do not apply are None."""

    layer: str
    tensor: str  # "kernel", "bias", "output", "post_activation", "input", ...
    quantizer: str  # class name
    format: str  # "dfp", "affine", "minifloat E5M10", "pow2 [2^-8, 2^-1]", tfmot's "int8"
    bits: Optional[int] = None
    frac_bits: Optional[Tuple[float, float]] = None
    scale: Optional[Tuple[float, float]] = None
    offset: Optional[Tuple[float, float]] = None
    signed: Optional[bool] = None
    min: Optional[float] = None
    max: Optional[float] = None
    sqnr_db: Optional[float] = None
    elements: int = 0  # values the SQNR was computed over

    def to_dict(self) -> Dict[str, Any]:
        """JSON-friendly dict of the row."""
        return dataclasses.asdict(self)


def sqnr_db(x: Any, q: Any) -> float:
    """10·log10(Σx² / Σ(x−q)²) in dB (float64); inf if q == x, nan if x is all zero.

    Example:
        >>> round(sqnr_db([1.0, 2.0], [1.0, 2.5]), 3)
        13.01
    """
    x64 = np.asarray(x, dtype=np.float64)
    q64 = np.asarray(q, dtype=np.float64)
    return _ratio_db(float(np.sum(x64 * x64)), float(np.sum((x64 - q64) ** 2)))


def _ratio_db(signal: float, noise: float) -> float:
    if signal == 0.0:
        return math.nan
    if noise == 0.0:
        return math.inf
    return 10.0 * math.log10(signal / noise)


# ------------------------------------------------------------------------------ discovery
class _Slot:
    """A quantizer as used inside one layer, with its variables and an accumulator."""

    def __init__(self, layer: str, tensor: str, quantizer: Any, variables: Dict[str, Any]):
        self.layer = layer
        self.tensor = tensor
        self.quantizer = quantizer
        self.variables = variables or {}
        self.signal = 0.0
        self.noise = 0.0
        self.elements = 0

    def record(self, x: Any, q: Any) -> None:
        x64 = np.asarray(x, dtype=np.float64)
        q64 = np.asarray(q, dtype=np.float64)
        self.signal += float(np.sum(x64 * x64))
        self.noise += float(np.sum((x64 - q64) ** 2))
        self.elements += int(x64.size)


class _Recorder:
    """Stands in for a quantizer object during the report's forward passes."""

    def __init__(self, slot: _Slot) -> None:
        self._slot = slot
        self._inner = slot.quantizer

    def __call__(self, inputs: Any, training: Any, weights: Any, **kwargs: Any) -> Any:
        out = self._inner(inputs, training, weights, **kwargs)
        if hasattr(inputs, "numpy") and hasattr(out, "numpy"):
            self._slot.record(inputs.numpy(), out.numpy())
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


_TENSOR_LABELS = {"pre": "pre_activation", "post": "post_activation"}


def _slots(model: Any) -> List[Tuple[_Slot, Any]]:
    """(slot, patch) for every quantizer; ``patch(obj)`` installs a stand-in, returning undo."""
    found: List[Tuple[_Slot, Any]] = []
    for entry in slots.iter_slots(model):
        name = entry.layer.name  # tfmot wrappers: report the wrapped layer's name
        tensor = entry.attr if entry.weight is not None else _TENSOR_LABELS.get(
            entry.role, entry.role)
        slot = _Slot(name, tensor, entry.quantizer, entry.variables)
        if entry.weight is not None:
            slot.weight = entry.weight  # type: ignore[attr-defined]
        found.append((slot, entry.replace))
    return found


# ------------------------------------------------------------------------------ describing
def _unwrap(quantizer: Any, variables: Dict[str, Any]) -> Tuple[Any, Dict[str, Any]]:
    """The quantizer that does the rounding and its variables (see :func:`slots.unwrap`)."""
    return slots.unwrap(quantizer, variables)


def _span(value: Any) -> Optional[Tuple[float, float]]:
    if value is None:
        return None
    arr = np.asarray(value.numpy() if hasattr(value, "numpy") else value, dtype=np.float64)
    if arr.size == 0:
        return None
    return float(arr.min()), float(arr.max())


def _describe(slot: _Slot) -> ReportRow:
    q, v = _unwrap(slot.quantizer, slot.variables)
    cls = type(q).__name__
    row = ReportRow(layer=slot.layer, tensor=slot.tensor, quantizer=cls, format="?")
    bits = getattr(q, "bitwidth", None)
    if bits is None:
        bits = getattr(q, "num_bits", None)  # tfmot's own quantizers
    exp_bits, mant_bits = getattr(q, "exp_bits", None), getattr(q, "mant_bits", None)
    if exp_bits is not None and mant_bits is not None:
        row.format = f"minifloat E{exp_bits}M{mant_bits}"
        row.bits = 1 + int(exp_bits) + int(mant_bits)
        row.signed = True
    elif hasattr(q, "exp_min") and hasattr(q, "exp_max"):
        row.format = f"pow2 [2^{q.exp_min}, 2^{q.exp_max}]"
        row.signed = True
    else:
        row.bits = int(bits) if bits is not None else None
        power2 = getattr(q, "power2_range", True) and not getattr(q, "apply_offset", False)
        if "frac_bits" in v and power2:
            row.format = "dfp"
            row.frac_bits = _span(v["frac_bits"])
        elif "scale" in v:
            row.format = "affine"
            row.scale = _span(v["scale"])
            row.offset = _span(v.get("offset"))
        elif "min_var" in v:
            row.format = f"int{row.bits}" if row.bits else "tfmot"
        else:
            row.format = "dfp" if power2 else "affine"
        signed = getattr(q, "signed", None)
        lo = _span(v.get("min", v.get("min_var")))
        if signed is None and getattr(q, "is_weight_quantizer", False):
            signed = True
        if signed is None and lo is not None and "frac_bits" in v:
            signed = lo[0] < 0.0  # kerasq: unsigned iff the tracked min >= 0
        row.signed = signed
        if "linked" in v and float(np.asarray(v["linked"].numpy())) <= 0:
            # an accumulator-grid bias stays float until the int8 export links its fl
            row.format, row.frac_bits = "float (acc)", None
    lo = _span(v.get("min", v.get("min_var")))
    hi = _span(v.get("max", v.get("max_var")))
    row.min = lo[0] if lo else None
    row.max = hi[1] if hi else None
    return row


# ------------------------------------------------------------------------------ data
def _batches(data: Any, batch_size: int, steps: Optional[int]) -> Iterator[Any]:
    from kerasq._compat import tf

    if isinstance(data, (np.ndarray, list, tuple)) and not isinstance(data, tf.data.Dataset):
        arrays = [np.asarray(a) for a in data] if isinstance(data, (list, tuple)) else [
            np.asarray(data)]
        n = len(arrays[0])
        count = 0
        for start in range(0, n, batch_size):
            if steps is not None and count >= steps:
                return
            parts = [a[start:start + batch_size] for a in arrays]
            yield parts[0] if len(parts) == 1 else parts
            count += 1
        return
    for count, item in enumerate(data):
        if steps is not None and count >= steps:
            return
        if isinstance(item, tuple) and len(item) in (2, 3):
            item = item[0]  # (x, y) or (x, y, sample_weight)
        yield item


def report(qmodel: Any, data: Any = None, *, batch_size: int = 32,
           steps: Optional[int] = None) -> List[ReportRow]:
    """Per-tensor quantization rows of ``qmodel`` (see the module docstring).

    ``data``: inputs (array, list of arrays for several inputs, or a ``tf.data`` dataset of
    x or (x, y)); without it activation rows have no SQNR. Weights' SQNR is always given.
    Runs the model eagerly with ``training=False``; no variable is changed.

    Example: ``print(format_report(report(qmodel, x[:128])))``.
    """
    from kerasq.data import check_array, check_int, check_keras_model

    check_keras_model(qmodel, "qmodel")
    check_array(data, "data", model=qmodel, optional=True, streams=True)
    check_int(batch_size, "batch_size")
    check_int(steps, "steps", optional=True)
    found = _slots(qmodel)
    if not found:
        log.info("report: %s has no quantized tensors", getattr(qmodel, "name", "model"))
        return []
    weight_slots = [s for s, _ in found if hasattr(s, "weight")]
    for slot in weight_slots:
        w = slot.weight  # type: ignore[attr-defined]
        slot.record(w.numpy(), slot.quantizer(w, False, slot.variables).numpy())
    if data is not None:
        undo = []
        try:
            for slot, patch in found:
                if not hasattr(slot, "weight"):
                    undo.append(patch(_Recorder(slot)))
            for batch in _batches(data, batch_size, steps):
                qmodel(batch, training=False)
        finally:
            for restore in reversed(undo):
                restore()
    rows = []
    for slot, _ in found:
        row = _describe(slot)
        if slot.elements:
            row.sqnr_db = _ratio_db(slot.signal, slot.noise)
            row.elements = slot.elements
        rows.append(row)
    return rows


def _fmt_span(span: Optional[Tuple[float, float]], digits: int = 4) -> str:
    if span is None:
        return "-"
    lo, hi = span
    if lo == hi:
        return f"{lo:.{digits}g}"
    return f"{lo:.{digits}g}..{hi:.{digits}g}"


def _fmt(value: Optional[float], digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return f"{value:.{digits}g}"


def format_report(rows: Sequence[ReportRow]) -> str:
    """The rows as a fixed-width text table (one line per quantized tensor).

    Example: ``print(format_report(report(qmodel, x)))``.
    """
    header = ("layer", "tensor", "format", "bits", "fl", "scale", "offset", "signed", "min",
              "max", "SQNR dB")
    table = [header]
    for r in rows:
        table.append((
            r.layer, r.tensor, r.format, "-" if r.bits is None else str(r.bits),
            _fmt_span(r.frac_bits), _fmt_span(r.scale), _fmt_span(r.offset),
            "-" if r.signed is None else ("yes" if r.signed else "no"),
            _fmt(r.min), _fmt(r.max),
            "-" if r.sqnr_db is None else (_fmt(r.sqnr_db, 2) if math.isinf(r.sqnr_db)
                                           or math.isnan(r.sqnr_db) else f"{r.sqnr_db:.2f}"),
        ))
    if len(table) == 1:
        return "no quantized tensors"
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    lines = []
    for n, row in enumerate(table):
        cells = [str(c).ljust(w) if i < 3 else str(c).rjust(w)
                 for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def inspect_section(model: Any, data: Any = None, *, batch_size: int = 32) -> str:
    """The quantization part of ``kerasq inspect``: "" for a float model, else a titled table.

    Example: ``print(inspect_section(kerasq.load_model("q.h5"), x[:256]))``.
    """
    rows = report(model, data, batch_size=batch_size)
    if not rows:
        return ""
    where = "SQNR on the given data" if data is not None else "SQNR of weights only (--data)"
    return f"quantization ({len(rows)} quantized tensors; {where}):\n" + format_report(rows)


# ``kerasq.schemes.report`` is both this module and, through the package's lazy exports, the
# function ``report``; which one a user gets depends on import order. Both spellings work
# either way: the module is callable and the function carries the module's public names.
class _CallableModule(types.ModuleType):
    """Lets ``kerasq.schemes.report(qmodel, data)`` work although ``report`` is a module."""

    def __call__(self, qmodel: Any, data: Any = None, **kwargs: Any) -> List[ReportRow]:
        return report(qmodel, data, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
for _name in __all__:
    setattr(report, _name, globals()[_name])
