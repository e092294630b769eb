"""The grid a quantizer puts its tensor on, as a typed value (and the export targets).

Quantizers describe their grid with :class:`GridSpec` (``export_spec``); the exporter and
the integer runner consume it. The module is pure data (no TensorFlow), so every layer
above ``numerics`` can use it.

Example:
    >>> spec = GridSpec(kind="dfp", bitwidth=8, frac_bits=4, signed=True)
    >>> spec.step, spec.min_value, spec.max_value
    (0.0625, -8.0, 7.9375)
    >>> spec.describe()
    'dfp s8 fl=4'
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Optional, Union

import numpy as np

from kerasq.numerics.rounding import DEFAULT_ROUNDING

#: Grid kinds of :class:`GridSpec`.
KINDS = ("none", "dfp", "affine", "pow2", "minifloat", "values")
#: TFLite export targets (``kerasq export --target``, ``kerasq.export.to_tflite(target=)``).
EXPORT_TARGETS = ("int8", "int16x8", "float16", "float")

FracBits = Union[int, np.ndarray]


@dataclasses.dataclass(frozen=True)
class GridSpec:
    """The grid one quantizer maps its tensor onto.

    ``kind``: ``"none"`` (identity), ``"dfp"`` (q·2^-fl with q in [qmin, qmax]),
    ``"affine"`` (tfmot's min/max FakeQuant grid, range ``[low, high]``),
    ``"pow2"`` (±2^k, k in [exp_min, exp_max], and 0) or ``"values"`` (some other grid,
    e.g. minifloat, known only through its values). ``frac_bits`` is an int, or for
    per-channel weights an int array along ``axis`` of the tensor.
    """

    kind: str
    bitwidth: int = 0
    frac_bits: Any = 0
    signed: bool = True
    narrow: bool = False
    rounding: str = DEFAULT_ROUNDING
    axis: Optional[int] = None
    exp_min: int = 0
    exp_max: int = 0
    low: float = 0.0
    high: float = 0.0
    exp_bits: int = 0
    mant_bits: int = 0
    subnormals: bool = False

    @property
    def qmin(self) -> int:
        """Smallest integer code."""
        if not self.signed:
            return 0
        return -(2 ** (self.bitwidth - 1)) + (1 if self.narrow else 0)

    @property
    def qmax(self) -> int:
        """Largest integer code."""
        return 2 ** (self.bitwidth - 1) - 1 if self.signed else 2**self.bitwidth - 1

    @property
    def step(self) -> Any:
        """2^-fl (float, or float array per channel)."""
        return (
            np.ldexp(1.0, -np.asarray(self.frac_bits))
            if np.ndim(self.frac_bits)
            else math.ldexp(1.0, -int(self.frac_bits))
        )

    @property
    def min_value(self) -> Any:
        return self.qmin * self.step

    @property
    def max_value(self) -> Any:
        return self.qmax * self.step

    @property
    def per_channel(self) -> bool:
        return np.ndim(self.frac_bits) > 0

    def describe(self) -> str:
        """Short human-readable form, e.g. ``dfp s8 fl=4`` or ``dfp u8 fl=[5..7]``."""
        if self.kind == "none":
            return "float"
        if self.kind == "pow2":
            return f"pow2 2^[{self.exp_min}..{self.exp_max}]"
        if self.kind == "values":
            return "values"
        if self.kind == "minifloat":
            return f"minifloat E{self.exp_bits}M{self.mant_bits}"
        if self.kind == "affine":
            return f"affine {self.bitwidth}-bit [{self.low:.4g}, {self.high:.4g}]"
        fl = np.asarray(self.frac_bits)
        fl_text = str(int(fl)) if fl.ndim == 0 else f"[{int(fl.min())}..{int(fl.max())}]"
        return f"dfp {'s' if self.signed else 'u'}{self.bitwidth} fl={fl_text}"

    def as_dict(self) -> Dict[str, Any]:
        """The fields as a dict (``GridSpec(**spec.as_dict()) == spec``)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


__all__ = ["GridSpec", "KINDS", "EXPORT_TARGETS", "FracBits"]
