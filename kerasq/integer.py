"""Run a calibrated dynamic-fixed-point model end to end in integers.

:func:`run` executes a model made by :func:`kerasq.quantize_model` (and calibrated or
trained) the way a fixed-point accelerator would: every quantized tensor is held as
integers ``q`` with a fractional length ``fl`` (value ``q·2^−fl``); Conv2D,
DepthwiseConv2D and Dense run on the integer kernels of :mod:`kerasq.ops` (int8/int16
operands, exact accumulation, bias, shift requantization with the output quantizer's
rounding and saturation); ReLU, max pooling, padding, reshapes, Add and Concatenate work
on the integers exactly (operands aligned to the larger fractional length by left
shifts) and are requantized by their output quantizer.

The result equals the fake-quantized Keras model ``qmodel(x, training=False)`` bit for
bit whenever the float32 simulation is itself exact (accumulators below 2^24 steps of
the accumulator's grid, which holds for 8-bit layers with up to ~1000 inputs per output)
and the rounding is deterministic; ``tests/test_integer.py`` checks this on calibrated
models.

Layers without an output quantizer keep their exact accumulator (raw int32 sums from the
kernel, per-channel alignment and bias in int64). Caffe's constant ``Bias``
(``ConstantBias``) is an exact integer add, global average pooling one exact rounding of
``sum / (H·W)``, Softmax runs in float32 on the dequantized integers (as the model does).
:func:`prepare` reads the weights and grids once and returns an :class:`IntegerProgram`:
calling it runs one ``tf.function`` graph, traced once per input shape (any batch size),
with the integer weights, biases and grids as constants; integer tensors flow between
the kernels in the narrowest dtype their static bounds allow (int8 for signed 8-bit
grids, uint8 for unsigned ones such as ReLU outputs, which the u8·s8 kernels read
directly); requantization, ReLU, Add, pooling and padding are graph
ops on those integers, and no Python runs per layer. A linear layer without output
quantizer runs together with the quantized ReLU that alone consumes it as one kernel
call (exact: rounding commutes with ReLU); a ZeroPadding2D before a VALID convolution
becomes the kernel's own zero padding. :meth:`IntegerProgram.run_eager` runs the same
layers one by one on numpy int64 values, the reference the graph is tested against.
:func:`run` keeps the program it prepared for a model (the last few models) and
reuses it while none of the model's variables has changed: each call compares their bytes
with those the program was read from (one graph call, one op with the C++ library) and
prepares again otherwise.

Grouped convolutions run as one kernel call per group.

Supported: power-of-two DFP quantizers (kerasq's default scheme) of up to 16 bits.
caffe-jacinto's non-power-of-two or offset scales, minifloat and power-of-two weights
have no integer form and raise :class:`kerasq.errors.UnsupportedLayerError`.

Example:
    >>> import kerasq  # doctest: +SKIP
    >>> qmodel = kerasq.quantize_model(model); kerasq.calibrate(qmodel, x_cal)  # doctest: +SKIP
    >>> y = kerasq.integer.run(qmodel, x)   # == qmodel(x, training=False)  # doctest: +SKIP
    >>> program = kerasq.integer.prepare(qmodel)  # doctest: +SKIP
    >>> y = program(x)                      # the compiled graph, same integers  # doctest: +SKIP
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import weakref
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from kerasq.errors import UnsupportedLayerError, VerificationError
from kerasq.numerics.grid import GridSpec
from kerasq.numerics.rounding import DEFAULT_ROUNDING, np_shift_round
from kerasq.schemes import slots

log = logging.getLogger("kerasq.integer")


@dataclasses.dataclass
class IntTensor:
    """Exact fixed-point tensor: ``values·2^−frac`` (int64 values)."""

    values: np.ndarray
    frac: int

    def to_float(self) -> np.ndarray:
        """The represented real values as float32 (exact for up to 24 significant bits)."""
        return np.ldexp(self.values.astype(np.float64), -self.frac).astype(np.float32)


Value = Union[IntTensor, np.ndarray]


# ------------------------------------------------------------------ integer helpers


def _shift_round(values: np.ndarray, shift: int, rounding: str) -> np.ndarray:
    """round(values / 2^shift) for shift > 0 in exact int64 arithmetic."""
    if rounding == "stochastic":
        raise UnsupportedLayerError(f"rounding {rounding!r} has no deterministic integer form")
    return np_shift_round(values, shift, rounding)


def _requantize(t: IntTensor, frac: int, bitwidth: int, signed: bool, rounding: str) -> IntTensor:
    """Put an exact tensor on the DFP grid (bitwidth, frac): shift, round, saturate."""
    shift = t.frac - frac
    if shift > 0:
        v = _shift_round(t.values, shift, rounding)
    else:
        v = t.values * (np.int64(1) << np.int64(-shift))
    lo, hi = (-(2 ** (bitwidth - 1)), 2 ** (bitwidth - 1) - 1) if signed else (0, 2**bitwidth - 1)
    return IntTensor(np.clip(v, lo, hi), frac)


def _divide_round(num: np.ndarray, den: int, rounding: str) -> np.ndarray:
    """round(num / den) for an integer den > 0 in exact int64 arithmetic."""
    num = np.asarray(num, np.int64)
    d = np.int64(den)
    if rounding == "half_up":
        return (2 * num + d) // (2 * d)
    if rounding == "nearest":
        return np.sign(num) * ((2 * np.abs(num) + d) // (2 * d))
    if rounding == "nearest_even":
        q, r = np.divmod(num, d)
        return q + ((2 * r > d) | ((2 * r == d) & (q % 2 == 1)))
    raise UnsupportedLayerError(f"rounding {rounding!r} has no deterministic integer form")


def _mean_requantize(sums: np.ndarray, count: int, frac: int, spec: GridSpec) -> IntTensor:
    """The DFP grid value of ``sums·2^−frac / count``: one exact rounding of the quotient.

    The float simulation divides in float32 first; both agree unless the exact quotient
    lies within float32's relative error (2^−24) of a rounding tie without being one,
    impossible while ``count·2^max(frac − out_frac, 0)·2^bitwidth < 2^23``.
    """
    out_frac = int(np.asarray(spec.frac_bits).reshape(-1)[0])
    shift = out_frac - frac
    num = sums << np.int64(max(shift, 0))
    den = count << max(-shift, 0)
    v = _divide_round(num, den, spec.rounding)
    lo, hi = ((-(2 ** (spec.bitwidth - 1)), 2 ** (spec.bitwidth - 1) - 1) if spec.signed
              else (0, 2**spec.bitwidth - 1))
    return IntTensor(np.clip(v, lo, hi), out_frac)


def _align(tensors: Sequence[IntTensor]) -> Tuple[List[np.ndarray], int]:
    frac = max(t.frac for t in tensors)
    return [t.values << np.int64(frac - t.frac) for t in tensors], frac


def _grid(quantizer: Any, qvars: Any, where: str) -> GridSpec:
    spec = getattr(quantizer, "export_spec", lambda v: None)(qvars)
    if spec is None or spec.kind != "dfp":
        raise UnsupportedLayerError(
            f"{type(quantizer).__name__} is not a power-of-two DFP quantizer (or has no "
            "calibrated range); only DFP grids have an integer form", layer=where)
    if spec.bitwidth > 16:
        raise UnsupportedLayerError(f"{spec.bitwidth}-bit tensors exceed the int16 kernels",
                                    layer=where)
    return spec


def _quantize_value(value: Value, quantizer: Any, qvars: Any, where: str) -> IntTensor:
    return _quantize_to(value, _grid(quantizer, qvars, where))


def _quantize_to(value: Value, spec: GridSpec) -> IntTensor:
    """``value`` (exact integers or float) put on the DFP grid ``spec``."""
    frac = int(np.asarray(spec.frac_bits).reshape(-1)[0])
    rounding = spec.rounding
    if isinstance(value, IntTensor):
        return _requantize(value, frac, spec.bitwidth, spec.signed, rounding)
    from kerasq.numerics import dfp_quantize

    q = dfp_quantize(np.asarray(value, np.float32), spec.bitwidth, frac,
                     signed=spec.signed, rounding=rounding)
    return IntTensor(np.ldexp(np.asarray(q, np.float64), frac).astype(np.int64), frac)


def _integer_weights(variable: Any, quantizer: Any, qvars: Any, where: str
                     ) -> Tuple[np.ndarray, np.ndarray]:
    """(integers, per-channel fractional lengths flattened) of a fake-quantized weight."""
    inner = getattr(quantizer, "inner", quantizer)  # e.g. a sparsity-preserving wrapper
    if not (getattr(inner, "power2_range", False) and not getattr(inner, "apply_offset", True)
            and "frac_bits" in qvars and getattr(inner, "bitwidth", 99) <= 16):
        raise UnsupportedLayerError(f"{type(inner).__name__} is not a power-of-two DFP weight "
                                    "quantizer of at most 16 bits", layer=where)
    wq = np.asarray(quantizer(variable, False, weights=qvars), np.float64)
    fl = np.asarray(qvars["frac_bits"].numpy()).astype(np.int64).reshape(-1)
    scale = np.ldexp(1.0, fl) if fl.size == 1 else np.ldexp(1.0, fl).reshape(
        (1,) * (wq.ndim - 1) + (-1,)) if wq.ndim else np.ldexp(1.0, fl)
    if fl.size > 1 and wq.ndim == 4 and qvars["frac_bits"].shape.rank == 2:  # depthwise [C, M]
        scale = np.ldexp(1.0, fl).reshape((1, 1) + tuple(qvars["frac_bits"].shape))
    ints = wq * scale
    if not np.all(ints == np.round(ints)):
        raise VerificationError("fake-quantized weights are not on their stored DFP grid",
                                layer=where)
    return ints.astype(np.int64), fl


def _float_bias(b: np.ndarray, where: str) -> Tuple[np.ndarray, int]:
    """A (fake-quantized or float32) bias as int32 at the smallest fractional length holding it
    exactly, or, when that does not fit int32, at the finest one that does (rounded).

    The float simulation adds the bias in float32, so it is exact (and the integer run
    equal to it) only when acc + b fits float32's 24 bits; see the module docstring.
    """
    b = np.asarray(b, np.float64).reshape(-1)
    top = float(np.max(np.abs(b), initial=0.0))
    cap = 30 - (int(np.ceil(np.log2(top))) if top > 0 else 0)
    for frac in range(0, max(cap, 0) + 1):
        scaled = np.ldexp(b, frac)
        if np.all(scaled == np.round(scaled)):
            return scaled.astype(np.int32), frac
    log.info("%s: float bias rounded to 2^-%d (not exactly representable in int32)", where, cap)
    return np.round(np.ldexp(b, cap)).astype(np.int32), cap


def _int_dtype(values: np.ndarray, where: str) -> Any:
    lo, hi = (int(values.min()), int(values.max())) if values.size else (0, 0)
    if -128 <= lo and hi <= 127:
        return np.int8
    if -32768 <= lo and hi <= 32767:
        return np.int16
    raise UnsupportedLayerError("operand does not fit int16", layer=where)


# ------------------------------------------------------------------ the compiled form
#
# The compiled program traces the same layers on symbolic tensors once per input shape.
# Every integer tensor carries static bounds [lo, hi] (from the grids, the weights and
# the layer arithmetic), which fix its dtype: the smallest of int8/uint8/int16/int32/int64
# holding them, so 8-bit activations flow as int8 (unsigned 8-bit ones as uint8).


@dataclasses.dataclass
class _GInt:
    """A symbolic integer tensor ``t·2^−frac`` of the compiled program; ``lo <= t <= hi``."""

    t: Any
    frac: int
    lo: int
    hi: int
    # set by ZeroPadding2D: (the unpadded tensor, (top, bottom, left, right)), so that a
    # VALID convolution consuming it pads in the kernel (the Pad op is then left unused)
    padded_from: Optional[Tuple["_GInt", Tuple[int, int, int, int]]] = None


GValue = Union[_GInt, Any]  # Any: a float32 tf.Tensor (a float region of the model)
_INT64_LIMIT = 2**63 - 1


def _g_dtype(lo: int, hi: int, where: str = "") -> Any:
    """The smallest TF integer dtype holding [lo, hi]: int8, uint8 (non-negative values up to
    255, the integer kernels' native u8 operand), int16, int32 or int64."""
    from kerasq._compat import tf

    if -128 <= lo and hi <= 127:
        return tf.int8
    if 0 <= lo and hi <= 255:
        return tf.uint8
    for dtype, bits in ((tf.int8, 8), (tf.int16, 16), (tf.int32, 32), (tf.int64, 64)):
        if -(1 << (bits - 1)) <= lo and hi < (1 << (bits - 1)):
            return dtype
    raise UnsupportedLayerError("integer values may exceed int64", layer=where)


def _holds(dtype: Any, lo: int, hi: int) -> bool:
    """Whether the integer dtype holds every value in [lo, hi]."""
    return bool(dtype.is_integer) and int(dtype.min) <= lo and hi <= int(dtype.max)


def _g_int(t: Any, frac: int, lo: int, hi: int, where: str = "") -> _GInt:
    """``t`` with bounds [lo, hi], kept in its dtype while that holds them (else cast to the
    narrowest that does): tensors narrow only where a kernel needs it
    (:func:`_g_kernel_operand`), so saturating an int16 sum to an 8-bit grid and using it
    both as a kernel operand and in the next sum costs no cast there and back."""
    from kerasq._compat import tf

    if _holds(t.dtype, lo, hi):
        return _GInt(t, frac, int(lo), int(hi))
    return _GInt(tf.cast(t, _g_dtype(lo, hi, where)), frac, int(lo), int(hi))


def _g_narrow(g: _GInt, where: str) -> Any:
    """``g.t`` in the narrowest dtype holding its bounds."""
    from kerasq._compat import tf

    dtype = _g_dtype(g.lo, g.hi, where)
    return g.t if g.t.dtype == dtype else tf.cast(g.t, dtype)


def _g_wide(g: _GInt, lo: int, hi: int, where: str) -> Any:
    """``g.t`` in a dtype holding both its bounds and [lo, hi] (at least int32)."""
    from kerasq._compat import tf

    dtype = _g_dtype(min(g.lo, lo, -(2**31)), max(g.hi, hi, 2**31 - 1), where)
    return g.t if g.t.dtype == dtype else tf.cast(g.t, dtype)


def _g_shift_left(g: _GInt, shift: int, where: str) -> _GInt:
    """``g`` at fractional length ``g.frac + shift`` (exact left shift, shift >= 0)."""
    from kerasq._compat import tf

    if shift == 0:
        return g
    lo, hi = g.lo << shift, g.hi << shift
    t = _g_wide(g, lo, hi, where)
    return _g_int(tf.bitwise.left_shift(t, tf.constant(shift, t.dtype)), g.frac + shift, lo, hi,
                  where)


def _g_clip(t: Any, lo: int, hi: int, qlo: int, qhi: int, frac: int, where: str) -> _GInt:
    """``t`` (bounds lo..hi) saturated to [qlo, qhi]."""
    from kerasq._compat import tf

    if lo < qlo or hi > qhi:
        if not _holds(t.dtype, min(lo, qlo), max(hi, qhi)):
            t = tf.cast(t, _g_dtype(min(lo, qlo), max(hi, qhi), where))
        if lo < qlo:  # only the sides the bounds can cross
            t, bound = _merged_bound(t, "Maximum", qlo, max)
            t = tf.maximum(t, tf.constant(bound, t.dtype))
        if hi > qhi:
            t, bound = _merged_bound(t, "Minimum", qhi, min)
            t = tf.minimum(t, tf.constant(bound, t.dtype))
    return _g_int(t, frac, min(max(lo, qlo), qhi), max(min(hi, qhi), qlo), where)


def _merged_bound(t: Any, op_type: str, bound: int, pick: Callable[[int, int], int]
                  ) -> Tuple[Any, int]:
    """(operand, bound) for ``op_type(t, bound)``: when ``t`` is itself ``op_type(u, c)`` with
    a constant scalar ``c`` (one quantizer saturating right after another),
    ``op_type(u, pick(c, bound))``, the same values with one op fewer."""
    from kerasq._compat import tf

    op = getattr(t, "op", None)
    if op is None or op.type != op_type or len(op.inputs) != 2:
        return t, bound
    c = tf.get_static_value(op.inputs[1])
    if c is None or np.ndim(c) != 0 or op.inputs[0].dtype != t.dtype:
        return t, bound
    return op.inputs[0], pick(int(c), bound)


def _grid_bounds(spec: GridSpec) -> Tuple[int, int, int]:
    """(frac, qmin, qmax) of a DFP grid."""
    frac = int(np.asarray(spec.frac_bits).reshape(-1)[0])
    lo, hi = ((-(2 ** (spec.bitwidth - 1)), 2 ** (spec.bitwidth - 1) - 1) if spec.signed
              else (0, 2**spec.bitwidth - 1))
    return frac, lo, hi


def _g_requantize(g: _GInt, spec: GridSpec, where: str) -> _GInt:
    """:func:`_requantize` on a symbolic tensor: shift, round, saturate."""
    from kerasq.numerics.rounding import tf_shift_round

    frac, qlo, qhi = _grid_bounds(spec)
    shift = g.frac - frac
    if shift <= 0:
        if g.lo << -shift >= qlo and g.hi << -shift <= qhi:
            return _g_shift_left(g, -shift, where)
        # saturate before shifting: the shifted values may not fit any dtype
        lo_in, hi_in = -((-qlo) >> -shift) - 1, (qhi >> -shift) + 1
        pre = _g_clip(g.t, g.lo, g.hi, lo_in, hi_in, g.frac, where)
        shifted = _g_shift_left(pre, -shift, where)
        return _g_clip(shifted.t, shifted.lo, shifted.hi, qlo, qhi, frac, where)
    if spec.rounding not in ("nearest", "nearest_even", "half_up"):
        raise UnsupportedLayerError(f"rounding {spec.rounding!r} has no deterministic integer "
                                    "form", layer=where)
    half = 1 << (shift - 1)
    t = _g_wide(g, g.lo - half, g.hi + half, where)
    v = tf_shift_round(t, shift, spec.rounding)
    return _g_clip(v, (g.lo >> shift) - 1, (g.hi >> shift) + 1, qlo, qhi, frac, where)


def _g_quantize(value: GValue, spec: GridSpec, where: str) -> _GInt:
    """:func:`_quantize_to` on a symbolic tensor (integers or float32)."""
    from kerasq._compat import tf
    from kerasq.numerics import dfp_quantize
    from kerasq.numerics.rounding import tf_round

    if isinstance(value, _GInt):
        return _g_requantize(value, spec, where)
    frac, qlo, qhi = _grid_bounds(spec)
    x = tf.cast(value, tf.float32)
    if abs(frac) < 100 and spec.rounding in ("nearest", "nearest_even", "half_up"):
        # dfp_quantize's integers directly: x·2^fl is exact (a power of two, no overflow
        # for fl < 100 that the clip does not absorb, and inputs small enough to be
        # flushed round to 0 anyway); clip; round; no float result to rebuild
        y = tf.clip_by_value(x * tf.constant(2.0**frac, tf.float32), float(qlo), float(qhi))
        ints = tf_round(y, spec.rounding, signed_zeros=False)
        return _GInt(tf.cast(ints, _g_dtype(qlo, qhi, where)), frac, qlo, qhi)
    q = dfp_quantize(x, spec.bitwidth, frac, signed=spec.signed, rounding=spec.rounding)
    ints = tf.cast(q, tf.float64) * tf.constant(2.0**frac, tf.float64)  # exact: a power of two
    return _GInt(tf.cast(ints, _g_dtype(qlo, qhi, where)), frac, qlo, qhi)


def _g_to_float(g: _GInt) -> Any:
    """The represented values as float32 (as :meth:`IntTensor.to_float`)."""
    from kerasq._compat import tf

    return tf.cast(tf.cast(g.t, tf.float64) * tf.constant(2.0**-g.frac, tf.float64), tf.float32)


def _g_align(tensors: Sequence[_GInt], where: str) -> Tuple[List[_GInt], int]:
    """The operands at the largest fractional length, in one common dtype."""
    from kerasq._compat import tf

    frac = max(t.frac for t in tensors)
    shifted = [_g_shift_left(t, frac - t.frac, where) for t in tensors]
    lo, hi = min(t.lo for t in shifted), max(t.hi for t in shifted)
    # an operand's dtype holding every bound (the fewest casts), else the narrowest
    held = [t.t.dtype for t in shifted if _holds(t.t.dtype, lo, hi)]
    dtype = max(held, key=held.count) if held else _g_dtype(lo, hi, where)
    return [_GInt(t.t if t.t.dtype == dtype else tf.cast(t.t, dtype), t.frac, t.lo, t.hi)
            for t in shifted], frac


def _g_checked(t: Any, lo: int, hi: int, allowed: Tuple[int, int], message: str,
               where: str) -> Any:
    """``t`` (static bounds lo..hi) unchanged when its bounds lie in ``allowed``, else
    ``t`` guarded by a run-time check that its values do (the eager path checks the data
    too)."""
    from kerasq._compat import tf

    if allowed[0] <= lo and hi <= allowed[1]:
        return t
    wide = tf.cast(t, tf.int64)
    text = f"{_RUNTIME_ERROR}{where}: {message}"
    checks = [tf.debugging.assert_greater_equal(tf.reduce_min(wide), tf.constant(
                  allowed[0], tf.int64), message=text),
              tf.debugging.assert_less_equal(tf.reduce_max(wide), tf.constant(
                  allowed[1], tf.int64), message=text)]
    with tf.control_dependencies(checks):
        return tf.identity(t)


_RUNTIME_ERROR = "kerasq.integer: "


def _g_kernel_operand(x: _GInt, where: str) -> Any:
    """``x`` as the int8/uint8/int16 operand of an integer kernel."""
    from kerasq._compat import tf

    if _g_dtype(x.lo, x.hi, where) in (tf.int8, tf.uint8, tf.int16):
        return _g_narrow(x, where)
    t = _g_checked(x.t, x.lo, x.hi, (-32768, 32767), "operand does not fit int16", where)
    return tf.cast(t, tf.int16)


def _g_activation(g: _GInt, activation: Any, where: str) -> _GInt:
    """:func:`_activation` on a symbolic tensor."""

    name = getattr(activation, "__name__", str(activation))
    if name in ("linear", "None"):
        return g
    if name == "relu" or (name == "relu6" and g.frac < 0):
        return _g_relu(g)
    if name == "relu6":
        return _g_clip(g.t, g.lo, g.hi, 0, 6 << g.frac, g.frac, where)
    raise UnsupportedLayerError(f"activation {name!r} has no exact integer form", layer=where)


def _g_relu(g: _GInt) -> _GInt:
    from kerasq._compat import tf

    if g.lo >= 0:
        return g
    return _GInt(tf.maximum(g.t, tf.constant(0, g.t.dtype)), g.frac, 0, max(g.hi, 0))


# ------------------------------------------------------------------ layers


def _activation(values: np.ndarray, frac: int, activation: Any, where: str) -> np.ndarray:
    name = getattr(activation, "__name__", str(activation))
    if name in ("linear", "None"):
        return values
    if name == "relu":
        return np.maximum(values, 0)
    if name == "relu6":
        return np.clip(values, 0, 6 << frac) if frac >= 0 else np.maximum(values, 0)
    raise UnsupportedLayerError(f"activation {name!r} has no exact integer form", layer=where)


def _linear_layer(wrapper: Any, inner: Any, relu_spec: Optional[GridSpec] = None
                  ) -> "_Step":
    """Conv2D / DepthwiseConv2D / Dense on the integer kernels of kerasq.ops: the weights,
    bias and grids are read once; the returned step runs the layer on a batch (eagerly, or
    traced into the compiled program).

    ``relu_spec``: the grid of a quantized ReLU that alone consumes this layer (which has
    no output quantizer); the layer then returns that ReLU's output, requantized in the
    kernel: rounding commutes with ReLU (monotone, 0 -> 0), so this equals the exact
    accumulator followed by ReLU and its quantizer.
    """
    from kerasq._compat import keras, tf
    from kerasq import ops

    where = inner.name
    weights = {s.attr: (s.weight, s.quantizer, s.variables) for s in slots.weight_slots(wrapper)}
    kernel_attr = "depthwise_kernel" if isinstance(inner, keras.layers.DepthwiseConv2D) else "kernel"
    if kernel_attr not in weights:
        raise UnsupportedLayerError(f"{kernel_attr} is not quantized", layer=where)
    w_int, w_frac = _integer_weights(*weights[kernel_attr], where)
    bias, bias_frac = None, None
    if "bias" in weights:  # any quantizer (DFP, accumulator grid): use its exact values
        variable, quantizer, qvars = weights["bias"]
        bias, bias_frac = _float_bias(np.asarray(quantizer(variable, False, weights=qvars)), where)
    elif getattr(inner, "use_bias", False):
        bias, bias_frac = _float_bias(inner.bias.numpy(), where)
    out_slot = slots.output_slot(wrapper)
    out_q = out_slot.quantizer if out_slot is not None else None
    fan_in = 0
    if out_slot is not None:
        spec = _grid(out_slot.quantizer, out_slot.variables, where)
        out_frac = int(np.asarray(spec.frac_bits).reshape(-1)[0])
        out = dict(out_frac=out_frac, out_bitwidth=spec.bitwidth, out_signed=spec.signed,
                   rounding=spec.rounding)
    else:
        # Keep the exact accumulator: the kernel returns the raw sums of products (int32,
        # no shift, no bias); the per-channel alignment to F = max(fl_x + fl_w[n], fl_b)
        # and the bias are applied here in int64. Aligned in the kernel, they would not
        # fit int32 (ResNet-20's first convolution on 0..255 pixels, per-channel fl_w).
        fan_in = w_int.size // max(int(w_int.shape[-1]) * (
            int(w_int.shape[-2]) if isinstance(inner, keras.layers.DepthwiseConv2D) else 1), 1)
        out = dict(out_frac=0, out_bitwidth=32, out_signed=True, rounding=DEFAULT_ROUNDING,
                   out_dtype=np.int32)
    wv = tf.constant(w_int.astype(_int_dtype(w_int, where)))
    w_max = int(np.abs(w_int).max(initial=0))
    w_fl = w_frac if w_frac.size > 1 else int(w_frac[0])
    op_bias = tf.constant(bias, tf.int32) if out_q is not None and bias is not None else None
    if out_q is None:
        common = dict(x_frac=0, w_frac=0, **out)
    else:
        common = dict(x_frac=None, w_frac=w_fl, bias_frac=bias_frac, **out)
    if isinstance(inner, keras.layers.Dense):
        op, geometry = ops.dfp_matmul, {}
    elif isinstance(inner, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
        if inner.data_format != "channels_last":
            raise UnsupportedLayerError("only channels_last convolutions", layer=where)
        op = (ops.dfp_depthwise_conv2d if isinstance(inner, keras.layers.DepthwiseConv2D)
              else ops.dfp_conv2d)
        groups = int(getattr(inner, "groups", 1) or 1)
        if groups > 1 and not isinstance(inner, keras.layers.DepthwiseConv2D):
            op = _grouped_conv(op, wv, groups)
        geometry = dict(strides=tuple(inner.strides), padding=inner.padding.upper(),
                        dilations=tuple(inner.dilation_rate))
    else:
        raise UnsupportedLayerError(f"{type(inner).__name__} has no integer kernel", layer=where)

    fused = None
    if relu_spec is not None and out_q is None:
        fused = dict(out_frac=int(np.asarray(relu_spec.frac_bits).reshape(-1)[0]),
                     out_bitwidth=relu_spec.bitwidth, out_signed=relu_spec.signed,
                     rounding=relu_spec.rounding, w_frac=w_fl, bias_frac=bias_frac)
        fused_bias = tf.constant(bias, tf.int32) if bias is not None else None

    def apply(x: Value) -> IntTensor:
        if not isinstance(x, IntTensor):
            raise UnsupportedLayerError("the layer input is not quantized", layer=where)
        if fused is not None:
            try:
                y = op(x.values.astype(_int_dtype(x.values, where)), wv, fused_bias,
                       x_frac=x.frac, **fused, **geometry)
                return IntTensor(np.maximum(y.numpy().astype(np.int64), 0), fused["out_frac"])
            except tf.errors.InvalidArgumentError:  # grids too far apart for the kernel
                pass
            exact = raw(x)
            return _quantize_to(IntTensor(np.maximum(exact.values, 0), exact.frac), relu_spec)
        return raw(x)

    def raw(x: IntTensor) -> IntTensor:
        kwargs = dict(common, **geometry)
        if out_q is None:
            bound = int(np.abs(x.values).max(initial=0)) * w_max * fan_in
            if bound >= 2**31:
                raise UnsupportedLayerError(
                    f"unquantized accumulator may reach {bound} (> int32); give the layer an "
                    "output quantizer", layer=where)
        else:
            kwargs["x_frac"] = x.frac
        y = op(x.values.astype(_int_dtype(x.values, where)), wv, op_bias, **kwargs)
        values, frac = y.numpy().astype(np.int64), int(out["out_frac"])  # type: ignore[call-overload]
        if out_q is None:
            values, frac = _exact_accumulator(values, x.frac + w_frac, bias, bias_frac, where)
        return IntTensor(_activation(values, frac, inner.activation, where), frac)

    def graph_apply(x: GValue) -> _GInt:
        if not isinstance(x, _GInt):
            raise UnsupportedLayerError("the layer input is not quantized", layer=where)
        geo = geometry
        if x.padded_from is not None and geometry.get("padding") == "VALID":
            # ZeroPadding2D before a VALID convolution: the kernel pads (zeros) itself
            x, pads = x.padded_from
            geo = dict(geometry, padding=[list(pads[:2]), list(pads[2:])])
        xt = _g_kernel_operand(x, where)
        if fused is not None:
            frac, qlo, qhi = _grid_bounds(relu_spec)

            def fused_call(operand: Any) -> Any:  # output in the dtype of the ReLU's grid
                return op(operand, wv, fused_bias, x_frac=x.frac, out_dtype=_g_dtype(qlo, qhi),
                          **fused, **geo)

            if _kernel_accepts(fused_call, x, xt):
                return _g_relu(_g_int(fused_call(xt), frac, qlo, qhi, where))
            return _g_requantize(_g_relu(graph_raw(x, xt, geo)), relu_spec, where)
        return graph_raw(x, xt, geo)

    def graph_raw(x: _GInt, xt: Any, geo: Dict[str, Any]) -> _GInt:
        kwargs = dict(common, **geo)
        acc_bound = 0
        if out_q is None:
            per_x = w_max * fan_in
            top_x = max(abs(x.lo), abs(x.hi))
            if per_x:  # the eager path's condition max|x|·max|w|·fan_in < 2^31
                limit = -(-(2**31) // per_x) - 1
                xt = _g_checked(xt, x.lo, x.hi, (-limit, limit), "unquantized accumulator may "
                                "exceed int32; give the layer an output quantizer", where)
            acc_bound = min(top_x * per_x, 2**31 - 1)
        else:
            kwargs["x_frac"] = x.frac
            kwargs["out_dtype"] = _g_dtype(*_grid_bounds(spec)[1:])  # no cast after the kernel
        y = op(xt, wv, op_bias, **kwargs)
        if out_q is None:
            g = _g_exact_accumulator(y, acc_bound, x.frac + w_frac, bias, bias_frac, where)
        else:
            frac, qlo, qhi = _grid_bounds(spec)
            g = _g_int(y, frac, qlo, qhi, where)
        return _g_activation(g, inner.activation, where)

    return _Step(lambda args: apply(args[0]), lambda args: graph_apply(args[0]))


def _kernel_accepts(call: Callable[[Any], Any], x: _GInt, operand: Any) -> bool:
    """Whether the kernel accepts its grids for every input within ``x``'s bounds: one
    call, outside the traced graph, on a one-image batch of the largest-magnitude value
    (the kernels check the accumulator bound from the operand's dtype or its values)."""
    from kerasq._compat import tf

    shape = operand.shape
    if shape.rank is None or not shape[1:].is_fully_defined():
        return False
    info = np.iinfo(operand.dtype.as_numpy_dtype)
    worst = x.hi if abs(x.hi) >= abs(x.lo) else x.lo
    worst = min(max(worst, int(info.min)), int(info.max))
    with tf.init_scope():
        probe = tf.fill([1] + shape[1:].as_list(), tf.constant(worst, operand.dtype))
        try:
            call(probe)
        except tf.errors.InvalidArgumentError:  # grids too far apart for the kernel
            return False
    return True


def _g_exact_accumulator(acc: Any, acc_bound: int, acc_frac: np.ndarray, bias: Any,
                         bias_frac: Any, where: str) -> _GInt:
    """:func:`_exact_accumulator` on a symbolic tensor of raw int32 sums (|acc| <= acc_bound)."""
    from kerasq._compat import tf

    acc_frac = np.asarray(acc_frac, np.int64).reshape(-1)
    frac = int(max(acc_frac.max(), bias_frac if bias is not None else acc_frac.max()))
    lshift = frac - acc_frac
    top = acc_bound << int(lshift.max())
    if bias is not None:
        top += int(np.abs(np.asarray(bias, np.int64)).max(initial=0)) << (frac - bias_frac)
    if top >= 2**62:
        raise UnsupportedLayerError("accumulator and bias grids are too far apart for int64",
                                    layer=where)
    dtype = _g_dtype(-top, top, where)
    t = tf.cast(acc, dtype) if acc.dtype != dtype else acc
    if lshift.any():
        t = tf.bitwise.left_shift(t, tf.constant(lshift if lshift.size > 1 else lshift[0],
                                                 dtype))
    if bias is not None:
        t = t + tf.constant(np.asarray(bias, np.int64) << np.int64(frac - bias_frac), dtype)
    return _GInt(t, frac, -top, top)


def _grouped_conv(op: Callable[..., Any], kernel: Any, groups: int) -> Callable[..., Any]:
    """A grouped convolution (Caffe's ``group``, Keras ``groups``) as one integer
    convolution per group: input channels ``[g·Cin/G, (g+1)·Cin/G)`` with output channels
    ``[g·Cout/G, (g+1)·Cout/G)``, the outputs concatenated in group order. Every output
    sums exactly the products of its own group, so each group's integers are those of the
    grouped layer; per-channel weight grids and biases are split alongside.

    The per-group kernels are split once here (stable buffers for the kernels' packing
    cache); the returned function takes the same arguments as ``op``.
    """
    from kerasq._compat import tf

    parts = tf.split(kernel, groups, axis=-1)
    width = int(kernel.shape[-1]) // groups

    def per_channel(value: Any, g: int) -> Any:
        if value is None or np.ndim(value) == 0 or np.size(value) == 1:
            return value
        return value[g * width:(g + 1) * width]

    def call(x: np.ndarray, _kernel: Any, bias: Any, *, w_frac: Any, **kwargs: Any) -> Any:
        cin = int(x.shape[-1]) // groups
        part = (lambda g: np.ascontiguousarray(x[..., g * cin:(g + 1) * cin])) if isinstance(
            x, np.ndarray) else (lambda g: x[..., g * cin:(g + 1) * cin])
        outs = [op(part(g), parts[g],
                   per_channel(bias, g), w_frac=per_channel(w_frac, g), **kwargs)
                for g in range(groups)]
        return tf.concat(outs, axis=-1)

    return call


def _exact_accumulator(acc: np.ndarray, acc_frac: np.ndarray, bias: Any, bias_frac: Any,
                       where: str) -> Tuple[np.ndarray, int]:
    """Raw sums of products (channels last, at 2^-acc_frac[n]) plus bias, exactly in int64
    at the common grid F = max(acc_frac, bias_frac)."""
    acc_frac = np.asarray(acc_frac, np.int64).reshape(-1)
    frac = int(max(acc_frac.max(), bias_frac if bias is not None else acc_frac.max()))
    lshift = frac - acc_frac
    top = int(np.abs(acc).max(initial=0)) << int(lshift.max())
    if bias is not None:
        top += int(np.abs(np.asarray(bias, np.int64)).max(initial=0)) << (frac - bias_frac)
    if top >= 2**62:
        raise UnsupportedLayerError("accumulator and bias grids are too far apart for int64",
                                    layer=where)
    values = acc << lshift  # broadcasts over the channel axis (one entry: all channels)
    if bias is not None:
        values = values + (np.asarray(bias, np.int64) << np.int64(frac - bias_frac))
    return values, frac


def _exact_layer(layer: Any, inputs: List[Value]) -> Value:
    """Layers that move or combine values exactly (no rounding)."""
    from kerasq._compat import keras, tf

    where = layer.name
    if all(not isinstance(v, IntTensor) for v in inputs):  # float region: run Keras itself
        out = layer(*[tf.constant(v) for v in inputs]) if len(inputs) == 1 else layer(
            [tf.constant(v) for v in inputs])
        return np.asarray(out)
    if not all(isinstance(v, IntTensor) for v in inputs):
        raise UnsupportedLayerError("mixes quantized and float inputs", layer=where)
    x = inputs[0]
    if _is_float_tail(layer):  # the model's own float op on the exact dequantized values
        return np.asarray(layer(tf.constant(x.to_float())))
    if isinstance(layer, (keras.layers.Flatten, keras.layers.Reshape)):
        batch = x.values.shape[0]
        shape = (batch, -1) if isinstance(layer, keras.layers.Flatten) else (batch, *layer.target_shape)
        return IntTensor(x.values.reshape(shape), x.frac)
    if isinstance(layer, (keras.layers.Dropout, keras.layers.Activation, keras.layers.ReLU)):
        if isinstance(layer, keras.layers.Dropout):
            return x
        if isinstance(layer, keras.layers.ReLU):
            if layer.negative_slope != 0 or layer.threshold != 0:
                raise UnsupportedLayerError("leaky/thresholded ReLU", layer=where)
            v = np.maximum(x.values, 0)
            if layer.max_value is not None:
                cap = float(layer.max_value) * 2.0**x.frac
                if cap != int(cap):
                    raise UnsupportedLayerError("max_value not on the grid", layer=where)
                v = np.minimum(v, int(cap))
            return IntTensor(v, x.frac)
        return IntTensor(_activation(x.values, x.frac, layer.activation, where), x.frac)
    if isinstance(layer, keras.layers.ZeroPadding2D):
        (t, b), (left, r) = layer.padding
        return IntTensor(np.pad(x.values, [(0, 0), (t, b), (left, r), (0, 0)]), x.frac)
    if isinstance(layer, keras.layers.MaxPooling2D):
        # float64 holds these integers exactly; max commutes with any monotone rounding
        pooled = tf.nn.max_pool2d(tf.constant(x.values.astype(np.float64)), layer.pool_size,
                                  layer.strides, layer.padding.upper())
        return IntTensor(pooled.numpy().astype(np.int64), x.frac)
    if type(layer).__name__ == "ConstantBias":  # Caffe Bias with a stored constant (jacinto)
        bias, bias_frac = _float_bias(layer.bias.numpy(), where)
        values, frac = _align([x, IntTensor(bias.astype(np.int64), bias_frac)])
        return IntTensor(values[0] + values[1], frac)
    if isinstance(layer, keras.layers.Add):
        values, frac = _align(inputs)
        return IntTensor(np.sum(values, axis=0), frac)
    if isinstance(layer, keras.layers.Concatenate):
        values, frac = _align(inputs)
        return IntTensor(np.concatenate(values, axis=layer.axis), frac)
    raise UnsupportedLayerError(f"{type(layer).__name__} has no exact integer form", layer=where)


def _g_exact_layer(layer: Any, inputs: List[GValue]) -> GValue:
    """:func:`_exact_layer` on symbolic tensors."""
    from kerasq._compat import keras, tf

    where = layer.name
    if all(not isinstance(v, _GInt) for v in inputs):  # float region: run Keras itself
        return layer(inputs[0]) if len(inputs) == 1 else layer(list(inputs))
    if not all(isinstance(v, _GInt) for v in inputs):
        raise UnsupportedLayerError("mixes quantized and float inputs", layer=where)
    x = inputs[0]
    if _is_float_tail(layer):
        return layer(_g_to_float(x))
    if isinstance(layer, (keras.layers.Flatten, keras.layers.Reshape)):
        batch = tf.shape(x.t)[:1]
        rest = [-1] if isinstance(layer, keras.layers.Flatten) else list(layer.target_shape)
        t = tf.reshape(x.t, tf.concat([batch, tf.constant(rest, tf.int32)], 0))
        return _GInt(t, x.frac, x.lo, x.hi)
    if isinstance(layer, (keras.layers.Dropout, keras.layers.Activation, keras.layers.ReLU)):
        if isinstance(layer, keras.layers.Dropout):
            return x
        if isinstance(layer, keras.layers.ReLU):
            if layer.negative_slope != 0 or layer.threshold != 0:
                raise UnsupportedLayerError("leaky/thresholded ReLU", layer=where)
            g = _g_relu(x)
            if layer.max_value is not None:
                cap = float(layer.max_value) * 2.0**x.frac
                if cap != int(cap):
                    raise UnsupportedLayerError("max_value not on the grid", layer=where)
                g = _g_clip(g.t, g.lo, g.hi, g.lo, min(g.hi, int(cap)), g.frac, where)
            return g
        return _g_activation(x, layer.activation, where)
    if isinstance(layer, keras.layers.ZeroPadding2D):
        (t, b), (left, r) = layer.padding
        padded = tf.pad(x.t, [[0, 0], [t, b], [left, r], [0, 0]])
        return _GInt(padded, x.frac, min(x.lo, 0), max(x.hi, 0),
                     padded_from=(x, (t, b, left, r)))
    if isinstance(layer, keras.layers.MaxPooling2D):
        pooled = tf.nn.max_pool2d(x.t, layer.pool_size, layer.strides, layer.padding.upper())
        return _GInt(pooled, x.frac, x.lo, x.hi)
    if type(layer).__name__ == "ConstantBias":
        with tf.init_scope():  # the stored constant, read once when the graph is traced
            bias, bias_frac = _float_bias(layer.bias.numpy(), where)
        const = _GInt(tf.constant(bias), bias_frac, int(bias.min(initial=0)),
                      int(bias.max(initial=0)))
        values, frac = _g_align([x, const], where)
        return _g_sum(values, frac, where)
    if isinstance(layer, keras.layers.Add):
        values, frac = _g_align(inputs, where)
        return _g_sum(values, frac, where)
    if isinstance(layer, keras.layers.Concatenate):
        values, frac = _g_align(inputs, where)
        return _GInt(tf.concat([v.t for v in values], axis=layer.axis), frac,
                     min(v.lo for v in values), max(v.hi for v in values))
    raise UnsupportedLayerError(f"{type(layer).__name__} has no exact integer form", layer=where)


def _g_sum(values: List[_GInt], frac: int, where: str) -> _GInt:
    """The exact sum of aligned operands, in a dtype holding it."""
    from kerasq._compat import tf

    lo, hi = sum(v.lo for v in values), sum(v.hi for v in values)
    held = [v.t.dtype for v in values if _holds(v.t.dtype, lo, hi)]
    dtype = max(held, key=held.count) if held else _g_dtype(lo, hi, where)
    total = None
    for v in values:  # broadcasting adds (tf.add_n does not broadcast a bias vector)
        t = v.t if v.t.dtype == dtype else tf.cast(v.t, dtype)
        total = t if total is None else total + t
    return _GInt(total, frac, lo, hi)


def _g_mean_pool(layer: Any, x: _GInt, spec: GridSpec) -> _GInt:
    """:func:`_mean_pool` on a symbolic tensor: exact sum, one rounding of sum / (H·W)."""
    from kerasq._compat import tf

    where = layer.name
    height, width = int(x.t.shape[1]), int(x.t.shape[2])
    count = height * width
    out_frac, qlo, qhi = _grid_bounds(spec)
    shift = out_frac - x.frac
    num_top = max(abs(x.lo), abs(x.hi)) * count << max(shift, 0)
    den = count << max(-shift, 0)
    if 2 * num_top + 2 * den >= 2**63:
        raise UnsupportedLayerError("average pooling sum exceeds int64", layer=where)
    sums = tf.reduce_sum(tf.cast(x.t, tf.int64), axis=(1, 2),
                         keepdims=bool(getattr(layer, "keepdims", False)))
    num = tf.bitwise.left_shift(sums, tf.constant(max(shift, 0), tf.int64)) if shift > 0 else sums
    d = tf.constant(den, tf.int64)
    if spec.rounding == "half_up":
        v = tf.math.floordiv(2 * num + d, 2 * d)
    elif spec.rounding == "nearest":
        v = tf.sign(num) * tf.math.floordiv(2 * tf.abs(num) + d, 2 * d)
    elif spec.rounding == "nearest_even":
        q, r = tf.math.floordiv(num, d), tf.math.floormod(num, d)
        odd = tf.equal(tf.math.floormod(q, 2), 1)
        v = q + tf.cast((2 * r > d) | ((2 * r == d) & odd), tf.int64)
    else:
        raise UnsupportedLayerError(f"rounding {spec.rounding!r} has no deterministic integer "
                                    "form", layer=where)
    top = num_top // den + 1
    return _g_clip(v, -top, top, qlo, qhi, out_frac, where)


def _is_float_tail(layer: Any) -> bool:
    """Softmax: no integer form; it runs in float32 on the dequantized integers, exactly as
    the fake-quant model runs it (the same float32 inputs through the same layer)."""
    from kerasq._compat import keras

    if isinstance(layer, keras.layers.Softmax):
        return True
    return isinstance(layer, keras.layers.Activation) and getattr(
        layer.activation, "__name__", "") == "softmax"


def _is_mean_pool(layer: Any) -> bool:
    from kerasq._compat import keras

    return isinstance(layer, keras.layers.GlobalAveragePooling2D) and (
        layer.data_format == "channels_last")


def _mean_pool(layer: Any, x: IntTensor, spec: GridSpec) -> IntTensor:
    """Global average pooling: the exact sum over H, W, one rounding of sum / (H·W)."""
    sums = x.values.sum(axis=(1, 2), keepdims=bool(getattr(layer, "keepdims", False)))
    return _mean_requantize(sums, int(x.values.shape[1] * x.values.shape[2]), x.frac, spec)


def _graph(qmodel: Any) -> Tuple[Dict[str, List[Tuple[str, int, int]]], list, list]:
    """(layer name -> inbound (layer, node, tensor) keys, input keys, output keys)."""
    config = qmodel.get_config()
    if "layers" not in config or "input_layers" not in config:
        raise UnsupportedLayerError("not a functional model (use kerasq.quantize_model's output)",
                                    layer=qmodel.name)
    inbound: Dict[str, List[Tuple[str, int, int]]] = {}
    for spec in config["layers"]:
        nodes = spec.get("inbound_nodes") or []
        if len(nodes) > 1:
            raise UnsupportedLayerError("shared layers (called more than once)", layer=spec["name"])
        keys = []
        for entry in (nodes[0] if nodes else []):
            if isinstance(entry, dict):  # newer serialization: {"args": ..., "kwargs": ...}
                raise UnsupportedLayerError("unsupported model config format", layer=spec["name"])
            keys.append((entry[0], int(entry[1]), int(entry[2])))
        inbound[spec["name"]] = keys

    def as_keys(entries):
        if entries and not isinstance(entries[0], (list, tuple)):
            entries = [entries]
        return [(e[0], int(e[1]), int(e[2])) for e in entries]

    return inbound, as_keys(config["input_layers"]), as_keys(config["output_layers"])


@dataclasses.dataclass
class _Step:
    """One layer of a program: ``eager`` on numpy :class:`IntTensor` values (the
    layer-by-layer reference), ``graph`` on the symbolic tensors of the compiled program."""

    eager: Callable[[List[Value]], Value]
    graph: Callable[[List[GValue]], GValue]


_PASS = _Step(lambda args: args[0], lambda args: args[0])


def _layer_step(layer: Any, relu_spec: Optional[GridSpec] = None) -> _Step:
    """The step computing ``layer``'s output from its inputs, grids and weights read now
    (the static part of the layer); ``relu_spec`` as in :func:`_linear_layer`."""
    from kerasq._compat import keras

    if slots.is_quantize_layer(layer):
        in_slot = slots.input_slot(layer)
        if in_slot is None:
            return _PASS
        spec = _grid(in_slot.quantizer, in_slot.variables, layer.name)
        return _Step(lambda args: _quantize_to(args[0], spec),
                     lambda args: _g_quantize(args[0], spec, layer.name))
    if not slots.is_quantize_wrapper(layer):
        return _Step(lambda args: _exact_layer(layer, args),
                     lambda args: _g_exact_layer(layer, args))
    inner = slots.inner_layer(layer)
    linear = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)
    if isinstance(inner, linear) and not isinstance(inner, keras.layers.Conv2DTranspose):
        return _linear_layer(layer, inner, relu_spec)
    if slots.weight_slots(layer):
        raise UnsupportedLayerError(f"{type(inner).__name__} with quantized weights "
                                    "has no integer kernel", layer=inner.name)
    out_slot = slots.output_slot(layer)
    out_spec = (_grid(out_slot.quantizer, out_slot.variables, inner.name)
                if out_slot is not None else None)

    def step(args: List[Value]) -> Value:
        if out_spec is not None and _is_mean_pool(inner) and isinstance(args[0], IntTensor):
            return _mean_pool(inner, args[0], out_spec)
        out = _exact_layer(inner, args)
        return _quantize_to(out, out_spec) if out_spec is not None else out

    def graph(args: List[GValue]) -> GValue:
        if out_spec is not None and _is_mean_pool(inner) and isinstance(args[0], _GInt):
            return _g_mean_pool(inner, args[0], out_spec)
        out = _g_exact_layer(inner, args)
        return _g_quantize(out, out_spec, inner.name) if out_spec is not None else out

    return _Step(step, graph)


def _relu_grid(layer: Any) -> Optional[GridSpec]:
    """The output grid of a quantized plain ReLU wrapper (deterministic rounding), else None."""
    from kerasq._compat import keras

    if not slots.is_quantize_wrapper(layer) or slots.weight_slots(layer):
        return None
    inner = slots.inner_layer(layer)
    plain = (isinstance(inner, keras.layers.ReLU) and not inner.negative_slope
             and not inner.threshold and inner.max_value is None) or (
        isinstance(inner, keras.layers.Activation)
        and getattr(inner.activation, "__name__", "") == "relu")
    out_slot = slots.output_slot(layer)
    if not plain or out_slot is None:
        return None
    spec = getattr(out_slot.quantizer, "export_spec", lambda v: None)(out_slot.variables)
    if spec is None or spec.kind != "dfp" or spec.bitwidth > 16 or spec.rounding not in (
            "nearest", "nearest_even", "half_up"):
        return None
    return spec


def _relu_fusions(qmodel: Any, inbound: Dict[str, List[Tuple[str, int, int]]],
                  output_keys: list) -> Dict[str, str]:
    """Linear layer name -> the quantized ReLU layer that alone consumes its (unquantized,
    linear-activation) output."""
    from kerasq._compat import keras

    consumers: Dict[str, List[str]] = {}
    for name, keys in inbound.items():
        for key in keys:
            consumers.setdefault(key[0], []).append(name)
    outputs = {k[0] for k in output_keys}
    linear = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)
    fusions = {}
    for layer in qmodel.layers:
        if not slots.is_quantize_wrapper(layer) or slots.output_slot(layer) is not None:
            continue
        inner = slots.inner_layer(layer)
        if not isinstance(inner, linear) or isinstance(inner, keras.layers.Conv2DTranspose):
            continue
        if getattr(inner.activation, "__name__", "") != "linear" or layer.name in outputs:
            continue
        users = consumers.get(layer.name, [])
        if len(users) == 1 and len(inbound[users[0]]) == 1 and _relu_grid(
                qmodel.get_layer(users[0])) is not None:
            fusions[layer.name] = users[0]
    return fusions


class IntegerProgram:
    """A calibrated DFP model lowered once to integer layers (see :func:`prepare`).

    It holds the integer weights, biases and grids read when it was made: prepare it
    again after the model's weights or ranges change. Calling it runs the compiled
    program: the layers traced once per input shape (any batch size) into one
    ``tf.function`` graph with the weights and grids as constants, integer tensors of
    the narrowest dtype their grid allows between the integer kernels, no Python per
    layer. :meth:`run_eager` runs the same layers one by one on numpy ``int64`` values
    (the reference the compiled graph is tested against).

    Example:
        >>> program = kerasq.integer.prepare(qmodel)  # doctest: +SKIP
        >>> y = program(x)   # == kerasq.integer.run(qmodel, x)  # doctest: +SKIP
    """

    def __init__(self, qmodel: Any):
        from kerasq._compat import keras

        inbound, self.input_keys, self.output_keys = _graph(qmodel)
        self.steps: List[Tuple[str, List[Tuple[str, int, int]], _Step]] = []
        fused = _relu_fusions(qmodel, inbound, self.output_keys)
        for layer in qmodel.layers:
            if isinstance(layer, keras.layers.InputLayer):
                continue
            if layer.name in fused.values():  # computed by the layer before it
                step = _PASS
            else:
                relu = fused.get(layer.name)
                step = _layer_step(layer, _relu_grid(qmodel.get_layer(relu)) if relu else None)
            self.steps.append((layer.name, inbound[layer.name], step))
        self._compiled: Dict[Any, Tuple[Any, List[Optional[int]]]] = {}

    def _inputs(self, x: Any) -> List[np.ndarray]:
        inputs = list(x) if isinstance(x, (list, tuple)) else [x]
        if len(inputs) != len(self.input_keys):
            raise UnsupportedLayerError(
                f"model has {len(self.input_keys)} inputs, got {len(inputs)}")
        return [np.asarray(v, np.float32) for v in inputs]

    def _walk(self, values: Dict[Tuple[str, int, int], Any], eager: bool) -> List[Any]:
        for name, keys, step in self.steps:
            try:
                args = [values[k] for k in keys]
            except KeyError as exc:
                raise UnsupportedLayerError("input produced outside the model", layer=name) from exc
            out = step.eager(args) if eager else step.graph(args)
            values[(name, 0, 0)] = out
            if eager:
                log.debug("%s: %s", name,
                          f"fl={out.frac}" if isinstance(out, IntTensor) else "float")
        return [values[k] for k in self.output_keys]

    def run_eager(self, x: Any, *, return_integers: bool = False) -> Any:
        """Run the layers one by one on numpy ``int64`` values (no graph); same results as
        calling the program, much slower. Arguments and result as in :func:`run`."""
        values: Dict[Tuple[str, int, int], Any] = dict(zip(self.input_keys, self._inputs(x)))
        results = self._walk(values, eager=True)
        if not return_integers:
            results = [r.to_float() if isinstance(r, IntTensor) else r for r in results]
        return results[0] if len(results) == 1 else results

    def compiled(self, shapes: Sequence[Tuple[int, ...]]) -> Any:
        """The traced graph for inputs of shapes ``[batch, *shape]`` (any batch), a
        ``ConcreteFunction`` returning, per model output, its float32 values and its
        integers (a float output: the float values twice). Traced on first use, cached."""
        from kerasq._compat import tf
        from kerasq.ops import custom_kernels_loaded

        key = (tuple(tuple(s) for s in shapes), custom_kernels_loaded())
        if key not in self._compiled:
            fracs: List[Optional[int]] = []

            def body(*xs: Any) -> List[Any]:
                fracs.clear()
                flat = []
                for r in self._walk(dict(zip(self.input_keys, xs)), eager=False):
                    if isinstance(r, _GInt):
                        fracs.append(r.frac)
                        flat += [_g_to_float(r), _g_narrow(r, "output")]
                    else:
                        fracs.append(None)
                        flat += [r, r]
                return flat

            signature = [tf.TensorSpec((None,) + tuple(s), tf.float32) for s in key[0]]
            function = tf.function(body, input_signature=signature, autograph=False)
            self._compiled[key] = (function.get_concrete_function(), fracs)
            log.debug("integer program traced for input shapes %s", key[0])
        return self._compiled[key][0]

    def __call__(self, x: Any, *, return_integers: bool = False) -> Any:
        """Run the compiled program on a batch; arguments and result as in :func:`run`."""
        from kerasq._compat import tf
        from kerasq.ops import custom_kernels_loaded

        inputs = self._inputs(x)
        shapes = [v.shape[1:] for v in inputs]
        function = self.compiled(shapes)
        fracs = self._compiled[(tuple(tuple(s) for s in shapes), custom_kernels_loaded())][1]
        try:
            flat = function(*[tf.constant(v) for v in inputs])
        except tf.errors.InvalidArgumentError as exc:
            raise _runtime_error(exc) from None
        results = []
        for n, frac in enumerate(fracs):
            floats, ints = flat[2 * n], flat[2 * n + 1]
            if return_integers and frac is not None:
                results.append(IntTensor(ints.numpy().astype(np.int64), frac))
            else:
                results.append(floats.numpy())
        return results[0] if len(results) == 1 else results


def _runtime_error(exc: Exception) -> Exception:
    """A failed run-time check of the compiled program as the eager path's error."""
    text = str(getattr(exc, "message", exc))
    if _RUNTIME_ERROR not in text:
        return exc
    # the assertion's text is "... [<message>] [Condition ...]"
    message = text.split(_RUNTIME_ERROR, 1)[1].splitlines()[0].split("]", 1)[0]
    where, _, reason = message.partition(": ")
    return UnsupportedLayerError(reason, layer=where)


def prepare(qmodel: Any) -> IntegerProgram:
    """Lower a calibrated DFP model to integer layers once, for repeated runs.

    The program holds the integer weights and grids read now; calling it runs the
    compiled graph (traced on the first call for each input shape). This is the fast
    path: :func:`run` adds a check of the model's variables to every call.

    Raises:
        UnsupportedLayerError: a layer or quantizer without an exact integer form (names
        the layer).

    Example:
        >>> program = kerasq.integer.prepare(qmodel)  # doctest: +SKIP
        >>> ys = [program(batch) for batch in batches]  # doctest: +SKIP
    """
    from kerasq.data import check_keras_model

    check_keras_model(qmodel, "qmodel", quantized=True)
    return IntegerProgram(qmodel)


def run(qmodel: Any, x: Any, *, return_integers: bool = False) -> Any:
    """Execute a calibrated DFP model in integers; returns what ``qmodel`` returns.

    The first call prepares and compiles the model's program (:func:`prepare`); later
    calls reuse it as long as every variable of the model (weights, quantizer ranges)
    still holds the value it was read from, checked on each call.

    Args:
        qmodel: a functional/Sequential model from :func:`kerasq.quantize_model`.
        x: input batch (numpy or tensor; a list for several inputs).
        return_integers: return :class:`IntTensor` outputs (integers and fractional
            length) instead of their float32 values.

    Returns:
        One output (or a list, as the model has), equal to ``qmodel(x, training=False)``
        bit for bit under the conditions in the module docstring.

    Raises:
        UnsupportedLayerError: a layer or quantizer without an exact integer form (names
        the layer).

    Example:
        >>> y = kerasq.integer.run(qmodel, x)  # doctest: +SKIP
    """
    from kerasq.data import check_array, check_bool, check_keras_model

    check_keras_model(qmodel, "qmodel", quantized=True)
    check_array(x, "x", model=qmodel)
    check_bool(return_integers, "return_integers")
    return _cached_program(qmodel)(x, return_integers=return_integers)


_RUN_CACHE: "collections.OrderedDict[int, Tuple[Any, Any, IntegerProgram]]" = (
    collections.OrderedDict())
_RUN_CACHE_SIZE = 4


def _cached_program(qmodel: Any) -> IntegerProgram:
    """The program :func:`run` last prepared for ``qmodel`` while none of the model's
    variables (weights, quantizer ranges) has changed since; else a new one. The few most
    recently run models are kept."""
    key = id(qmodel)
    entry = _RUN_CACHE.get(key)
    if entry is not None and entry[0]() is qmodel and entry[1].unchanged():
        _RUN_CACHE.move_to_end(key)
        return entry[2]
    from kerasq.ops.variables import VariableSnapshot

    program = IntegerProgram(qmodel)
    # one op per check: the bytes of every variable (weights, quantizer ranges) compared
    # with their copy; a value written back unchanged keeps the program
    _RUN_CACHE[key] = (weakref.ref(qmodel), VariableSnapshot(qmodel.variables), program)
    _RUN_CACHE.move_to_end(key)
    while len(_RUN_CACHE) > _RUN_CACHE_SIZE:
        _RUN_CACHE.popitem(last=False)
    return program


__all__ = ["IntTensor", "IntegerProgram", "prepare", "run"]
