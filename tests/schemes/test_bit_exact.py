"""Fake-quantized weights and activations equal kerasq.numerics on the same values (bit exact),
and the non-power-of-two path equals caffe-jacinto's formula written in numpy."""

from __future__ import annotations

import numpy as np
import pytest

import kerasq
import kerasq.numerics as nx
from kerasq._compat import keras, tf
from kerasq.schemes.config import QuantizationConfig


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((6, 6, 2), name="image")
    x = keras.layers.Conv2D(5, 3, name="conv")(inp)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.DepthwiseConv2D(2, name="dw")(x)
    x = keras.layers.Flatten(name="flat")(x)
    out = keras.layers.Dense(4, name="fc")(x)
    model = keras.Model(inp, out)
    for layer in model.layers:  # non-trivial biases and kernels spanning several octaves
        ws = layer.get_weights()
        if ws:
            rng = np.random.RandomState(len(layer.name))
            layer.set_weights([w * rng.uniform(0.1, 3.0, size=w.shape[-1]).astype(np.float32)
                               + rng.normal(0, 0.05, w.shape).astype(np.float32) for w in ws])
    return model


def _data(n=48, seed=1):
    return np.random.RandomState(seed).normal(0, 1.5, (n, 6, 6, 2)).astype(np.float32)


def _tap(qmodel, layer_name):
    """Sub-model from qmodel's input to ``layer_name``'s output inside qmodel's graph."""
    layer = qmodel.get_layer(layer_name)
    for index in range(len(layer._inbound_nodes)):
        if f"{layer.name}_ib-{index}" in qmodel._network_nodes:
            return keras.Model(qmodel.inputs, layer.get_output_at(index))
    raise AssertionError(layer_name)


def _wrapper(qmodel, name):
    return qmodel.get_layer("quant_" + name)


def _quantized_weights(qmodel, name):
    layer = _wrapper(qmodel, name)
    out = {}
    for weight, quantizer, qvars in layer._weight_vars:
        short = weight.name.split("/")[-1].split(":")[0]
        out[short] = (weight.numpy(), quantizer(weight, False, qvars).numpy())
    return out


def _per_channel_fl(w, keep_axes, bits):
    axes = tuple(a for a in range(w.ndim) if a not in [k % w.ndim for k in keep_axes])
    return nx.dfp_frac_bits(np.max(np.abs(w), axis=axes, keepdims=True), bits, signed=True)


@pytest.mark.parametrize("bits", [4, 8])
def test_dfp_weights_equal_numerics_per_channel(bits):
    q = kerasq.quantize_model(_model(), QuantizationConfig(bitwidth_weights=bits))
    w, wq = _quantized_weights(q, "conv")["kernel"]
    ref = nx.dfp_quantize(w, bits, _per_channel_fl(w, (-1,), bits), signed=True)
    np.testing.assert_array_equal(wq, ref)
    w, wq = _quantized_weights(q, "dw")["depthwise_kernel"]
    ref = nx.dfp_quantize(w, bits, _per_channel_fl(w, (-2, -1), bits), signed=True)
    np.testing.assert_array_equal(wq, ref)
    assert len(np.unique(wq[..., 0, 0])) <= 2 ** bits


def test_dfp_weights_per_tensor_and_bias_bits():
    cfg = QuantizationConfig(per_channel_weights=False, bitwidth_bias=12)
    q = kerasq.quantize_model(_model(), cfg)
    weights = _quantized_weights(q, "fc")
    w, wq = weights["kernel"]
    np.testing.assert_array_equal(
        wq, nx.dfp_quantize(w, 8, nx.dfp_frac_bits(np.abs(w).max(), 8), signed=True))
    b, bq = weights["bias"]
    np.testing.assert_array_equal(
        bq, nx.dfp_quantize(b, 12, nx.dfp_frac_bits(np.abs(b).max(), 12), signed=True))
    # 32-bit bias (default) stays float until the int8 export links it to the int32
    # accumulator grid (tests/schemes/test_int8_alignment.py)
    b, bq = _quantized_weights(kerasq.quantize_model(_model()), "fc")["bias"]
    np.testing.assert_array_equal(bq, b)


def test_minifloat_and_pow2_weights_equal_numerics():
    q = kerasq.quantize_model(_model(), QuantizationConfig(precision="minifloat", exp_bits=4,
                                                           mant_bits=3))
    for w, wq in _quantized_weights(q, "conv").values():
        np.testing.assert_array_equal(wq, nx.minifloat_quantize(w, 4, 3))
    q = kerasq.quantize_model(_model(), QuantizationConfig(precision="pow2_weights",
                                                           pow2_exp_min=-6, pow2_exp_max=0))
    w, wq = _quantized_weights(q, "conv")["kernel"]
    np.testing.assert_array_equal(wq, nx.pow2_quantize(w, -6, 0))


def test_activations_equal_numerics_after_calibration():
    model, x = _model(), _data()
    q = kerasq.calibrate(kerasq.quantize_model(model), x, batch_size=16)
    # model input: unsigned? no (normal data): signed 8-bit with fl from max|x| over all batches
    image_q = _tap(q, "image_quantize")(x).numpy()
    fl_in = nx.dfp_frac_bits(np.abs(x).max(), 8, signed=True)
    np.testing.assert_array_equal(image_q, nx.dfp_quantize(x, 8, fl_in, signed=True))
    # conv output is not quantized (ReLU consumes it); the ReLU output is unsigned 8-bit
    relu_in = _tap(q, "quant_conv")(x)
    relu_q = _tap(q, "quant_relu")(x).numpy()
    float_model = keras.Model(model.input, model.get_layer("relu").output)
    fl_relu = nx.dfp_frac_bits(float(np.max(float_model(x).numpy())), 8, signed=False)
    np.testing.assert_array_equal(
        relu_q, nx.dfp_quantize(np.maximum(relu_in.numpy(), 0), 8, fl_relu, signed=False,
                                rounding="nearest_even"))  # the default config's rounding:
    # calibration links the bias to the accumulator grid, so exact ties occur
    assert float(_wrapper(q, "relu").weights[-1].numpy()) >= 0  # sanity: variables exist
    stored = {v.name.split("/")[-1].split(":")[0]: v.numpy() for v in _wrapper(q, "relu").weights}
    assert stored["output_frac_bits"] == fl_relu


def test_half_up_is_an_ordinary_rounding_mode_matching_numerics():
    """half_up runs the ops backend like every mode (no FakeQuant form in the graph: the
    int8 TFLite file comes from kerasq.export, see test_tflite_int8.py)."""
    model, x = _model(), _data()
    q = kerasq.calibrate(kerasq.quantize_model(model, QuantizationConfig(rounding="half_up")), x)
    w, wq = _quantized_weights(q, "conv")["kernel"]
    np.testing.assert_array_equal(
        wq, nx.dfp_quantize(w, 8, _per_channel_fl(w, (-1,), 8), rounding="half_up"))
    relu_in = _tap(q, "quant_conv")(x).numpy()
    stored = {v.name.split("/")[-1].split(":")[0]: v.numpy() for v in _wrapper(q, "relu").weights}
    np.testing.assert_array_equal(
        _tap(q, "quant_relu")(x).numpy(),
        nx.dfp_quantize(np.maximum(relu_in, 0), 8, int(stored["output_frac_bits"]), signed=False,
                        rounding="half_up"))
    concrete = tf.function(lambda t: q(t, training=False)).get_concrete_function(
        tf.TensorSpec([None, 6, 6, 2], tf.float32))
    graph_def = concrete.graph.as_graph_def()
    ops = {n.op for n in graph_def.node}
    ops |= {n.op for f in graph_def.library.function for n in f.node_def}  # cond branches
    assert not {op for op in ops if op.startswith("FakeQuantWithMinMax")}


def test_jacinto_non_power2_scales_follow_the_spec_formula():
    """caffe-jacinto 0.16 EstiamteQScaleParams: signed s = (2^(b-1)-1)/A, unsigned (2^b-1)/A."""
    model, x = _model(), _data()
    cfg = QuantizationConfig(power2_range=False, per_channel_weights=False)
    q = kerasq.calibrate(kerasq.quantize_model(model, cfg), x)
    w, wq = _quantized_weights(q, "fc")["kernel"]
    s = np.float32(127.0) / np.float32(np.abs(w).max())
    y = np.clip(w * s, -128, 127)
    expected = (np.sign(y) * np.floor(np.abs(y) + np.float32(0.5))) / s
    np.testing.assert_array_equal(wq, expected.astype(np.float32))
    relu_in = np.maximum(_tap(q, "quant_conv")(x).numpy(), 0)
    relu_q = _tap(q, "quant_relu")(x).numpy()
    float_relu = keras.Model(model.input, model.get_layer("relu").output)(x).numpy()
    s = np.float32(255.0) / np.float32(float_relu.max())
    expected = np.floor(np.clip(relu_in * s, 0, 255) + np.float32(0.5)) / s
    np.testing.assert_allclose(relu_q, expected, rtol=0, atol=1e-6)


def test_stochastic_training_rounding_is_unbiased_and_inference_deterministic():
    q = kerasq.quantize_model(_model(), QuantizationConfig(bitwidth_weights=4))
    layer = _wrapper(q, "fc")
    weight, quantizer, qvars = layer._weight_vars[0]
    draws = np.stack([quantizer(weight, True, qvars).numpy() for _ in range(200)])
    w = weight.numpy()
    fl = _per_channel_fl(w, (-1,), 4)
    y = w * 2.0 ** fl
    codes = draws * 2.0 ** fl
    np.testing.assert_array_equal(codes, np.round(codes))  # on the grid
    inside = (y > -8) & (y < 7)  # not saturated
    lo, hi = np.floor(y), np.floor(y) + 1
    assert np.all(((codes == lo) | (codes == hi))[:, inside])  # floor or ceil only
    frac = (y - lo)[inside]
    np.testing.assert_allclose(codes.mean(0)[inside] - lo[inside], frac, atol=0.15)
    a = quantizer(weight, False, qvars).numpy()
    np.testing.assert_array_equal(a, quantizer(weight, False, qvars).numpy())


def test_export_spec_describes_the_grid_the_quantizer_uses():
    from kerasq.export.spec import GridSpec

    model, x = _model(), _data()
    q = kerasq.calibrate(kerasq.quantize_model(model), x)
    layer = _wrapper(q, "conv")
    weight, quantizer, qvars = layer._weight_vars[0]
    spec = quantizer.export_spec(qvars)
    assert isinstance(spec, GridSpec)
    w = weight.numpy()
    np.testing.assert_array_equal(spec.frac_bits, _per_channel_fl(w, (-1,), 8).reshape(-1))
    codes = quantizer(weight, False, qvars).numpy() / spec.step
    np.testing.assert_array_equal(codes, np.round(codes))
    assert codes.min() >= spec.qmin and codes.max() <= spec.qmax
    relu = _wrapper(q, "relu")
    quantizer, qvars = relu._output_quantizers[0], relu._output_quantizer_vars
    spec = quantizer.export_spec(qvars)
    assert not spec.signed and spec.bitwidth == 8
    out = _tap(q, "quant_relu")(x).numpy() / spec.step
    np.testing.assert_array_equal(out, np.round(out))
    assert out.min() >= 0 and out.max() <= 255
    _, dw_q, dw_vars = _wrapper(q, "dw")._weight_vars[0]
    assert dw_q.export_spec(dw_vars).axis == -2


@pytest.mark.parametrize("bits", [2, 8, 16, 32])
@pytest.mark.parametrize("signed", [True, False])
def test_graph_frac_bits_equal_numerics_on_every_exponent(bits, signed):
    """The quantizers' four-op fl (float32 bit pattern, inside tf.function) equals the numpy
    reference on every power of two, its neighbours, subnormals, 0 and random values."""
    from kerasq.schemes import _backend

    one = np.float32(1.0)
    powers = np.ldexp(one, np.arange(-149, 128)).astype(np.float32)
    rng = np.random.RandomState(0)
    values = np.concatenate([
        powers, np.nextafter(powers, np.float32(np.inf)), np.nextafter(powers, np.float32(0)),
        np.exp(rng.uniform(-87, 88, 5000)).astype(np.float32),
        [0.0, -0.0, np.finfo(np.float32).max]]).astype(np.float32)
    values = values[np.isfinite(values)]
    graph = tf.function(lambda m: _backend.dfp_frac_bits(m, bits, signed=signed))
    np.testing.assert_array_equal(graph(tf.constant(values)).numpy(),
                                  nx.dfp_frac_bits(np.abs(values), bits, signed=signed))
