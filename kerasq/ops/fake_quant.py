"""Fast fake quantization: DFP and minifloat, C++ kernels with a pure-TF fallback.

Both functions have exactly the semantics (and the results, bit for bit, in the
deterministic rounding modes) of :func:`kerasq.numerics.dfp_quantize` and
:func:`kerasq.numerics.minifloat_quantize`, which are also their fallback. The C++ op
does the forward in one pass over memory and also writes a clip mask (one bit per element,
``Kerasq>FakeQuantDfpMasked`` / ``Kerasq>FakeQuantMinifloatMasked``); the clipped
straight-through gradient ``Kerasq>ClipMaskGrad`` then reads dy and the mask instead of dy
and x: 4 + 1/16 memory streams of n elements per forward + backward step, against 4 for
``x * 1.0`` and 5 for a gradient that re-reads x. (``Kerasq>FakeQuantDfpGrad`` /
``Kerasq>FakeQuantMinifloatGrad``, the gradients from x, stay registered for graphs that
use the unmasked ops.)

Stochastic rounding in C++ draws u from a counter-based generator (SplitMix64 of the
seed and the element's flat index): the same seed gives the same result for any thread
count. The fallback uses TF's stateless Philox stream, so the two paths agree in
distribution (both unbiased), not value by value.

Example:
    >>> from kerasq._compat import tf
    >>> from kerasq.ops import fake_quant_dfp
    >>> fake_quant_dfp(tf.constant([0.3, 1.7, -5.0]), 4, 2).numpy().tolist()
    [0.25, 1.75, -2.0]
"""

from __future__ import annotations

from typing import Any, Optional

from kerasq.errors import QuantizationConfigError
from kerasq.numerics import _validate
from kerasq.numerics._validate import DEFAULT_ROUNDING
from kerasq.ops._loader import library

_GRADIENTS_REGISTERED = False


def _register_gradients(lib: Any) -> None:
    global _GRADIENTS_REGISTERED
    if _GRADIENTS_REGISTERED:
        return
    from kerasq._compat import tf

    def _dfp_grad(op, dy):  # noqa: ANN001 - TF gradient signature
        dx = lib.kerasq_fake_quant_dfp_grad(
            dy, op.inputs[0], op.inputs[1],
            bitwidth=op.get_attr("bitwidth"), signed=op.get_attr("signed"),
            relu=op.get_attr("relu"),
        )
        return [dx, None, None]

    def _minifloat_grad(op, dy):  # noqa: ANN001
        dx = lib.kerasq_fake_quant_minifloat_grad(
            dy, op.inputs[0],
            exp_bits=op.get_attr("exp_bits"), mant_bits=op.get_attr("mant_bits"),
        )
        return [dx, None]

    def _masked_grad(op, dy, *_unused):  # noqa: ANN001
        # The forward's clip mask replaces x: the backward reads dy and n/8 bytes.
        return [lib.kerasq_clip_mask_grad(dy, op.outputs[1])] + [None] * (len(op.inputs) - 1)

    for name, fn in (("Kerasq>FakeQuantDfp", _dfp_grad),
                     ("Kerasq>FakeQuantMinifloat", _minifloat_grad),
                     ("Kerasq>FakeQuantDfpMasked", _masked_grad),
                     ("Kerasq>FakeQuantDfpMaskedDynamicSign", _masked_grad),
                     ("Kerasq>DfpWeightQuantize", _masked_grad),
                     ("Kerasq>FakeQuantMinifloatMasked", _masked_grad)):
        try:
            tf.RegisterGradient(name)(fn)
        except KeyError:  # registered already (this module imported twice, e.g. doctest)
            pass
    _GRADIENTS_REGISTERED = True


def _custom_library() -> Optional[Any]:
    lib = library()
    if lib is not None:
        _register_gradients(lib)
    return lib


def seed_tensor(seed: Any, rounding: str) -> Any:
    """The scalar int64 seed the C++ ops take.

    None -> a fresh random seed per call (per step inside ``tf.function``); an int as is;
    a pair ``(a, b)`` or an int tensor of shape [2] -> ``a * 2^32 + b`` (wrapping).
    Deterministic modes ignore it (0).
    """
    from kerasq._compat import tf

    if rounding != "stochastic":
        return tf.constant(0, tf.int64)
    if seed is None:
        return tf.random.uniform([], 0, 2**62, dtype=tf.int64)
    if _validate.is_tensor(seed):
        seed = tf.cast(seed, tf.int64)
        if seed.shape.rank == 0:
            return seed
        seed = tf.reshape(seed, [-1])
        return seed[0] * (2**32) + seed[-1]
    if isinstance(seed, tuple):
        a, b = seed
        value = (a * 2**32 + b) % 2**64
        return tf.constant(value - 2**64 if value >= 2**63 else value, tf.int64)
    return tf.constant(int(seed), tf.int64)


def _float_tensor(x: Any) -> Any:
    from kerasq._compat import tf

    return x if _validate.is_tensor(x) else tf.convert_to_tensor(x)


def fake_quant_dfp(
    x: Any,
    bitwidth: int,
    frac_bits: Any,
    *,
    signed: Any = True,
    rounding: str = DEFAULT_ROUNDING,
    seed: Any = None,
    relu: bool = False,
) -> Any:
    """DFP fake quantization ``y = clamp(round(x·2^fl), qmin, qmax)·2^−fl``.

    Args:
        x: float tensor (float32/float64 run in C++; other dtypes use the fallback).
        bitwidth: B in 2..32; ``[qmin, qmax] = [−2^(B−1), 2^(B−1)−1]`` (signed) or
            ``[0, 2^B−1]``.
        frac_bits: fl: an int, or an int tensor/array of shape [] or [C] (per channel
            along the last axis of ``x``).
        signed, rounding, seed: as in :func:`kerasq.numerics.dfp_quantize`; ``signed`` may
            also be a scalar bool tensor, read when the op runs (one kernel in place of a
            ``tf.cond`` between the two grids).
        relu: quantize ``max(x, 0)`` (a ReLU fused in front, one pass instead of two):
            the result and the gradient are those of ``fake_quant_dfp(tf.nn.relu(x))``,
            i.e. the gradient is 1 where ``x > 0`` and ``x·2^fl <= qmax``.

    Returns:
        A tensor like ``x``; gradient 1 where ``qmin <= x·2^fl <= qmax``, else 0.

    Example:
        >>> from kerasq._compat import tf
        >>> fake_quant_dfp(tf.constant([0.3, 1.7]), 8, 4, rounding="half_up").numpy().tolist()
        [0.3125, 1.6875]
    """
    from kerasq._compat import tf
    from kerasq.numerics import dfp_quantize
    from kerasq.numerics.dfp import _check_common, _tf_frac_bits

    dynamic_sign = _validate.is_tensor(signed)
    if dynamic_sign:
        is_signed = tf.convert_to_tensor(signed)
        if is_signed.dtype != tf.bool or is_signed.shape.rank != 0:
            raise QuantizationConfigError(
                f"a tensor `signed` must be a bool scalar, got {is_signed.dtype.name} "
                f"of shape {is_signed.shape}")
        bitwidth, _ = _check_common(bitwidth, True)
    else:
        bitwidth, signed = _check_common(bitwidth, signed)
    rounding = _validate.check_rounding(rounding)
    seed = _validate.check_seed(seed)
    lib = _custom_library()
    x = _float_tensor(x)
    fl = _tf_frac_bits(frac_bits)
    per_channel_ok = fl.shape.rank == 0 or (
        fl.shape.rank == 1 and x.shape.rank is not None and x.shape.rank >= 1
        and x.shape[-1] is not None and fl.shape[0] == x.shape[-1]
    )
    relu = _validate.check_bool("relu", relu)
    if lib is None or x.dtype not in (tf.float32, tf.float64) or not per_channel_ok:
        source = tf.nn.relu(x) if relu else x

        def grid(is_signed_grid: bool) -> Any:
            return dfp_quantize(source, bitwidth, fl, signed=is_signed_grid, rounding=rounding,
                                seed=seed)
        if dynamic_sign:
            return tf.cond(is_signed, lambda: grid(True), lambda: grid(False))
        return grid(signed)
    if dynamic_sign:
        y, _ = lib.kerasq_fake_quant_dfp_masked_dynamic_sign(
            x, fl, seed_tensor(seed, rounding), is_signed, bitwidth=bitwidth, rounding=rounding,
            relu=relu)
        return y
    y, _ = lib.kerasq_fake_quant_dfp_masked(
        x, fl, seed_tensor(seed, rounding), bitwidth=bitwidth, signed=signed, rounding=rounding,
        relu=relu,
    )
    return y


def fake_quant_dfp_weights(
    w: Any,
    bitwidth: int,
    *,
    per_channel: bool = True,
    rounding: str = DEFAULT_ROUNDING,
    seed: Any = None,
) -> Any:
    """Signed DFP fake quantization of weights with fl from their own range, in one op.

    Per channel along the last axis (or per tensor): ``w_min``, ``w_max`` of the channel,
    ``fl = B − 1 − ceil(log2 max(|w_min|, |w_max|))`` (ceil(log2 a) := 0 below the smallest
    normal float), ``y = fake_quant_dfp(w, B, fl, signed=True)``.

    Args:
        w: float32 tensor (rank >= 1 when ``per_channel``).
        bitwidth: B in 2..32.
        per_channel: one fl per entry of the last axis, else one for the tensor.
        rounding, seed: as in :func:`fake_quant_dfp`.

    Returns:
        ``(y, frac_bits, w_min, w_max)``: y like w (clipped straight-through gradient);
        the other three float32 of shape ``[C]`` (per channel) or ``[]``, no gradient.

    Example:
        >>> from kerasq._compat import tf
        >>> y, fl, lo, hi = fake_quant_dfp_weights(tf.constant([[0.3, -1.5], [0.1, 0.2]]), 8)
        >>> fl.numpy().tolist(), y.numpy()[0].tolist()
        ([8.0, 6.0], [0.30078125, -1.5])
    """
    from kerasq._compat import tf
    from kerasq.numerics.dfp import _check_common, dfp_frac_bits_float32

    bitwidth, _ = _check_common(bitwidth, True)
    rounding = _validate.check_rounding(rounding)
    seed = _validate.check_seed(seed)
    per_channel = _validate.check_bool("per_channel", per_channel)
    w = _float_tensor(w)
    if per_channel and (w.shape.rank is None or w.shape.rank < 1):
        raise QuantizationConfigError(
            f"per-channel weights need a rank >= 1 tensor, got shape {w.shape}")
    lib = _custom_library()
    if lib is not None and w.dtype == tf.float32:
        y, _, fl, w_min, w_max = lib.kerasq_dfp_weight_quantize(
            w, seed_tensor(seed, rounding), bitwidth=bitwidth, rounding=rounding,
            per_channel=per_channel)
        return y, fl, w_min, w_max
    axes = list(range(w.shape.rank - 1)) if per_channel else None
    w_min = tf.reduce_min(w, axis=axes)
    w_max = tf.reduce_max(w, axis=axes)
    a = tf.maximum(tf.abs(w_min), tf.abs(w_max))
    fl = dfp_frac_bits_float32(tf.cast(a, tf.float32), bitwidth, signed=True)
    y = fake_quant_dfp(w, bitwidth, fl, signed=True, rounding=rounding, seed=seed)
    return y, tf.cast(fl, w.dtype), w_min, w_max


def fake_quant_minifloat(
    x: Any,
    exp_bits: int,
    mant_bits: int,
    *,
    rounding: str = DEFAULT_ROUNDING,
    subnormals: bool = False,
    seed: Any = None,
) -> Any:
    """Minifloat fake quantization with E exponent and M mantissa bits (Ristretto format).

    Same semantics as :func:`kerasq.numerics.minifloat_quantize`: bias 2^(E−1)−1, no
    inf/NaN codes, saturation at ``(2 − 2^−M)·2^(2^E−1−bias)``, flush below 2^−bias
    (or IEEE-style subnormals). Gradient 1 where ``|x| <= max``, else 0.

    Example:
        >>> from kerasq._compat import tf
        >>> fake_quant_minifloat(tf.constant([0.3, 90.0, 1e6]), 4, 3).numpy().tolist()
        [0.3125, 88.0, 480.0]
    """
    from kerasq._compat import tf
    from kerasq.numerics import minifloat_quantize
    from kerasq.numerics.minifloat import _check_format

    exp_bits, mant_bits = _check_format(exp_bits, mant_bits)
    rounding = _validate.check_rounding(rounding)
    subnormals = _validate.check_bool("subnormals", subnormals)
    seed = _validate.check_seed(seed)
    lib = _custom_library()
    x = _float_tensor(x)
    if lib is None or x.dtype not in (tf.float32, tf.float64):
        return minifloat_quantize(
            x, exp_bits, mant_bits, rounding=rounding, subnormals=subnormals, seed=seed
        )
    y, _ = lib.kerasq_fake_quant_minifloat_masked(
        x, seed_tensor(seed, rounding), exp_bits=exp_bits, mant_bits=mant_bits,
        subnormals=subnormals, rounding=rounding,
    )
    return y


__all__ = ["fake_quant_dfp", "fake_quant_dfp_weights", "fake_quant_minifloat"]
