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
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

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


def integer_range(bitwidth: int, signed: bool) -> Tuple[float, float]:
    """(qmin, qmax) of a ``bitwidth``-bit integer: [-2^(b-1), 2^(b-1)-1] signed,
    [0, 2^b-1] unsigned (as floats: the quantizers clip float tensors with them).

    Example:
        >>> integer_range(8, True), integer_range(8, False)
        ((-128.0, 127.0), (0.0, 255.0))
    """
    if signed:
        return -(2.0 ** (bitwidth - 1)), 2.0 ** (bitwidth - 1) - 1.0
    return 0.0, 2.0 ** bitwidth - 1.0


def reduce_axes(rank: int, channel_axes: Optional[Sequence[int]]) -> List[int]:
    """The axes a per-channel statistic reduces over: every axis of a rank-``rank`` tensor
    but ``channel_axes`` (negative axes count from the end); all axes when None.

    Example:
        >>> reduce_axes(4, (-1,)), reduce_axes(4, (2, 3)), reduce_axes(2, None)
        ([0, 1, 2], [0, 1], [0, 1])
    """
    if channel_axes is None:
        return list(range(rank))
    keep = {a % rank for a in channel_axes}
    return [a for a in range(rank) if a not in keep]


def channel_shape(shape: Sequence[int], channel_axes: Optional[Sequence[int]]
                  ) -> Tuple[int, ...]:
    """The shape of per-channel state (fl, min, max) for a tensor of ``shape``: its sizes
    along ``channel_axes`` in axis order; ``()`` (one value) when None.

    Example:
        >>> channel_shape((3, 3, 8, 2), (-2, -1)), channel_shape((3, 3, 16), None)
        ((8, 2), ())
    """
    if channel_axes is None:
        return ()
    rank = len(shape)
    return tuple(shape[a % rank] for a in sorted(a % rank for a in channel_axes))


__all__ = ["GridSpec", "KINDS", "EXPORT_TARGETS", "FracBits", "integer_range", "reduce_axes",
           "channel_shape"]
