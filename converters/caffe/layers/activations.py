"""Element-wise Caffe layers: PReLU, ELU, Sigmoid, TanH, AbsVal, BNLL, Power, Exp, Log,
Threshold, Clip, Swish, ReLU6.

Element-wise maps are layout-free: the output keeps the input's layout. Stock Keras layers
are used where they are exact (PReLU, ELU, Activation, ReLU(max_value)); the rest are the
small layers of :mod:`kerasq.converters.caffe.keras_layers`.

Formulas (x the input):
    PReLU  max(x,0) + a_c * min(x,0)      (a per channel = Caffe axis 1, or one shared a)
    ELU    x if x > 0 else alpha*(e^x - 1)
    Power  (shift + scale*x)^power        Exp  base^(shift + scale*x)  (base -1 = e)
    Log    log_base(shift + scale*x)      BNLL log(1 + e^x)
    Threshold  1 if x > t else 0          Clip min(max(x, lo), hi)
    Swish  x * sigmoid(beta*x)            ReLU6 min(max(x, 0), 6)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, List

import numpy as np
from kerasq.converters.caffe import keras_layers as kx
from kerasq.converters.caffe.layers._registry import register
from kerasq.converters.caffe.layout import Blob

from kerasq._compat import keras
from kerasq.errors import CaffeFormatError

if TYPE_CHECKING:  # pragma: no cover
    from kerasq.converters.caffe.graph import Node
    from kerasq.converters.caffe.lower import LoweringContext


def _elementwise(
    ctx: "LoweringContext", node: "Node", inputs: List[Blob], layer: Any
) -> List[Blob]:
    x = inputs[0]
    return [Blob(tensor=layer(x.tensor), shape=x.shape, perm=x.perm)]


def _set(ctx: "LoweringContext", node: "Node", layer: Any, weights: List[np.ndarray]) -> None:
    try:
        layer.set_weights([w.astype(np.float32) for w in weights])
    except ValueError as exc:
        ctx.error(node, f"weight shape mismatch: {exc}", cls=CaffeFormatError)


@register("PReLU")
def lower_prelu(ctx: "LoweringContext", node: "Node", inputs: List[Blob]) -> List[Blob]:
    """PReLU: per-channel slope on Caffe axis 1 (or one shared slope; shapeless blob allowed)."""
    x = inputs[0]
    if x.rank < 2:
        ctx.error(node, f"PReLU needs a blob with at least 2 axes, got shape {x.shape}")
    shared = node.param.prelu_param.channel_shared
    channels = x.shape[1]
    if channels is None:
        ctx.error(node, "PReLU over an axis of unknown size is not supported")
    slope = ctx.blob(node, 0, (1,) if shared else (channels,), "slope").reshape(-1)
    if x.keras_axis(1) == 0:
        x = ctx.caffe_order(x)
    channel_axis = x.keras_axis(1)
    if shared:
        alpha = slope.reshape((1,) * (x.rank - 1))
    else:
        alpha_shape = [1] * (x.rank - 1)
        alpha_shape[channel_axis - 1] = slope.size
        alpha = slope.reshape(alpha_shape)
    shared_axes = [i for i in range(1, x.rank) if shared or i != channel_axis]
    layer = keras.layers.PReLU(shared_axes=shared_axes or None, name=ctx.name(node))
    out = layer(x.tensor)
    _set(ctx, node, layer, [alpha])
    return [Blob(tensor=out, shape=x.shape, perm=x.perm)]


@register("ELU")
def lower_elu(ctx: "LoweringContext", node: "Node", inputs: List[Blob]) -> List[Blob]:
    """ELU: x if x > 0 else alpha * (exp(x) - 1)."""
    alpha = node.param.elu_param.alpha
    return _elementwise(ctx, node, inputs, keras.layers.ELU(alpha=alpha, name=ctx.name(node)))


@register("Sigmoid")
def lower_sigmoid(ctx: "LoweringContext", node: "Node", inputs: List[Blob]) -> List[Blob]:
    """Sigmoid: 1 / (1 + e^-x)."""
    return _elementwise(ctx, node, inputs, keras.layers.Activation("sigmoid", name=ctx.name(node)))


@register("TanH")
def lower_tanh(ctx: "LoweringContext", node: "Node", inputs: List[Blob]) -> List[Blob]:
    """TanH: tanh(x)."""
    return _elementwise(ctx, node, inputs, keras.layers.Activation("tanh", name=ctx.name(node)))


@register("AbsVal")
def lower_absval(ctx: "LoweringContext", node: "Node", inputs: List[Blob]) -> List[Blob]:
    """AbsVal: |x|."""
    return _elementwise(ctx, node, inputs, kx.AbsVal(name=ctx.name(node)))


@register("BNLL")
def lower_bnll(ctx: "LoweringContext", node: "Node", inputs: List[Blob]) -> List[Blob]:
    """BNLL: log(1 + e^x)."""
    return _elementwise(ctx, node, inputs, kx.BNLL(name=ctx.name(node)))


@register("Power")
def lower_power(ctx: "LoweringContext", node: "Node", inputs: List[Blob]) -> List[Blob]:
    """Power: (shift + scale * x) ^ power."""
    p = node.param.power_param
    return _elementwise(
        ctx,
        node,
        inputs,
        kx.PowerAffine(power=p.power, scale=p.scale, shift=p.shift, name=ctx.name(node)),
    )


@register("Exp")
def lower_exp(ctx: "LoweringContext", node: "Node", inputs: List[Blob]) -> List[Blob]:
    """Exp: base ^ (shift + scale * x), base -1 = e."""
    p = node.param.exp_param
    if p.base != -1 and p.base <= 0:
        ctx.error(node, f"Exp base must be -1 (e) or positive, got {p.base}", cls=CaffeFormatError)
    return _elementwise(
        ctx,
        node,
        inputs,
        kx.ExpAffine(base=p.base, scale=p.scale, shift=p.shift, name=ctx.name(node)),
    )


@register("Log")
def lower_log(ctx: "LoweringContext", node: "Node", inputs: List[Blob]) -> List[Blob]:
    """Log: log_base(shift + scale * x), base -1 = e."""
    p = node.param.log_param
    if p.base != -1 and (p.base <= 0 or p.base == 1):
        ctx.error(
            node,
            f"Log base must be -1 (e) or positive and != 1, got {p.base}",
            cls=CaffeFormatError,
        )
    return _elementwise(
        ctx,
        node,
        inputs,
        kx.LogAffine(base=p.base, scale=p.scale, shift=p.shift, name=ctx.name(node)),
    )


@register("Threshold")
def lower_threshold(ctx: "LoweringContext", node: "Node", inputs: List[Blob]) -> List[Blob]:
    """Threshold: 1 if x > threshold else 0 (strictly greater, as Caffe)."""
    t = node.param.threshold_param.threshold
    return _elementwise(ctx, node, inputs, kx.ThresholdStep(threshold=t, name=ctx.name(node)))


@register("Clip")
def lower_clip(ctx: "LoweringContext", node: "Node", inputs: List[Blob]) -> List[Blob]:
    """Clip: min(max(x, min), max); [0, m] becomes a stock ReLU(max_value=m)."""
    p = node.param.clip_param
    if not (p.HasField("min") and p.HasField("max")):
        ctx.error(node, "Clip needs both clip_param.min and clip_param.max", cls=CaffeFormatError)
    if p.min > p.max:
        ctx.error(node, f"Clip min {p.min} > max {p.max}", cls=CaffeFormatError)
    if p.min == 0.0:
        layer = keras.layers.ReLU(max_value=float(p.max), name=ctx.name(node))
    else:
        layer = kx.ClipRange(min_value=p.min, max_value=p.max, name=ctx.name(node))
    return _elementwise(ctx, node, inputs, layer)


@register("Swish")
def lower_swish(ctx: "LoweringContext", node: "Node", inputs: List[Blob]) -> List[Blob]:
    """Swish: x * sigmoid(beta * x); beta 1 is the stock 'swish' activation."""
    beta = node.param.swish_param.beta
    if beta == 1.0:
        layer = keras.layers.Activation("swish", name=ctx.name(node))
    else:
        layer = kx.SwishBeta(beta=beta, name=ctx.name(node))
    return _elementwise(ctx, node, inputs, layer)


@register("ReLU6")
def lower_relu6(ctx: "LoweringContext", node: "Node", inputs: List[Blob]) -> List[Blob]:
    """ReLU6 (fork layer): min(max(x, 0), 6)."""
    return _elementwise(ctx, node, inputs, keras.layers.ReLU(max_value=6.0, name=ctx.name(node)))
