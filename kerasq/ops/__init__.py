"""Custom TensorFlow ops of kerasq: fast fake quantization and fixed-point integer layers.

Every function runs a C++ kernel from ``_kerasq_ops.so`` when it is built and loadable,
else an equivalent pure-TF fallback (bit-identical in every deterministic mode; see
``docs/ops.md``). The library is loaded lazily on the first op call, never at import.
``KERASQ_PY_OPS=1`` forces the fallback; :func:`custom_kernels_loaded` tells which path
runs.

* :func:`fake_quant_dfp`, :func:`fake_quant_minifloat`: QAT fake quantization with
  clipped straight-through gradients (= :mod:`kerasq.numerics`, faster);
  :func:`fake_quant_dfp_weights`: the same for weights with fl from their own range.
* :func:`dfp_conv2d`, :func:`dfp_depthwise_conv2d`, :func:`dfp_matmul`: int8/uint8/int16
  layers with exact accumulation and shift requantization.
* :func:`range_min_max`: ``(reduce_min(x), reduce_max(x))`` in one pass over x.
* :class:`kerasq.ops.variables.VariableSnapshot`: whether any of many variables changed,
  in one op.

Example:
    >>> from kerasq._compat import tf
    >>> import kerasq.ops
    >>> kerasq.ops.fake_quant_dfp(tf.constant([0.3]), 8, 4).numpy().tolist()
    [0.3125]
"""

from kerasq.ops._loader import custom_kernels_loaded, fallback_reason
from kerasq.ops.fake_quant import fake_quant_dfp, fake_quant_dfp_weights, fake_quant_minifloat
from kerasq.ops.integer_ops import dfp_conv2d, dfp_depthwise_conv2d, dfp_matmul
from kerasq.ops.ranges import range_min_max

__all__ = [
    "custom_kernels_loaded",
    "fallback_reason",
    "fake_quant_dfp",
    "fake_quant_dfp_weights",
    "fake_quant_minifloat",
    "dfp_conv2d",
    "dfp_depthwise_conv2d",
    "dfp_matmul",
    "range_min_max",
]
