"""Grouped Conv2D, depthwise Conv2DTranspose (Caffe's bilinear Deconvolution) and Caffe
ArgMax through export: the TFLite interpreter (ai-edge-litert, default kernels) running the
file against the quantized Keras model, bit for bit in int8 and on the float target."""

from __future__ import annotations

import numpy as np
import pytest


def _net():
    from kerasq._compat import keras
    from kerasq.converters.caffe.keras_layers import TopKAxis

    rng = np.random.default_rng(0)
    x = keras.Input((8, 12, 8))
    y = keras.layers.Conv2D(8, 3, padding="same", groups=4, activation="relu", name="g4")(x)
    y = keras.layers.Conv2D(6, 1, groups=2, name="g2")(y)
    up = keras.layers.Conv2DTranspose(6, 4, strides=2, padding="valid", use_bias=False,
                                      name="up")
    y = up(y)
    y = keras.layers.Cropping2D(1, name="crop")(y)
    y = TopKAxis(axis=3, top_k=1, name="argmax")(y)
    model = keras.Model(x, y)
    kernel = np.zeros((4, 4, 6, 6), np.float32)
    for c in range(6):  # diagonal: Caffe Deconvolution with group = channels
        kernel[:, :, c, c] = rng.normal(0, 0.5, (4, 4))
    up.set_weights([kernel])
    data = rng.uniform(-1, 1, (64, 8, 12, 8)).astype(np.float32)
    return model, data


@pytest.mark.parametrize("target", ["int8", "float"])
def test_grouped_conv_deconv_argmax_export_exactly(target):
    import kerasq
    from kerasq.export.tflite import export_tflite
    from kerasq.export.verify import TFLiteRunner, op_table

    model, data = _net()
    qmodel = kerasq.calibrate(kerasq.quantize_model(model), data[:32])
    result = export_tflite(qmodel, target=target, representative_data=data[:32],
                           verify_data=data[32:], verify=True)
    check = result.report.outputs[0]
    assert check.kind == "index" and check.max_abs_error == 0, result.report.describe()
    ops = {op["op"] for op in op_table(result.content)}
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "ARG_MAX"} <= ops, ops
    assert "TRANSPOSE_CONV" not in ops
    # the index output is int32 and equals the quantized Keras model's ArgMax (Caffe ties)
    got = TFLiteRunner(result.content)(data[32:])
    want = np.asarray(qmodel(data[32:], training=False))
    np.testing.assert_array_equal(got.reshape(want.shape), want)
    # the same through the intermediate map: ties between channels do occur on a grid
    assert want.max() > 0


def test_grouped_conv_keeps_groups_in_the_file():
    """TFLite's grouped CONV_2D is used (input channels of the filter = cin / groups)."""
    import kerasq
    from kerasq.export.tflite import export_tflite
    from kerasq.export.verify import tensor_table

    model, data = _net()
    qmodel = kerasq.calibrate(kerasq.quantize_model(model), data[:32])
    result = export_tflite(qmodel, target="int8", representative_data=data[:32])
    shapes = [tuple(t["shape"]) for t in tensor_table(result.content)
              if t["dtype"] == np.int8 and len(t["shape"]) == 4]
    assert (8, 3, 3, 2) in shapes and (6, 1, 1, 4) in shapes, shapes
