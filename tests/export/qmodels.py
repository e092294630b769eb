"""Small quantized test models, built with tfmot and DFP quantizers written here from the
formula (x_q = clip(floor(x·2^fl + 1/2), qmin, qmax)·2^-fl, TF FakeQuant's rounding), so the
export tests do not depend on how kerasq's own quantizers are implemented."""

from __future__ import annotations

import math

import numpy as np

from kerasq._compat import keras, tf, tfmot

tfmot_q = tfmot().quantization.keras


def frac_bits_for(max_abs, bitwidth, signed=True):
    """fl = bitwidth - il, il = ceil(log2(max_abs)) + signed (Ristretto's rule)."""
    max_abs = np.maximum(np.asarray(max_abs, np.float64), 2.0**-30)
    il = np.ceil(np.log2(max_abs)) + (1 if signed else 0)
    return (bitwidth - il).astype(np.int32)


def dfp(x, fl, bitwidth, signed=True):
    qmin, qmax = (
        (-(2 ** (bitwidth - 1)), 2 ** (bitwidth - 1) - 1) if signed else (0, 2**bitwidth - 1)
    )
    s = tf.constant(np.ldexp(1.0, -np.asarray(fl)), tf.float32)
    return tf.clip_by_value(tf.floor(x / s + 0.5), qmin, qmax) * s


class TestDFPQuantizer(tfmot_q.quantizers.Quantizer):
    """Per-tensor activation DFP (fixed fl) or per-channel weight DFP (fl from max|w|)."""

    def __init__(self, bitwidth=8, signed=True, frac_bits=None, per_channel=False):
        self.bitwidth, self.signed, self.frac_bits, self.per_channel = (
            bitwidth,
            signed,
            frac_bits,
            per_channel,
        )

    def build(self, tensor_shape, name, layer):
        return {}

    def __call__(self, inputs, training, weights, **kwargs):
        if self.frac_bits is not None:
            return dfp(inputs, self.frac_bits, self.bitwidth, self.signed)
        axes = tuple(range(len(inputs.shape) - 1)) if self.per_channel else None
        max_abs = tf.reduce_max(tf.abs(inputs), axis=axes)
        il = tf.math.ceil(tf.math.log(tf.maximum(max_abs, 2.0**-30)) / math.log(2.0)) + 1.0
        fl = self.bitwidth - il
        s = tf.pow(2.0, -fl)
        q = tf.clip_by_value(
            tf.floor(inputs / s + 0.5), -(2 ** (self.bitwidth - 1)), 2 ** (self.bitwidth - 1) - 1
        )
        return q * s

    def get_config(self):
        return {
            "bitwidth": self.bitwidth,
            "signed": self.signed,
            "frac_bits": self.frac_bits,
            "per_channel": self.per_channel,
        }


class TestLinearConfig(tfmot_q.QuantizeConfig):
    def __init__(self, act_fl, act_bits=8, act_signed=True, w_bits=8, kernel_attr="kernel"):
        self.act_fl, self.act_bits, self.act_signed, self.w_bits = (
            act_fl,
            act_bits,
            act_signed,
            w_bits,
        )
        self.kernel_attr = kernel_attr

    def get_weights_and_quantizers(self, layer):
        return [(getattr(layer, self.kernel_attr), TestDFPQuantizer(self.w_bits, per_channel=True))]

    def get_activations_and_quantizers(self, layer):
        return [(layer.activation, TestDFPQuantizer(self.act_bits, self.act_signed, self.act_fl))]

    def set_quantize_weights(self, layer, quantize_weights):
        setattr(layer, self.kernel_attr, quantize_weights[0])

    def set_quantize_activations(self, layer, quantize_activations):
        layer.activation = quantize_activations[0]

    def get_output_quantizers(self, layer):
        return []

    def get_config(self):
        return {
            "act_fl": self.act_fl,
            "act_bits": self.act_bits,
            "act_signed": self.act_signed,
            "w_bits": self.w_bits,
            "kernel_attr": self.kernel_attr,
        }


class TestOutputConfig(tfmot_q.QuantizeConfig):
    def __init__(self, fl, bits=8, signed=True):
        self.fl, self.bits, self.signed = fl, bits, signed

    def get_weights_and_quantizers(self, layer):
        return []

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        pass

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return [TestDFPQuantizer(self.bits, self.signed, self.fl)]

    def get_config(self):
        return {"fl": self.fl, "bits": self.bits, "signed": self.signed}


def quantize_for_test(model, data, *, act_bits=8, w_bits=8, input_fl=None):
    """Annotate every Conv2D/Depthwise/Dense/Add/Concatenate/pooling/ReLU of ``model`` with
    the test DFP configs, fl chosen from the float activations on ``data``; the input is
    quantized by tfmot's affine quantizer, or by DFP with ``input_fl``. Returns the tfmot
    QAT model."""
    extractor = keras.Model(model.inputs, [lyr.output for lyr in model.layers[1:]])
    acts = extractor.predict(data, verbose=0)
    acts = acts if isinstance(acts, list) else [acts]
    by_name = {lyr.name: a for lyr, a in zip(model.layers[1:], acts)}

    fls = {
        name: int(frac_bits_for(np.abs(a).max(), act_bits, bool(a.min() < 0)))
        for name, a in by_name.items()
    }
    # TFLite gives Concatenate / pooling inputs and output one scale (tfmot's ConcatTransform
    # does the same): the producers take the coarsest fl of the group
    changed = True
    while changed:
        changed = False
        for layer in model.layers:
            if type(layer).__name__ not in ("Concatenate", "MaxPooling2D", "AveragePooling2D"):
                continue
            inbound = layer.inbound_nodes[0].inbound_layers
            group = [layer] + (list(inbound) if isinstance(inbound, list) else [inbound])
            low = min(fls[lyr.name] for lyr in group if lyr.name in fls)
            for lyr in group:
                if lyr.name in fls and fls[lyr.name] != low:
                    fls[lyr.name], changed = low, True

    def annotate(layer):
        if layer.name not in by_name:
            return layer
        a = by_name[layer.name]
        signed = bool(a.min() < 0)
        fl = fls[layer.name]
        kind = type(layer).__name__
        if kind in ("Conv2D", "Dense"):
            cfg = TestLinearConfig(fl, act_bits, signed, w_bits)
        elif kind == "DepthwiseConv2D":
            cfg = TestLinearConfig(fl, act_bits, signed, w_bits, kernel_attr="depthwise_kernel")
        elif kind in (
            "Add",
            "Concatenate",
            "MaxPooling2D",
            "AveragePooling2D",
            "ReLU",
            "GlobalAveragePooling2D",
        ):
            cfg = TestOutputConfig(fl, act_bits, signed)
        else:
            return layer
        return tfmot_q.quantize_annotate_layer(layer, cfg)

    annotated = keras.models.clone_model(model, clone_function=annotate)
    annotated.set_weights(model.get_weights())
    with tfmot_q.quantize_scope(
        {
            "TestLinearConfig": TestLinearConfig,
            "TestOutputConfig": TestOutputConfig,
            "TestDFPQuantizer": TestDFPQuantizer,
        }
    ):
        qmodel = tfmot_q.quantize_apply(annotated)
    if input_fl is None:  # tfmot's own affine input quantizer: min/max of the data
        qmodel(np.asarray(data, np.float32), training=True)
    else:
        x = np.asarray(data)
        qmodel.layers[1].quantizer = TestDFPQuantizer(act_bits, bool(x.min() < 0), input_fl)
    return qmodel


def conv_net(seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    y = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    z = keras.layers.Conv2D(8, 1, activation="relu")(x)
    a = keras.layers.Add()([y, z])
    c = keras.layers.Concatenate()([a, x])
    p = keras.layers.MaxPooling2D()(c)
    q = keras.layers.AveragePooling2D()(p)
    f = keras.layers.Flatten()(q)
    out = keras.layers.Dense(10)(f)
    return keras.Model(inp, out)
