"""Element-wise functions of one value (Caffe neuron layers without a stock Keras layer).

Each layer declares its ``quantization_role`` for ``kerasq.schemes`` (see
:mod:`kerasq.converters.caffe.keras_layers`).
"""

from __future__ import annotations

import math
from typing import Any

from kerasq._compat import tf
from kerasq.converters.caffe.keras_layers._base import Configured, register


@register
class AbsVal(Configured):
    """Caffe AbsVal: y = |x|."""

    quantization_role = "passthrough"

    def call(self, x):
        return tf.abs(x)


@register
class BNLL(Configured):
    """Caffe BNLL: y = log(1 + e^x), computed as max(x, 0) + log(1 + e^-|x|) (no overflow;
    plain LOG/EXP so it stays a TFLite builtin graph)."""

    quantization_role = "output"

    def call(self, x):
        return tf.nn.relu(x) + tf.math.log(1.0 + tf.exp(-tf.abs(x)))


@register
class PowerAffine(Configured):
    """Caffe Power: y = (shift + scale * x) ^ power."""

    quantization_role = "output"

    _fields = ("power", "scale", "shift")

    def __init__(
        self, power: float = 1.0, scale: float = 1.0, shift: float = 0.0, **kwargs: Any
    ) -> None:
        super().__init__(power=float(power), scale=float(scale), shift=float(shift), **kwargs)

    def call(self, x):
        base = x * self.scale + self.shift if self.scale != 1.0 else x + self.shift
        if self.power == 1.0:
            return base
        if self.power == 2.0:
            return tf.square(base)
        if self.power == 0.5:
            return tf.sqrt(base)
        return tf.pow(base, self.power)


@register
class ExpAffine(Configured):
    """Caffe Exp: y = base ^ (shift + scale * x); base -1 means e."""

    quantization_role = "output"

    _fields = ("base", "scale", "shift")

    def __init__(
        self, base: float = -1.0, scale: float = 1.0, shift: float = 0.0, **kwargs: Any
    ) -> None:
        super().__init__(base=float(base), scale=float(scale), shift=float(shift), **kwargs)

    def call(self, x):
        log_base = 1.0 if self.base == -1.0 else math.log(self.base)
        return tf.exp((x * self.scale + self.shift) * log_base)


@register
class LogAffine(Configured):
    """Caffe Log: y = log_base(shift + scale * x); base -1 means e."""

    quantization_role = "output"

    _fields = ("base", "scale", "shift")

    def __init__(
        self, base: float = -1.0, scale: float = 1.0, shift: float = 0.0, **kwargs: Any
    ) -> None:
        super().__init__(base=float(base), scale=float(scale), shift=float(shift), **kwargs)

    def call(self, x):
        y = tf.math.log(x * self.scale + self.shift)
        return y if self.base == -1.0 else y * (1.0 / math.log(self.base))


@register
class ThresholdStep(Configured):
    """Caffe Threshold: y = 1 if x > threshold else 0."""

    quantization_role = "float"

    _fields = ("threshold",)

    def __init__(self, threshold: float = 0.0, **kwargs: Any) -> None:
        super().__init__(threshold=float(threshold), **kwargs)

    def call(self, x):
        return tf.cast(x > self.threshold, x.dtype)


@register
class ClipRange(Configured):
    """Caffe Clip: y = min(max(x, min_value), max_value)."""

    quantization_role = "output"

    _fields = ("min_value", "max_value")

    def __init__(self, min_value: float = 0.0, max_value: float = 0.0, **kwargs: Any) -> None:
        super().__init__(min_value=float(min_value), max_value=float(max_value), **kwargs)

    def call(self, x):
        return tf.minimum(tf.maximum(x, self.min_value), self.max_value)


@register
class SwishBeta(Configured):
    """Caffe Swish: y = x * sigmoid(beta * x)."""

    quantization_role = "output"

    _fields = ("beta",)

    def __init__(self, beta: float = 1.0, **kwargs: Any) -> None:
        super().__init__(beta=float(beta), **kwargs)

    def call(self, x):
        return x * tf.sigmoid(self.beta * x)



__all__ = ["AbsVal", "BNLL", "PowerAffine", "ExpAffine", "LogAffine", "ThresholdStep", "ClipRange", "SwishBeta"]
