"""Helpers for the sparsity tests: tiny models, a tfmot QuantizeConfig using the mask quantizer,
an offset weight quantizer that (like caffe-jacinto's apply_offset) turns 0 into non-zero, and
readers for the int8 weight tensors of a TFLite flatbuffer."""

from __future__ import annotations

from typing import Any, Dict, List

import numpy as np
import pytest

from kerasq._compat import keras, tf, tfmot
from kerasq.schemes.sparsity import SparsityPreservingQuantizer
from kerasq.prune.wrapper import prunable_weight_names

tq = tfmot().quantization.keras


class OffsetQuantizer(tq.quantizers.Quantizer):
    """caffe-jacinto apply_offset weights: s = (2^B - 1)/(max - min), o = -min*s (not rounded),
    q = clip(round(w*s + o), 0, 2^B - 1), w' = (q - o)/s. Zero maps to (round(o) - o)/s != 0.
    Straight-through gradient."""

    preserves_zero = False

    def __init__(self, bits: int = 8) -> None:
        self.bits = bits

    def build(self, tensor_shape: Any, name: str, layer: Any) -> Dict[str, Any]:
        return {}

    def __call__(self, inputs: Any, training: Any, weights: Dict[str, Any], **kwargs: Any):
        w = tf.convert_to_tensor(inputs)
        lo, hi = tf.reduce_min(w), tf.reduce_max(w)
        scale = (2.0**self.bits - 1.0) / tf.maximum(hi - lo, 1e-12)
        offset = -lo * scale
        q = tf.clip_by_value(tf.round(w * scale + offset), 0.0, 2.0**self.bits - 1.0)
        fq = (q - offset) / scale
        return w + tf.stop_gradient(fq - w)

    def get_config(self) -> Dict[str, Any]:
        return {"bits": self.bits}


def offset_quantize_numpy(w: np.ndarray, bits: int = 8) -> np.ndarray:
    """numpy reference of OffsetQuantizer (caffe-jacinto §4.4 with apply_offset)."""
    w = w.astype(np.float64)
    lo, hi = w.min(), w.max()
    scale = (2.0**bits - 1.0) / max(hi - lo, 1e-12)
    offset = -lo * scale
    q = np.clip(np.round(w * scale + offset), 0, 2.0**bits - 1)
    return (q - offset) / scale


class MaskedConfig(tq.QuantizeConfig):
    """Quantize every prunable kernel with SparsityPreservingQuantizer(inner); output 8-bit."""

    def __init__(self, offset: bool = False) -> None:
        self.offset = offset

    def _inner(self) -> Any:
        if self.offset:
            return OffsetQuantizer()
        return tq.quantizers.LastValueQuantizer(
            num_bits=8, per_axis=False, symmetric=True, narrow_range=True
        )

    @staticmethod
    def _names(layer: Any) -> List[str]:
        # Fixed per class: once tfmot replaces layer.kernel by a tensor, Keras stops listing
        # the variable in layer.trainable_weights, so the names cannot be re-derived from it.
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            return ["depthwise_kernel"]
        return ["kernel"]

    def get_weights_and_quantizers(self, layer: Any) -> List[Any]:
        return [
            (getattr(layer, name), SparsityPreservingQuantizer(self._inner()))
            for name in self._names(layer)
        ]

    def get_activations_and_quantizers(self, layer: Any) -> List[Any]:
        return []

    def set_quantize_weights(self, layer: Any, quantize_weights: List[Any]) -> None:
        for name, value in zip(self._names(layer), quantize_weights):
            setattr(layer, name, value)

    def set_quantize_activations(self, layer: Any, quantize_activations: List[Any]) -> None:
        pass

    def get_output_quantizers(self, layer: Any) -> List[Any]:
        return [
            tq.quantizers.MovingAverageQuantizer(
                num_bits=8, per_axis=False, symmetric=False, narrow_range=False
            )
        ]

    def get_config(self) -> Dict[str, Any]:
        return {"offset": self.offset}


SCOPE = {
    "MaskedConfig": MaskedConfig,
    "OffsetQuantizer": OffsetQuantizer,
    "SparsityPreservingQuantizer": SparsityPreservingQuantizer,
}


def small_model(seed: int = 0) -> Any:
    """Conv2D -> DepthwiseConv2D -> Conv2DTranspose -> Dense on 8x8x1 inputs (digits-sized)."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(inp)
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(x)
    x = keras.layers.Conv2DTranspose(4, 3, name="deconv")(x)
    x = keras.layers.Flatten()(x)
    out = keras.layers.Dense(10, name="fc")(x)
    return keras.Model(inp, out)


def quantize_with_masks(model: Any, offset: bool = False) -> Any:
    with tq.quantize_scope(SCOPE):
        annotated = tq.quantize_annotate_model(
            keras.models.clone_model(
                model,
                clone_function=lambda layer: (
                    tq.quantize_annotate_layer(layer, MaskedConfig(offset))
                    if prunable_weight_names(layer)
                    else layer
                ),
            )
        )
        for src, dst in zip(model.layers, annotated.layers):
            dst.set_weights(src.get_weights())
        return tq.quantize_apply(annotated)


def load_h5(path: str) -> Any:
    with tq.quantize_scope(SCOPE):
        return keras.models.load_model(path)


def tflite_bytes(model: Any) -> bytes:
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return converter.convert()


KERNEL_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "FULLY_CONNECTED")


def tflite_kernels(flatbuffer: bytes) -> List[Dict[str, Any]]:
    """The weight tensor (op input 1) of every conv/depthwise/transposed-conv/FC op of a
    TFLite model, as stored in the file: op name, dtype and array."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer)
    interpreter.allocate_tensors()
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    out = []
    for op in interpreter._get_ops_details():
        if op["op_name"] in KERNEL_OPS:
            index = int(op["inputs"][1])
            value = interpreter.get_tensor(index)
            out.append(
                {
                    "op": op["op_name"],
                    "name": details[index]["name"],
                    "dtype": value.dtype,
                    "value": value.copy(),
                }
            )
    return out


def digits_images(n: int = 256):
    """Real handwritten digits (scikit-learn), 8x8x1 in [0, 1], one-hot labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images[:n] / 16.0).astype(np.float32)[..., None]
    y = keras.utils.to_categorical(data.target[:n], 10).astype(np.float32)
    return x, y


@pytest.fixture
def helpers():
    import types

    return types.SimpleNamespace(
        OffsetQuantizer=OffsetQuantizer,
        offset_quantize_numpy=offset_quantize_numpy,
        MaskedConfig=MaskedConfig,
        small_model=small_model,
        quantize_with_masks=quantize_with_masks,
        load_h5=load_h5,
        tflite_bytes=tflite_bytes,
        tflite_kernels=tflite_kernels,
        digits_images=digits_images,
    )
