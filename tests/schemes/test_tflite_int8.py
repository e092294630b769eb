"""A ``rounding="half_up"`` model reaches TFLite through :func:`kerasq.export.to_tflite`, the
one int8 export path, checked with the TFLite interpreter (ai_edge_litert), an independent
integer implementation. The quantizers' own graph (kerasq's fake-quant kernels) is not a
TFLite-convertible form: the plain TFLite converter on a quantized model is not supported."""

from __future__ import annotations

import numpy as np
import pytest

import kerasq
from kerasq._compat import keras, tf
from kerasq.schemes.config import QuantizationConfig


def _float_model():
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3)(inp)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Flatten()(x)
    out = keras.layers.Dense(10, name="logits")(x)
    return keras.Model(inp, out)


def _data():
    return np.random.RandomState(0).rand(32, 8, 8, 1).astype(np.float32)


def _quantized(model, rounding):
    return kerasq.quantize_model(model, QuantizationConfig(rounding=rounding))


def _run_tflite(blob, data):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=blob)
    interpreter.allocate_tensors()
    inp_d, out_d = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    got = []
    for row in data:
        interpreter.set_tensor(inp_d["index"], row[None])
        interpreter.invoke()
        got.append(interpreter.get_tensor(out_d["index"]))
    return interpreter, np.concatenate(got)


def test_half_up_model_exports_to_int8_with_ties_as_tflite_rounds_them():
    model, data = _float_model(), _data()
    q = kerasq.calibrate(_quantized(model, "half_up"), data)
    interpreter, got = _run_tflite(kerasq.export.to_tflite(q), data)
    int8 = [d for d in interpreter.get_tensor_details() if d["dtype"] == np.int8]
    assert len(int8) >= 5  # input, conv weights, relu out, dense weights, logits
    for d in int8:  # every int8 tensor has a power-of-two scale 2^-fl
        scales = d["quantization_parameters"]["scales"]
        np.testing.assert_array_equal(np.log2(scales), np.round(np.log2(scales)))
    # TFLite's int8 kernels round a requantization tie to even: the file is bit for bit the
    # same model (same weights and quantizer state) with nearest_even inference rounding
    q_even = _quantized(model, "nearest_even")
    q_even.set_weights(q.get_weights())
    np.testing.assert_array_equal(got, q_even.predict(data, verbose=0))
    # and at most one output step from the half_up model, which differs at ties only
    out_fl = [v for v in q.variables if "logits" in v.name and v.name.endswith("output_frac_bits:0")]
    step = 2.0 ** -float(out_fl[0].numpy())
    diff = np.abs(got - q.predict(data, verbose=0))
    assert diff.max() <= step
    assert np.mean(diff == 0) > 0.9


def test_half_up_model_exports_to_a_float_file_bit_identical():
    model, data = _float_model(), _data()
    q = kerasq.calibrate(_quantized(model, "half_up"), data)
    _, got = _run_tflite(kerasq.export.to_tflite(q, target="float"), data)
    np.testing.assert_array_equal(got, q.predict(data, verbose=0))


def test_plain_converter_on_a_quantized_model_is_not_an_export_path():
    """The quantizers run kerasq's fake-quant kernels (no FakeQuantWithMinMaxVars form), so
    ``tf.lite.TFLiteConverter`` cannot turn a quantized model into int8: the way is
    ``kerasq.export.to_tflite`` (tested above)."""
    from tensorflow.lite.python.convert_phase import ConverterError

    q = kerasq.calibrate(_quantized(_float_model(), "half_up"), _data())
    graph_def = tf.function(lambda t: q(t, training=False)).get_concrete_function(
        tf.TensorSpec([None, 8, 8, 1], tf.float32)).graph.as_graph_def()
    ops = {n.op for n in graph_def.node} | {
        n.op for f in graph_def.library.function for n in f.node_def}
    assert not {op for op in ops if op.startswith("FakeQuantWithMinMax")}
    converter = tf.lite.TFLiteConverter.from_keras_model(q)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    with pytest.raises(ConverterError):
        converter.convert()
