"""With rounding="half_up" the fake-quant graph is what the TFLite converter turns into
real int8 (FakeQuantWithMinMaxVars with power-of-two min/max): checked with the TFLite
interpreter (ai_edge_litert), an independent integer implementation."""

from __future__ import annotations

import numpy as np

import kerasq
from kerasq._compat import keras, tf
from kerasq.schemes.config import QuantizationConfig


def test_half_up_model_converts_to_int8_and_agrees_within_one_step():
    from ai_edge_litert.interpreter import Interpreter

    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3)(inp)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Flatten()(x)
    out = keras.layers.Dense(10, name="logits")(x)
    model = keras.Model(inp, out)
    data = np.random.RandomState(0).rand(32, 8, 8, 1).astype(np.float32)
    # TFLite's FullyConnected takes per-tensor weights only
    cfg = QuantizationConfig(rounding="half_up", overrides={"Dense": {"per_channel_weights": False}})
    q = kerasq.calibrate(kerasq.quantize_model(model, cfg), data)
    converter = tf.lite.TFLiteConverter.from_keras_model(q)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    interpreter = Interpreter(model_content=converter.convert())
    interpreter.allocate_tensors()
    details = interpreter.get_tensor_details()
    int8 = [d for d in details if d["dtype"] == np.int8]
    assert len(int8) >= 5  # input, conv weights, relu out, dense weights, logits
    out_fl = [v for v in q.variables if "logits" in v.name and v.name.endswith("output_frac_bits:0")]
    step = 2.0 ** -float(out_fl[0].numpy())
    for d in int8:  # every int8 tensor has a power-of-two scale
        scales = d["quantization_parameters"]["scales"]
        np.testing.assert_array_equal(np.log2(scales), np.round(np.log2(scales)))
    inp_d, out_d = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    got = []
    for row in data:
        interpreter.set_tensor(inp_d["index"], row[None])
        interpreter.invoke()
        got.append(interpreter.get_tensor(out_d["index"]))
    diff = np.abs(np.concatenate(got) - q.predict(data, verbose=0))
    assert diff.max() <= step + 1e-7  # integer requantization: at most one output step
    assert np.mean(diff == 0) > 0.8
