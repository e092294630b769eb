"""Small custom Keras layers for Caffe semantics that no stock layer expresses exactly.

All are registered with ``keras.utils.register_keras_serializable(package="kerasq")``,
declare a ``quantization_role`` ("output": a new real-valued result to quantize like an
activation; "passthrough": a rearrangement of input values, already on the grid),
have a complete ``get_config`` and keep constants as non-trainable weights (so
``.h5``/SavedModel files carry them). Load converted models with
``custom_objects=kerasq.converters.caffe.custom_objects()`` (or inside
``keras.utils.custom_object_scope``).

Example:
    >>> from kerasq._compat import keras
    >>> x = keras.Input((4, 4, 3))
    >>> y = EdgePadding2D(((1, 1), (0, 2)))(x)
    >>> tuple(y.shape)
    (None, 6, 6, 3)
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

from kerasq._compat import keras, tf

_serializable = keras.utils.register_keras_serializable(package="kerasq")


def _pairs(padding: Sequence[Sequence[int]]) -> Tuple[Tuple[int, int], Tuple[int, int]]:
    (top, bottom), (left, right) = padding
    return (int(top), int(bottom)), (int(left), int(right))


@_serializable
class EdgePadding2D(keras.layers.Layer):
    """Pad an NHWC tensor by replicating its border rows/columns.

    Used before MAX pooling: Caffe's max ignores padding, and a replicated border value
    is always inside the window it pads (Caffe requires pad < kernel and windows start
    inside the image), so ``max`` is unchanged while values stay in the data range
    (quantization friendly, unlike ``-inf`` padding).

    ``y[i, j] = x[clip(i - top, 0, H-1), clip(j - left, 0, W-1)]``
    """

    quantization_role = "passthrough"  # how kerasq.schemes treats its output

    def __init__(self, padding: Sequence[Sequence[int]] = ((0, 0), (0, 0)), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.padding = _pairs(padding)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        (top, bottom), (left, right) = self.padding
        x = inputs
        parts = [x[:, :1]] * top + [x] + [x[:, -1:]] * bottom
        x = tf.concat(parts, axis=1) if len(parts) > 1 else x
        parts = [x[:, :, :1]] * left + [x] + [x[:, :, -1:]] * right
        return tf.concat(parts, axis=2) if len(parts) > 1 else x

    def compute_output_shape(self, input_shape: Any) -> tf.TensorShape:
        shape = tf.TensorShape(input_shape).as_list()
        (top, bottom), (left, right) = self.padding
        if shape[1] is not None:
            shape[1] += top + bottom
        if shape[2] is not None:
            shape[2] += left + right
        return tf.TensorShape(shape)

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "padding": [list(p) for p in self.padding]}


@_serializable
class ConstantMultiply(keras.layers.Layer):
    """Multiply by a constant tensor broadcast against the input (batch axis excluded).

    ``y = x * c`` with ``c`` of shape ``constant_shape`` (stored as a non-trainable
    weight). Used for Caffe's AVE-pool border divisor: ``c = k_h k_w / area``.
    """

    quantization_role = "output"  # how kerasq.schemes treats its output

    def __init__(self, constant_shape: Sequence[int] = (1,), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.constant_shape = tuple(int(d) for d in constant_shape)

    def build(self, input_shape: Any) -> None:
        self.constant = self.add_weight(
            name="constant", shape=self.constant_shape, initializer="ones", trainable=False
        )
        super().build(input_shape)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return inputs * self.constant

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "constant_shape": list(self.constant_shape)}


@_serializable
class WeightedSum(keras.layers.Layer):
    """Caffe Eltwise SUM with coefficients: ``y = sum_i coeff_i * x_i``."""

    quantization_role = "output"  # how kerasq.schemes treats its output

    def __init__(self, coefficients: Sequence[float] = (), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.coefficients = [float(c) for c in coefficients]

    def call(self, inputs: List[tf.Tensor]) -> tf.Tensor:
        total = inputs[0] * self.coefficients[0]
        for x, c in zip(inputs[1:], self.coefficients[1:]):
            total = total + x * c
        return total

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape[0]

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "coefficients": list(self.coefficients)}


@_serializable
class BroadcastAffine(keras.layers.Layer):
    """Caffe Scale/Bias with learned blobs: ``y = x * gamma (+ beta)``.

    ``param_shape`` is the Keras-layout broadcast shape of ``gamma``/``beta`` (batch axis
    excluded, 1 on broadcast axes). With ``use_scale=False`` only ``beta`` is added.
    With ``scale_from_input=True`` the layer takes ``[x, gamma]`` (Caffe's two-bottom
    Scale) and ``gamma`` is reshaped to ``param_shape`` per sample.
    """

    quantization_role = "output"  # how kerasq.schemes treats its output

    def __init__(
        self,
        param_shape: Sequence[int] = (1,),
        use_scale: bool = True,
        use_bias: bool = False,
        scale_from_input: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.param_shape = tuple(int(d) for d in param_shape)
        self.use_scale = bool(use_scale)
        self.use_bias = bool(use_bias)
        self.scale_from_input = bool(scale_from_input)

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

    def get_config(self) -> Dict[str, Any]:
        return {
            **super().get_config(),
            "param_shape": list(self.param_shape),
            "use_scale": self.use_scale,
            "use_bias": self.use_bias,
            "scale_from_input": self.scale_from_input,
        }


@_serializable
class BatchStatNormalize(keras.layers.Layer):
    """Caffe BatchNorm with ``use_global_stats: false``: normalise with this batch's statistics.

    ``y = (x - mean) / sqrt(var + eps)``, mean and (biased) variance over every axis
    except ``axis`` (the channel axis), batch included.
    """

    quantization_role = "output"  # how kerasq.schemes treats its output

    def __init__(self, axis: int = -1, epsilon: float = 1e-5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.axis = int(axis)
        self.epsilon = float(epsilon)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        rank = inputs.shape.rank
        axis = self.axis % rank
        reduce_axes = [a for a in range(rank) if a != axis]
        mean = tf.reduce_mean(inputs, axis=reduce_axes, keepdims=True)
        centered = inputs - mean
        var = tf.reduce_mean(tf.square(centered), axis=reduce_axes, keepdims=True)
        return centered / tf.sqrt(var + self.epsilon)

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "axis": self.axis, "epsilon": self.epsilon}


@_serializable
class CaffePreprocess(keras.layers.Layer):
    """Input preprocessing recorded in a converted model: ``y = (swap(x) - mean) * scale``.

    ``x`` is NHWC. ``swap`` reverses the channel order when ``swap_channels`` is true
    (RGB <-> BGR); ``mean`` has shape ``mean_shape`` (``(C,)`` per-channel values or
    ``(H, W, C)`` a mean image, stored as a non-trainable weight); ``scale`` is a float.
    """

    quantization_role = "output"  # how kerasq.schemes treats its output

    def __init__(
        self,
        mean_shape: Optional[Sequence[int]] = None,
        scale: float = 1.0,
        swap_channels: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.mean_shape = tuple(int(d) for d in mean_shape) if mean_shape else None
        self.scale = float(scale)
        self.swap_channels = bool(swap_channels)

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

    def get_config(self) -> Dict[str, Any]:
        return {
            **super().get_config(),
            "mean_shape": list(self.mean_shape) if self.mean_shape else None,
            "scale": self.scale,
            "swap_channels": self.swap_channels,
        }


@_serializable
class BatchReshape(keras.layers.Layer):
    """Reshape including the batch axis (a Caffe Reshape that mixes N with other axes).

    ``y = reshape(x, target_shape)`` with a fixed batch: the model only runs at the
    batch size the Caffe net declared.
    """

    quantization_role = "passthrough"  # how kerasq.schemes treats its output

    def __init__(self, target_shape: Sequence[int] = (1,), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.target_shape = tuple(int(d) for d in target_shape)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return tf.reshape(inputs, self.target_shape)

    def compute_output_shape(self, input_shape: Any) -> tf.TensorShape:
        return tf.TensorShape(self.target_shape)

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "target_shape": list(self.target_shape)}


CUSTOM_LAYERS = {
    "kerasq>BatchReshape": BatchReshape,
    "kerasq>EdgePadding2D": EdgePadding2D,
    "kerasq>ConstantMultiply": ConstantMultiply,
    "kerasq>WeightedSum": WeightedSum,
    "kerasq>BroadcastAffine": BroadcastAffine,
    "kerasq>BatchStatNormalize": BatchStatNormalize,
    "kerasq>CaffePreprocess": CaffePreprocess,
}


__all__ = [
    "EdgePadding2D",
    "ConstantMultiply",
    "WeightedSum",
    "BroadcastAffine",
    "BatchStatNormalize",
    "CaffePreprocess",
    "BatchReshape",
    "CUSTOM_LAYERS",
]
