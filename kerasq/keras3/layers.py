"""Keras 3 layers of a quantized model: :class:`QuantizedLayer` and :class:`InputQuantizer`.

A ``QuantizedLayer`` is the Keras 3 counterpart of tfmot's ``QuantizeWrapper``: it owns a
float layer (its ``activation`` moved out to the wrapper), one quantizer per quantized
weight, and the quantizers around the activation (``pre`` / ``post``) and on the output.
Forward pass (the order of the tf_keras path):

    w' = q_w(w);  y = layer(x; w');  y = q_post(act(q_pre(y)));  y = q_out(y)

Conv2D / Conv1D / Conv3D, DepthwiseConv2D, Conv2DTranspose and Dense run their op on the
quantized weights (``keras.ops``); any other layer (Add, Concatenate, pooling, Reshape,
ReLU, Softmax...) runs as is and only its output is quantized. All state is Keras
variables of the wrapper (saved in .keras files); both classes are registered
serializable under the package ``kerasq``.

Example:
    >>> qmodel = kerasq.quantize_model(keras3_model)  # builds these  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from kerasq._compat import keras3
from kerasq.keras3.quantizers import SparsityPreservingQuantizer, _Quantizer
from kerasq.errors import UnsupportedLayerError

keras = keras3()
ops = keras.ops
_register = keras.saving.register_keras_serializable(package="kerasq")

#: tf_keras weight attribute -> Keras 3 variable name
WEIGHT_NAMES = {"depthwise_kernel": "kernel"}


def _serialize(q: Optional[_Quantizer]) -> Any:
    return None if q is None else keras.saving.serialize_keras_object(q)


def _deserialize(config: Any) -> Any:
    return None if config is None else keras.saving.deserialize_keras_object(config)


def layer_variable(layer: Any, attr: str) -> Any:
    """The Keras 3 variable of ``layer`` for a tf_keras weight attribute (``kernel``,
    ``depthwise_kernel``, ``bias``, ``gamma``...)."""
    name = WEIGHT_NAMES.get(attr, attr)
    for var in layer.weights:
        if var.name == name or var.path.split("/")[-1] == name:
            return var
    raise KeyError(f"{layer.name}: no weight {name!r}")


def _flatten(variables: Dict[str, Any]) -> List[Any]:
    out: List[Any] = []
    for key in sorted(variables):
        value = variables[key]
        out.extend(_flatten(value) if isinstance(value, dict) else [value])
    return out


@_register
class QuantizedLayer(keras.layers.Layer):
    """A float Keras 3 layer with kerasq quantizers on its weights, activation and output.

    Args:
        layer: the float layer (its activation must be linear; see ``activation``).
        weight_quantizers: list of (tf_keras weight attribute, quantizer), in slot order.
        activation: the activation applied after the layer op (name), or None.
        pre_quantizer / post_quantizer: quantizers before / after the activation.
        output_quantizer: quantizer of the output.
        quantization_config: the ``QuantizationConfig`` dict the model was made with.
        preserve_sparsity: whether the kernels carry saved pruning masks.
    """

    def __init__(self, layer: Any, weight_quantizers: Any = (), activation: Optional[str] = None,
                 pre_quantizer: Any = None, post_quantizer: Any = None,
                 output_quantizer: Any = None, quantization_config: Optional[dict] = None,
                 preserve_sparsity: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(layer, dict):
            layer = keras.saving.deserialize_keras_object(layer)
        self.layer = layer
        self.weight_quantizers = [
            (attr, _deserialize(q) if isinstance(q, dict) else q) for attr, q in weight_quantizers]
        self.activation_name = activation
        self.activation_fn = keras.activations.get(activation) if activation else None
        self.pre_quantizer = _deserialize(pre_quantizer) if isinstance(pre_quantizer, dict) \
            else pre_quantizer
        self.post_quantizer = _deserialize(post_quantizer) if isinstance(post_quantizer, dict) \
            else post_quantizer
        self.output_quantizer = _deserialize(output_quantizer) \
            if isinstance(output_quantizer, dict) else output_quantizer
        self.quantization_config = quantization_config
        self.preserve_sparsity = bool(preserve_sparsity)
        self.seed_generator = keras.random.SeedGenerator(0)
        # compile(jit_compile="auto") then skips XLA on TensorFlow: the XLA-compiled QAT step
        # measured ~2x slower than the plain tf.function on CPU (benchmarks/keras3.py)
        self.supports_jit = keras.backend.backend() != "tensorflow"
        self.weight_quantizer_vars: List[Dict[str, Any]] = []
        self._act_vars: Dict[str, Dict[str, Any]] = {}

    def build(self, input_shape: Any) -> None:
        if not self.layer.built:
            self.layer.build(input_shape)
        self.weight_quantizer_vars = []
        for attr, q in self.weight_quantizers:
            var = layer_variable(self.layer, attr)
            self.weight_quantizer_vars.append(q.build(self, attr, tuple(var.shape)))
        for role, q in (("pre", self.pre_quantizer), ("post", self.post_quantizer),
                        ("output", self.output_quantizer)):
            if q is not None:
                self._act_vars[role] = q.build(self, role, ())
        self.built = True

    def slot_variables(self) -> List[Tuple[str, str, Any, List[Any]]]:
        """(role, attr, quantizer, flat variables) per slot, in the tf_keras slot order."""
        found = []
        for (attr, q), qvars in zip(self.weight_quantizers, self.weight_quantizer_vars):
            found.append(("weight", attr, q, _flatten(qvars)))
        for role, q in (("pre", self.pre_quantizer), ("post", self.post_quantizer),
                        ("output", self.output_quantizer)):
            if q is not None:
                found.append((role, role, q, _flatten(self._act_vars[role])))
        return found

    def pruning_masks(self) -> List[Tuple[Any, Dict[str, Any]]]:
        """(kernel variable, {"mask", "mask_ready", ...} variables) of every weight with a
        saved pruning mask (what :mod:`kerasq.prune.keras3` reads and updates)."""
        return [(layer_variable(self.layer, attr), qvars)
                for (attr, q), qvars in zip(self.weight_quantizers, self.weight_quantizer_vars)
                if isinstance(q, SparsityPreservingQuantizer)]

    def _op(self, x: Any, w: Dict[str, Any]) -> Any:
        layer = self.layer
        name = type(layer).__name__
        kernel = w.get("kernel", w.get("depthwise_kernel"))
        if kernel is None:
            return layer(x)
        if name == "Dense":
            y = ops.matmul(x, kernel)
        elif name == "DepthwiseConv2D":
            y = ops.depthwise_conv(x, kernel, strides=layer.strides, padding=layer.padding,
                                   data_format=layer.data_format,
                                   dilation_rate=layer.dilation_rate)
        elif name in ("Conv2DTranspose", "Conv1DTranspose", "Conv3DTranspose"):
            y = ops.conv_transpose(x, kernel, strides=layer.strides, padding=layer.padding,
                                   output_padding=layer.output_padding,
                                   data_format=layer.data_format,
                                   dilation_rate=layer.dilation_rate)
        elif name in ("Conv1D", "Conv2D", "Conv3D"):
            y = layer.convolution_op(x, kernel)
        else:
            raise UnsupportedLayerError(f"{name} with quantized weights has no Keras 3 form",
                                        layer=self.name)
        bias = w.get("bias")
        if bias is not None:
            if name != "Dense" and getattr(layer, "data_format", "channels_last") \
                    == "channels_first":
                bias = ops.reshape(bias, (1, -1) + (1,) * (len(y.shape) - 2))
            y = ops.add(y, bias)
        return y

    def call(self, inputs: Any, training: Any = None) -> Any:
        training = bool(training)
        weights: Dict[str, Any] = {}
        for (attr, q), qvars in zip(self.weight_quantizers, self.weight_quantizer_vars):
            weights[attr] = q(layer_variable(self.layer, attr).value, training, qvars,
                              self.seed_generator)
        for var in self.layer.weights:  # unquantized weights (e.g. a float bias)
            attr = var.name
            if attr == "kernel" and "depthwise_kernel" in weights:
                continue
            weights.setdefault(attr, var.value)
        y = self._op(inputs, weights)
        if self.pre_quantizer is not None:
            y = self.pre_quantizer(y, training, self._act_vars["pre"], self.seed_generator)
        if self.activation_fn is not None:
            y = self.activation_fn(y)
        if self.post_quantizer is not None:
            y = self.post_quantizer(y, training, self._act_vars["post"], self.seed_generator)
        if self.output_quantizer is not None:
            y = self.output_quantizer(y, training, self._act_vars["output"],
                                      self.seed_generator)
        return y

    def compute_output_shape(self, input_shape: Any) -> Any:
        return self.layer.compute_output_shape(input_shape)

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "layer": keras.saving.serialize_keras_object(self.layer),
                "weight_quantizers": [[a, _serialize(q)] for a, q in self.weight_quantizers],
                "activation": self.activation_name,
                "pre_quantizer": _serialize(self.pre_quantizer),
                "post_quantizer": _serialize(self.post_quantizer),
                "output_quantizer": _serialize(self.output_quantizer),
                "quantization_config": self.quantization_config,
                "preserve_sparsity": self.preserve_sparsity}


@_register
class InputQuantizer(keras.layers.Layer):
    """Quantizes a model input (tfmot's ``QuantizeLayer``)."""

    def __init__(self, quantizer: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.quantizer = _deserialize(quantizer) if isinstance(quantizer, dict) else quantizer
        self.seed_generator = keras.random.SeedGenerator(0)
        self._qvars: Dict[str, Any] = {}

    def build(self, input_shape: Any) -> None:
        if self.quantizer is not None:
            self._qvars = self.quantizer.build(self, "input", ())
        self.built = True

    def slot_variables(self) -> List[Tuple[str, str, Any, List[Any]]]:
        if self.quantizer is None:
            return []
        return [("input", "input", self.quantizer, _flatten(self._qvars))]

    def call(self, inputs: Any, training: Any = None) -> Any:
        if self.quantizer is None:
            return inputs
        return self.quantizer(inputs, bool(training), self._qvars, self.seed_generator)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "quantizer": _serialize(self.quantizer)}


__all__ = ["QuantizedLayer", "InputQuantizer", "layer_variable", "WEIGHT_NAMES"]
