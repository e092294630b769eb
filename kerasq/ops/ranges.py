"""Range statistics: min and max of a tensor in one pass (C++), with a pure-TF fallback.

:func:`range_min_max` returns ``(tf.reduce_min(x), tf.reduce_max(x))``. The C++ kernel
``Kerasq>RangeMinMax`` reads x once instead of twice: a NaN anywhere gives NaN for both,
an empty tensor gives ``(+inf, -inf)``, as TF's reductions. Between the zeros it orders
-0.0 < +0.0 (IEEE 754-2019 ``minimum``/``maximum``), so the result does not depend on the
thread count; TF's reductions return whichever zero their summation order meets last
(the two agree on every value, ``-0.0 == 0.0``). The gradient is TF's gradient of
reduce_min/reduce_max: dy split evenly over the elements equal to the extreme.

Example:
    >>> from kerasq._compat import tf
    >>> from kerasq.ops import range_min_max
    >>> [float(v) for v in range_min_max(tf.constant([[0.5, -2.0], [3.0, 1.0]]))]
    [-2.0, 3.0]
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

from kerasq.ops._loader import library

_GRADIENT_REGISTERED = False


def _extreme_grad(x: Any, extreme: Any, dy: Any) -> Any:
    # TF's _MinOrMaxGrad for a full reduction: dy/k on each of the k elements equal to it.
    from kerasq._compat import tf

    indicators = tf.cast(tf.equal(extreme, x), dy.dtype)
    return tf.divide(indicators, tf.reduce_sum(indicators)) * dy


def _register_gradient() -> None:
    global _GRADIENT_REGISTERED
    if _GRADIENT_REGISTERED:
        return
    from kerasq._compat import tf

    def _grad(op, dmin, dmax):  # noqa: ANN001 - TF gradient signature
        x = op.inputs[0]
        grads = [_extreme_grad(x, op.outputs[i], dy)
                 for i, dy in enumerate((dmin, dmax)) if dy is not None]
        if not grads:
            return [None]
        return [grads[0] if len(grads) == 1 else grads[0] + grads[1]]

    try:
        tf.RegisterGradient("Kerasq>RangeMinMax")(_grad)
        tf.no_gradient("Kerasq>DfpRangeUpdate")
    except KeyError:  # registered already (this module imported twice, e.g. doctest)
        pass
    _GRADIENT_REGISTERED = True


def range_min_max(x: Any) -> Tuple[Any, Any]:
    """``(min(x), max(x))`` over all elements, as two float scalars.

    Args:
        x: a tensor; float32 runs the one-pass C++ kernel, other dtypes the fallback
            ``(tf.reduce_min(x), tf.reduce_max(x))``.

    Returns:
        Two scalar tensors of x's dtype: NaN if x holds a NaN, ``(+inf, -inf)`` if empty.

    Example:
        >>> from kerasq._compat import tf
        >>> [float(v) for v in range_min_max(tf.constant([1.0, -0.5, 4.0]))]
        [-0.5, 4.0]
    """
    from kerasq._compat import tf

    x = tf.convert_to_tensor(x)
    lib = library() if x.dtype == tf.float32 else None
    if lib is None:
        return tf.reduce_min(x), tf.reduce_max(x)
    _register_gradient()
    lo, hi = lib.kerasq_range_min_max(x)
    return lo, hi


def dfp_range_update(x: Any, count: Any, stored_min: Any, stored_max: Any, *, bitwidth: int,
                     signed: Optional[bool] = None, max_abs: bool = False,
                     relu: bool = False) -> Optional[Tuple[Any, Any, Any, Any]]:
    """One op for a power-of-two DFP activation quantizer's range step, or None without
    the C++ library (the caller then runs its TF ops, the reference of this kernel).

    ``(bmin, bmax) = range_min_max(x)`` (``bmax = max(bmax, -bmin)`` if ``max_abs``);
    ``new = (bmin, bmax)`` if ``count == 0`` else ``(min(stored_min, bmin), max(stored_max,
    bmax))``; ``A = max(|new_min|, new_max)`` if ``max_abs`` else ``max(|new_min|,
    |new_max|)``; ``fl = B - ceil(log2 A)`` (0 for ``ceil(log2 A)`` below the smallest
    normal), minus 1 on a signed grid (``signed=None``: signed iff ``new_min < 0`` or
    NaN; never with ``max_abs``); ``scale = 2^fl`` (0 below 2^-126, as TF's ``pow``
    with denormals flushed). NaN propagates as in ``tf.minimum``/``tf.maximum``. The
    outputs carry no gradient. ``relu=True``: the same for ``max(x, 0)`` (``bmin, bmax``
    clamped below at 0 for a non-empty x), the range of a ReLU fused in front.

    Returns:
        ``(new_min, new_max, frac_bits, scale)``, float32 scalars, or None.

    Example:
        >>> from kerasq._compat import tf
        >>> out = dfp_range_update(tf.constant([-0.3, 1.7]), tf.constant(0, tf.int64),
        ...                        tf.constant(0.0), tf.constant(0.0), bitwidth=8)
        >>> out is None or [round(float(v), 4) for v in out] == [-0.3, 1.7, 6.0, 64.0]
        True
    """
    from kerasq._compat import tf

    x = tf.convert_to_tensor(x)
    lib = library() if x.dtype == tf.float32 else None
    if lib is None:
        return None
    _register_gradient()
    signedness = "data" if signed is None else ("signed" if signed else "unsigned")
    return tuple(lib.kerasq_dfp_range_update(
        x, tf.cast(count, tf.int64), tf.cast(stored_min, tf.float32),
        tf.cast(stored_max, tf.float32), bitwidth=int(bitwidth), signedness=signedness,
        max_abs=bool(max_abs), relu=bool(relu)))
