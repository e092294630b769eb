"""Scales, sums and offsets with constants or learned blobs (Scale, Bias, Eltwise SUM, Embed, input
preprocessing).

Each layer declares its ``quantization_role`` for ``kerasq.schemes`` (see
:mod:`kerasq.converters.caffe.keras_layers`).
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence

from kerasq._compat import tf
from kerasq.converters.caffe.keras_layers._base import Configured, register


@register
class ConstantMultiply(Configured):
    """Multiply by a constant tensor broadcast against the input (batch axis excluded).

    ``y = x * c`` with ``c`` of shape ``constant_shape`` (stored as a non-trainable
    weight). Used for Caffe's AVE-pool border divisor: ``c = k_h k_w / area``.
    """

    quantization_role = "output"

    _fields = ("constant_shape",)

    def __init__(self, constant_shape: Sequence[int] = (1,), **kwargs: Any) -> None:
        super().__init__(constant_shape=tuple(int(d) for d in constant_shape), **kwargs)

    def build(self, input_shape: Any) -> None:
        self.constant = self.add_weight(
            name="constant", shape=self.constant_shape, initializer="ones", trainable=False
        )
        super().build(input_shape)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return inputs * self.constant



@register
class WeightedSum(Configured):
    """Caffe Eltwise SUM with coefficients: ``y = sum_i coeff_i * x_i``."""

    quantization_role = "output"

    _fields = ("coefficients",)

    def __init__(self, coefficients: Sequence[float] = (), **kwargs: Any) -> None:
        super().__init__(coefficients=[float(c) for c in coefficients], **kwargs)

    def call(self, inputs: List[tf.Tensor]) -> tf.Tensor:
        total = inputs[0] * self.coefficients[0]
        for x, c in zip(inputs[1:], self.coefficients[1:]):
            total = total + x * c
        return total

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape[0]



@register
class BroadcastAffine(Configured):
    """Caffe Scale/Bias with learned blobs: ``y = x * gamma (+ beta)``.

    ``param_shape`` is the Keras-layout broadcast shape of ``gamma``/``beta`` (batch axis
    excluded, 1 on broadcast axes). With ``use_scale=False`` only ``beta`` is added.
    With ``scale_from_input=True`` the layer takes ``[x, gamma]`` (Caffe's two-bottom
    Scale) and ``gamma`` is reshaped to ``param_shape`` per sample.
    """

    quantization_role = "output"
    _fields = ("param_shape", "use_scale", "use_bias", "scale_from_input")

    def __init__(
        self,
        param_shape: Sequence[int] = (1,),
        use_scale: bool = True,
        use_bias: bool = False,
        scale_from_input: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            param_shape=tuple(int(d) for d in param_shape),
            use_scale=bool(use_scale),
            use_bias=bool(use_bias),
            scale_from_input=bool(scale_from_input),
            **kwargs,
        )

    def build(self, input_shape: Any) -> None:
        if self.use_scale and not self.scale_from_input:
            self.gamma = self.add_weight(
                name="gamma", shape=self.param_shape, initializer="ones", trainable=True
            )
        if self.use_bias:
            self.beta = self.add_weight(
                name="beta", shape=self.param_shape, initializer="zeros", trainable=True
            )
        super().build(input_shape)

    def call(self, inputs: Any) -> tf.Tensor:
        if self.scale_from_input:
            x, gamma = inputs
            y = x * tf.reshape(gamma, (-1,) + self.param_shape)
        else:
            x = inputs
            y = x * self.gamma if self.use_scale else x
        if self.use_bias:
            y = y + self.beta
        return y

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape[0] if self.scale_from_input else input_shape



@register
class ConstantBias(Configured):
    """y = x + b with b of shape ``bias_shape`` (Keras layout incl. a leading batch axis of 1)."""

    quantization_role = "output"

    _fields = ("bias_shape",)

    def __init__(self, bias_shape: Sequence[int] = (1,), **kwargs: Any) -> None:
        super().__init__(bias_shape=[int(d) for d in bias_shape], **kwargs)

    def build(self, input_shape):
        self.bias = self.add_weight(name="bias", shape=tuple(self.bias_shape), initializer="zeros")
        super().build(input_shape)

    def call(self, x):
        return x + self.bias


@register
class BroadcastAddCaffe(Configured):
    """Two-input Caffe Bias: y = x + b, b (Caffe order) aligned to Caffe axis ``axis`` of x.

    ``x_perm`` is x's layout (Keras axis i holds Caffe axis x_perm[i]); b is reshaped to
    full Caffe rank with ones, transposed into x's layout and broadcast-added.
    """

    quantization_role = "output"

    _fields = ("axis", "x_perm")

    def __init__(self, axis: int = 1, x_perm: Sequence[int] = (0,), **kwargs: Any) -> None:
        super().__init__(axis=int(axis), x_perm=[int(p) for p in x_perm], **kwargs)

    def call(self, inputs):
        x, b = inputs
        rank = len(self.x_perm)
        b_rank = b.shape.rank
        ones_before = tf.ones([self.axis], tf.int32)
        ones_after = tf.ones([rank - self.axis - b_rank], tf.int32)
        full = tf.reshape(b, tf.concat([ones_before, tf.shape(b), ones_after], 0))
        return x + tf.transpose(full, self.x_perm)


@register
class CaffePreprocess(Configured):
    """Input preprocessing recorded in a converted model: ``y = (swap(x) - mean) * scale``.

    ``x`` is NHWC. ``swap`` reverses the channel order when ``swap_channels`` is true
    (RGB <-> BGR); ``mean`` has shape ``mean_shape`` (``(C,)`` per-channel values or
    ``(H, W, C)`` a mean image, stored as a non-trainable weight); ``scale`` is a float.
    """

    quantization_role = "output"
    _fields = ("mean_shape", "scale", "swap_channels")

    def __init__(
        self,
        mean_shape: Optional[Sequence[int]] = None,
        scale: float = 1.0,
        swap_channels: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            mean_shape=tuple(int(d) for d in mean_shape) if mean_shape else None,
            scale=float(scale),
            swap_channels=bool(swap_channels),
            **kwargs,
        )

    def build(self, input_shape: Any) -> None:
        if self.mean_shape:
            self.mean = self.add_weight(
                name="mean", shape=self.mean_shape, initializer="zeros", trainable=False
            )
        super().build(input_shape)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        x = tf.reverse(inputs, axis=[-1]) if self.swap_channels else inputs
        if self.mean_shape:
            x = x - self.mean
        if self.scale != 1.0:
            x = x * self.scale
        return x



@register
class CaffeEmbed(Configured):
    """Caffe Embed: y[..., :] = W[int(x)] (+ b); W (input_dim, num_output)."""

    quantization_role = "output"

    _fields = ("input_dim", "num_output", "bias_term")

    def __init__(
        self, input_dim: int = 1, num_output: int = 1, bias_term: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(
            input_dim=int(input_dim),
            num_output=int(num_output),
            bias_term=bool(bias_term),
            **kwargs,
        )

    def build(self, input_shape):
        self.embeddings = self.add_weight(
            name="embeddings", shape=(self.input_dim, self.num_output), initializer="zeros"
        )
        if self.bias_term:
            self.bias = self.add_weight(name="bias", shape=(self.num_output,), initializer="zeros")
        super().build(input_shape)

    def call(self, x):
        y = tf.gather(self.embeddings, tf.cast(x, tf.int32))
        return y + self.bias if self.bias_term else y



__all__ = ["ConstantMultiply", "WeightedSum", "BroadcastAffine", "ConstantBias", "BroadcastAddCaffe", "CaffePreprocess", "CaffeEmbed"]
