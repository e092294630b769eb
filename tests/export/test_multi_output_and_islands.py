"""Several outputs, float islands and the caller's model after export.

A two-headed net (Softmax classifier + PReLU/tanh regression head), kerasq's default config:
the int8 file, run by ai-edge-litert's default interpreter (the reference), equals the Keras
model in both outputs bit for bit; its output tensors carry the Keras output names; each
output is judged by its kind; only the float-island operators are float; and exporting
leaves the model's variables as they were.
"""

from __future__ import annotations

import numpy as np
import pytest

import kerasq
from kerasq._compat import keras
from kerasq.export import export_tflite
from kerasq.export.graph import FLOAT_ISLAND
from kerasq.export.verify import TFLiteRunner, op_table


@pytest.fixture(scope="module")
def two_headed():
    rng = np.random.default_rng(3)
    x_in = keras.Input((12, 12, 3), name="data")
    y = keras.layers.Conv2D(8, 3, name="conv1")(x_in)
    y = keras.layers.PReLU(shared_axes=[1, 2], name="prelu1",
                           alpha_initializer=keras.initializers.Constant(0.3))(y)
    y = keras.layers.Conv2D(8, 3, strides=2, name="conv2")(y)
    y = keras.layers.Activation("tanh", name="tanh2")(y)
    y = keras.layers.Flatten(name="flat")(y)
    logits = keras.layers.Dense(4, name="cls")(y)
    prob = keras.layers.Softmax(name="prob")(logits)
    bbox = keras.layers.Dense(4, name="bbox")(y)
    model = keras.Model(x_in, [prob, bbox])
    qmodel = kerasq.quantize_model(model)
    kerasq.calibrate(qmodel, rng.uniform(-1, 1, (128, 12, 12, 3)).astype(np.float32))
    return qmodel, rng.uniform(-1, 1, (96, 12, 12, 3)).astype(np.float32)


def test_two_outputs_bit_identical_and_named(two_headed):
    qmodel, x = two_headed
    before = [v.numpy().copy() for v in qmodel.variables]
    result = export_tflite(qmodel, target="int8", verify_data=x, verify=True,
                           max_error_steps=0.0)
    # export leaves the caller's model unchanged
    assert all(np.array_equal(v.numpy(), b) for v, b in zip(qmodel.variables, before))
    runner = TFLiteRunner(result.content)
    assert sorted(runner.output_names) == ["bbox", "prob"]
    got = dict(zip(runner.output_names, runner.run_all(x)))
    want = qmodel(x, training=False)
    np.testing.assert_array_equal(got["prob"], want[0].numpy())
    np.testing.assert_array_equal(got["bbox"], want[1].numpy())
    checks = {c.name: c for c in result.report.outputs}
    assert checks["prob"].kind == "classifier" and checks["prob"].top1_agreement == 1.0
    assert checks["bbox"].kind == "values"
    assert "top-1" not in checks["bbox"].describe()


def test_only_island_operators_are_float(two_headed):
    qmodel, _ = two_headed
    content = export_tflite(qmodel, target="int8").content
    floats = [op for op in op_table(content)
              if op["op"] not in ("QUANTIZE", "DEQUANTIZE")
              and any(d == np.float32 for d in op["inputs"] + op["outputs"] if d is not None)]
    assert {op["op"] for op in floats} >= {"SOFTMAX", "TANH", "PRELU"}
    assert all(FLOAT_ISLAND in op["output_names"][0] for op in floats)
