"""Normalizations: BatchNorm with batch statistics, LRN, MVN, L2 normalization.

Each layer declares its ``quantization_role`` for ``kerasq.schemes`` (see
:mod:`kerasq.converters.caffe.keras_layers`).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from kerasq._compat import tf
from kerasq.converters.caffe.keras_layers._base import Configured, register


@register
class BatchStatNormalize(Configured):
    """Caffe BatchNorm with ``use_global_stats: false``: normalise with this batch's statistics.

    ``y = (x - mean) / sqrt(var + eps)``, mean and (biased) variance over every axis
    except ``axis`` (the channel axis), batch included.
    """

    quantization_role = "output"

    _fields = ("axis", "epsilon")

    def __init__(self, axis: int = -1, epsilon: float = 1e-5, **kwargs: Any) -> None:
        super().__init__(axis=int(axis), epsilon=float(epsilon), **kwargs)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        rank = inputs.shape.rank
        axis = self.axis % rank
        reduce_axes = [a for a in range(rank) if a != axis]
        mean = tf.reduce_mean(inputs, axis=reduce_axes, keepdims=True)
        centered = inputs - mean
        var = tf.reduce_mean(tf.square(centered), axis=reduce_axes, keepdims=True)
        return centered / tf.sqrt(var + self.epsilon)



@register
class LRNAcrossChannels(Configured):
    """Caffe LRN ACROSS_CHANNELS on NHWC: y = x / (k + alpha/n * sum_{n channels} x^2)^beta."""

    quantization_role = "output"

    _fields = ("local_size", "alpha", "beta", "k")

    def __init__(
        self,
        local_size: int = 5,
        alpha: float = 1.0,
        beta: float = 0.75,
        k: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            local_size=int(local_size), alpha=float(alpha), beta=float(beta), k=float(k), **kwargs
        )

    def call(self, x):
        return tf.nn.local_response_normalization(
            x,
            depth_radius=(self.local_size - 1) // 2,
            bias=self.k,
            alpha=self.alpha / self.local_size,
            beta=self.beta,
        )


@register
class LRNWithinChannel(Configured):
    """Caffe LRN WITHIN_CHANNEL on NHWC: y = x * (1 + alpha * avg_{n x n, zero pad} x^2)^-beta.

    With stride 1 and pad (n-1)/2 every Caffe AVE window lies inside [-pad, H+pad), so the
    divisor is n*n everywhere: zero padding + VALID average pooling is exact.
    """

    quantization_role = "output"

    _fields = ("local_size", "alpha", "beta")

    def __init__(
        self, local_size: int = 5, alpha: float = 1.0, beta: float = 0.75, **kwargs: Any
    ) -> None:
        super().__init__(local_size=int(local_size), alpha=float(alpha), beta=float(beta), **kwargs)

    def call(self, x):
        n = self.local_size
        pad = (n - 1) // 2
        sq = tf.pad(tf.square(x), [[0, 0], [pad, pad], [pad, pad], [0, 0]])
        avg = tf.nn.avg_pool2d(sq, ksize=n, strides=1, padding="VALID")
        return x * tf.pow(1.0 + self.alpha * avg, -self.beta)


@register
class MeanVarianceNorm(Configured):
    """Caffe MVN over Keras ``axes``: (x - mean) / (sqrt(var) + eps) (eps outside the sqrt)."""

    quantization_role = "output"

    _fields = ("axes", "normalize_variance", "eps")

    def __init__(
        self,
        axes: Sequence[int] = (),
        normalize_variance: bool = True,
        eps: float = 1e-9,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            axes=[int(a) for a in axes],
            normalize_variance=bool(normalize_variance),
            eps=float(eps),
            **kwargs,
        )

    def call(self, x):
        centered = x - tf.reduce_mean(x, axis=self.axes, keepdims=True)
        if not self.normalize_variance:
            return centered
        std = tf.sqrt(tf.reduce_mean(tf.square(centered), axis=self.axes, keepdims=True))
        return centered / (std + self.eps)


@register
class L2Normalize(Configured):
    """SSD Normalize: y = x / sqrt(sum_{axes} x^2 + eps) * scale (scale per channel or shared)."""

    quantization_role = "output"

    _fields = ("axes", "eps", "scale_shape")

    def __init__(
        self,
        axes: Sequence[int] = (),
        eps: float = 1e-10,
        scale_shape: Optional[Sequence[int]] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            axes=[int(a) for a in axes],
            eps=float(eps),
            scale_shape=None if scale_shape is None else [int(d) for d in scale_shape],
            **kwargs,
        )

    def build(self, input_shape):
        if self.scale_shape is not None:
            self.scale = self.add_weight(
                name="scale", shape=tuple(self.scale_shape), initializer="ones"
            )
        super().build(input_shape)

    def call(self, x):
        y = x * tf.math.rsqrt(tf.reduce_sum(tf.square(x), axis=self.axes, keepdims=True) + self.eps)
        return y * self.scale if self.scale_shape is not None else y



__all__ = ["BatchStatNormalize", "LRNAcrossChannels", "LRNWithinChannel", "MeanVarianceNorm", "L2Normalize"]
