"""The one place that chooses the fake-quantization kernels used by the quantizers.

``kerasq.ops`` (C++ kernels with a built-in fallback) when it is importable, else the
pure-TF reference ``kerasq.numerics``; both give identical results. The affine
(non-power-of-two, offset) path of caffe-jacinto has no kernel and is written here.
"""

from __future__ import annotations

import functools
from typing import Any

from kerasq._compat import tf


@functools.lru_cache(maxsize=None)
def _numerics() -> Any:
    import kerasq.numerics as numerics

    return numerics


@functools.lru_cache(maxsize=None)
def _ops() -> Any:
    try:
        import kerasq.ops as ops

        if hasattr(ops, "fake_quant_dfp") and hasattr(ops, "fake_quant_minifloat"):
            return ops
    except ImportError:
        pass
    return None


def dfp_quantize(x: tf.Tensor, bitwidth: int, frac_bits: Any, *, signed: Any,
                 rounding: str, relu: bool = False) -> tf.Tensor:
    """x' = clip(round(x·2^fl), qmin, qmax)·2^-fl (see ``kerasq.numerics.dfp_quantize``);
    ``relu``: of max(x, 0), value and gradient; ``signed`` a bool or a bool scalar tensor
    (``kerasq.ops.fake_quant_dfp``)."""
    if tf.is_tensor(frac_bits) and not frac_bits.dtype.is_integer:
        frac_bits = tf.cast(frac_bits, tf.int32)
    ops = _ops()
    if ops is not None:
        return ops.fake_quant_dfp(x, bitwidth, frac_bits, signed=signed, rounding=rounding,
                                  relu=relu)
    source = tf.nn.relu(x) if relu else x

    def grid(is_signed: bool) -> tf.Tensor:
        return _numerics().dfp_quantize(source, bitwidth, frac_bits, signed=is_signed,
                                        rounding=rounding)
    if tf.is_tensor(signed):
        return tf.cond(signed, lambda: grid(True), lambda: grid(False))
    return grid(signed)


def range_min_max(x: tf.Tensor) -> Any:
    """(reduce_min(x), reduce_max(x)) in one pass over x (``kerasq.ops.range_min_max``)."""
    ops = _ops()
    if ops is not None:
        return ops.range_min_max(x)
    return tf.reduce_min(x), tf.reduce_max(x)


def dfp_range_update(x: tf.Tensor, count: Any, stored_min: Any, stored_max: Any, *,
                     bitwidth: int, signed: Any, max_abs: bool, relu: bool = False) -> Any:
    """``kerasq.ops.ranges.dfp_range_update`` (new_min, new_max, fl, 2^fl) of x (``relu``:
    of max(x, 0)), or None when the C++ op is not available."""
    if _ops() is None:
        return None
    from kerasq.ops.ranges import dfp_range_update as update

    return update(x, count, stored_min, stored_max, bitwidth=bitwidth, signed=signed,
                  max_abs=max_abs, relu=relu)


def dfp_weight_quantize(w: tf.Tensor, bitwidth: int, *, per_channel: bool, rounding: str
                        ) -> Any:
    """``kerasq.ops.fake_quant_dfp_weights`` (y, fl, min, max) when the C++ kernels run,
    else None (the caller then runs its TF ops, the reference of the kernel)."""
    if not custom_kernels_run() or w.dtype != tf.float32:
        return None
    return _ops().fake_quant_dfp_weights(w, bitwidth, per_channel=per_channel,
                                         rounding=rounding)


def custom_kernels_run() -> bool:
    """Whether the C++ kernels run: the fused forms (``relu=True`` of :func:`dfp_quantize`
    and :func:`dfp_range_update`, :func:`dfp_weight_quantize`) only exist there."""
    ops = _ops()
    return ops is not None and ops.custom_kernels_loaded()


def minifloat_quantize(x: tf.Tensor, exp_bits: int, mant_bits: int, *, rounding: str) -> tf.Tensor:
    """Ristretto minifloat trim (see ``kerasq.numerics.minifloat_quantize``)."""
    ops = _ops()
    if ops is not None:
        return ops.fake_quant_minifloat(x, exp_bits, mant_bits, rounding=rounding)
    return _numerics().minifloat_quantize(x, exp_bits, mant_bits, rounding=rounding)


def pow2_quantize(x: tf.Tensor, exp_min: int, exp_max: int, *, rounding: str) -> tf.Tensor:
    """Ristretto power-of-two weights (see ``kerasq.numerics.pow2_quantize``)."""
    return _numerics().pow2_quantize(x, exp_min, exp_max, rounding=rounding)


def dfp_frac_bits(max_abs: tf.Tensor, bitwidth: int, *, signed: bool) -> tf.Tensor:
    """Largest fl such that max_abs fits the B-bit grid (``kerasq.numerics.dfp_frac_bits``).

    fl = B − s − ceil(log2 max_abs), ceil(log2 0) := 0, subnormals count as 0. For float32
    (every quantizer's statistics) ceil(log2 m) of a normal m is read in four ops from the
    bit pattern: ((bits(m) + 2^23 − 1) >> 23) − 127, i.e. the exponent field, plus one when
    any mantissa bit is set (the carry). The quantizers run this once per quantizer and step;
    the general ``kerasq.numerics`` form (used eagerly, where it also rejects non-finite
    values) takes about 25 ops.
    """
    m = tf.convert_to_tensor(max_abs)
    if m.dtype != tf.float32 or tf.executing_eagerly():  # eager: numerics checks the value
        return tf.cast(_numerics().dfp_frac_bits(m, bitwidth, signed=signed), tf.float32)
    from kerasq.numerics.dfp import dfp_frac_bits_float32

    return tf.cast(dfp_frac_bits_float32(m, bitwidth, signed=signed), tf.float32)


def _round(y: tf.Tensor, rounding: str) -> tf.Tensor:
    return _numerics().round_values(y, rounding)


def affine_quantize(x: tf.Tensor, scale: tf.Tensor, offset: tf.Tensor, qmin: float, qmax: float,
                    *, rounding: str) -> tf.Tensor:
    """caffe-jacinto's trim: y = round(clamp(x·s + o, qmin, qmax)); x' = (y − o)/s.

    Straight-through gradient inside [qmin, qmax], zero outside (clipped STE).
    """
    x = tf.convert_to_tensor(x)
    y = x * scale + offset
    inside = tf.cast(tf.logical_and(y >= qmin, y <= qmax), x.dtype)
    q = (_round(tf.clip_by_value(y, qmin, qmax), rounding) - offset) / scale
    # q + 0 keeps the forward value bit-exact; the second term carries the STE gradient.
    return tf.stop_gradient(q) + inside * (x - tf.stop_gradient(x))
