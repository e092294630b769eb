"""A real Caffe net (LeNet, trained in Caffe) -> kerasq import -> kerasq PTQ -> int8 TFLite,
checked in the TFLite interpreter against the Keras quantized model."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import shared_path

from kerasq._compat import keras
from kerasq.export import export_tflite
from kerasq.export.verify import tensor_table


@pytest.fixture(scope="module")
def lenet_q():
    from kerasq.converters.caffe import load

    import kerasq
    from kerasq.demo import load_digits_data

    folder = shared_path("caffe-models", "lenet-mnist")
    model = load(
        folder / "lenet.prototxt",
        folder / "lenet_iter_10000.caffemodel",
        input_shape={"data": [1, 1, 28, 28]},
    )
    x_train, _, x_test, y_test = load_digits_data()

    def to_mnist_size(x):  # 8x8 digits -> 24x24 -> padded 28x28, values in [0, 1]
        return np.pad(
            np.kron(x, np.ones((1, 3, 3, 1), np.float32)), ((0, 0), (2, 2), (2, 2), (0, 0))
        )

    qmodel = kerasq.quantize_model(model)
    kerasq.calibrate(qmodel, to_mnist_size(x_train[:256]))
    return qmodel, to_mnist_size(x_test)


def test_lenet_int8_logits_within_one_step(lenet_q):
    qmodel, x = lenet_q
    names = [layer.name for layer in qmodel.layers]
    ip2 = next(n for n in names if n.endswith("ip2"))
    logits = keras.Model(qmodel.inputs, qmodel.get_layer(ip2).output)
    result = export_tflite(logits, target="int8", verify_data=x)
    assert result.report.max_error_steps <= 1.0
    assert result.report.top1_agreement >= 0.995
    # default config (ties to even, biases on the int32 grid) under XNNPACK: measured
    # bit-identical logits
    assert result.report.exact_fraction >= 0.99
    # the file's activation scales are the powers of two kerasq's quantizers use
    tensors = tensor_table(result.content)
    chosen = {
        -int(spec.frac_bits)
        for entries in result.plan.specs.values()
        for what, spec in entries
        if what != "kernel" and spec.kind == "dfp"
    }
    acts = {
        math.frexp(float(t["scales"][0]))[1] - 1
        for t in tensors
        if t["dtype"] == np.int8 and len(t["scales"]) == 1 and len(t["shape"]) >= 2
    }
    assert acts <= chosen and len(acts) >= 3


def test_lenet_int8_with_softmax_top1(lenet_q):
    qmodel, x = lenet_q
    result = export_tflite(qmodel, target="int8", verify_data=x)
    # TFLite's int8 SOFTMAX is a table approximation: probabilities may move by a few
    # 1/256 steps, the decision does not
    assert result.report.top1_agreement >= 0.995


def test_lenet_float_target_is_exact(lenet_q):
    qmodel, x = lenet_q
    result = export_tflite(qmodel, target="float", verify_data=x[:100])
    assert result.report.max_abs_error == 0.0
