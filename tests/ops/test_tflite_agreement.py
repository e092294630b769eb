"""The integer kernels against the TFLite int8 interpreter on TFLite-representable layers.

An 8-bit DFP layer with power-of-two scales is exactly a TFLite int8 layer (scale 2^-fl,
zero point 0, per-channel weight scales 2^-fl_w with max|w| = 127 steps, int32 bias at
2^-(fl_x + fl_w)). The models are built with FakeQuant ops at those ranges and converted
by the TFLite converter; the requantization ratio is then 2^-s exactly.

Measured rounding behaviour (TF 2.21 / ai-edge-litert 2.3):
* the default interpreter (XNNPACK delegate) rounds half to even: it equals kerasq's
  ``rounding="nearest_even"`` bit for bit;
* TFLite's reference kernels round twice (SaturatingRoundingDoublingHighMul by 2^30, then
  RoundingDivideByPOT by 2^(s-1), both half away from zero); they equal a numpy model of
  that formula bit for bit and differ from kerasq's single ``"nearest"`` rounding by at
  most one step, on a small fraction of the elements (the double-rounding ties).
"""

from __future__ import annotations

import numpy as np
import pytest

from kerasq._compat import keras, tf
from kerasq.ops import dfp_conv2d, dfp_depthwise_conv2d, dfp_matmul
from ops import int_reference as ref

FX, FW, FO = 5, 7, 3


@keras.utils.register_keras_serializable(package="kerasq_tests")
class PowerOfTwoFakeQuant(keras.layers.Layer):
    """int8 FakeQuant on the grid 2^-frac (min = -128 steps, max = 127 steps)."""

    def __init__(self, frac: int, **kwargs):
        super().__init__(**kwargs)
        self.frac = frac

    def call(self, x):
        step = 2.0 ** -self.frac
        return tf.quantization.fake_quant_with_min_max_args(x, -128 * step, 127 * step, num_bits=8)

    def get_config(self):
        return {**super().get_config(), "frac": self.frac}


def _interpreters(model):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    content = conv.convert()
    out = {}
    for name, kw in [("xnnpack", {}),
                     ("reference", {"experimental_op_resolver_type": OpResolverType.BUILTIN_REF})]:
        interp = Interpreter(model_content=content, **kw)
        interp.allocate_tensors()
        out[name] = interp
    return out


def _invoke(interp, x):
    i, o = interp.get_input_details()[0], interp.get_output_details()[0]
    assert i["quantization"] == (2.0**-FX, 0) and o["quantization"] == (2.0**-FO, 0)
    interp.set_tensor(i["index"], x)
    interp.invoke()
    return interp.get_tensor(o["index"]).astype(np.int64)


def _tflite_double_rounding(acc, s):
    """TFLite reference requantization by 2^-s: SRDHM(acc, 2^30) then RoundingDivideByPOT."""
    ab = acc * (1 << 30)
    v = ab + np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    high = np.where(v >= 0, v >> 31, -((-v) >> 31))
    mask = (1 << (s - 1)) - 1
    rounded = (high >> (s - 1)) + ((high & mask) > (mask >> 1) + (high < 0))
    return np.clip(rounded, -128, 127)


def _case(kind, rng):
    if kind == "conv":
        w = rng.integers(-127, 128, (3, 3, 16, 24))
        w[0, 0, 0, :] = 127  # max|w| = 127 steps: TFLite's per-channel scale is 2^-FW
        layer, n_out, shape = keras.layers.Conv2D(24, 3, padding="same"), 24, (2, 12, 12, 16)
    elif kind == "depthwise":
        w = rng.integers(-127, 128, (3, 3, 16, 1))
        w[0, 0, :, 0] = -127
        layer, n_out, shape = keras.layers.DepthwiseConv2D(3, padding="same"), 16, (2, 12, 12, 16)
    else:
        w = rng.integers(-127, 128, (64, 20))
        w[0, :] = 127
        layer, n_out, shape = keras.layers.Dense(20), 20, (32, 64)
    b = rng.integers(-3000, 3000, n_out)
    inp = keras.Input(shape[1:], batch_size=shape[0])
    model = keras.Model(inp, PowerOfTwoFakeQuant(FO)(layer(PowerOfTwoFakeQuant(FX)(inp))))
    layer.set_weights([np.ldexp(w, -FW).astype(np.float32),
                       np.ldexp(b, -(FX + FW)).astype(np.float32)])
    x = rng.integers(-128, 128, shape).astype(np.int8)
    return model, x, w.astype(np.int8), b.astype(np.int32)


def _kerasq(kind, x, w, b, rounding):
    kw = dict(x_frac=FX, w_frac=FW, out_frac=FO, rounding=rounding)
    if kind == "conv":
        return dfp_conv2d(x, w, b, padding="SAME", **kw).numpy()
    if kind == "depthwise":
        return dfp_depthwise_conv2d(x, w, b, padding="SAME", **kw).numpy()
    return dfp_matmul(x, w, b, **kw).numpy()


def _accumulator(kind, x, w, b):
    if kind == "conv":
        return ref.conv2d_acc(x, w, padding="SAME") + b
    if kind == "depthwise":
        return ref.depthwise_acc(x, w, padding="SAME") + b
    return ref.matmul_acc(x, w) + b


@pytest.mark.parametrize("kind", ["conv", "depthwise", "dense"])
def test_integer_kernels_match_tflite_int8(ops_path, kind):
    rng = np.random.default_rng(["conv", "depthwise", "dense"].index(kind))
    model, x, w, b = _case(kind, rng)
    interps = _interpreters(model)
    lite = _invoke(interps["xnnpack"], x)
    np.testing.assert_array_equal(_kerasq(kind, x, w, b, "nearest_even"), lite)

    s = FX + FW - FO
    lite_ref = _invoke(interps["reference"], x)
    np.testing.assert_array_equal(lite_ref, _tflite_double_rounding(_accumulator(kind, x, w, b), s))
    ours = _kerasq(kind, x, w, b, "nearest")
    diff = np.abs(ours.astype(np.int64) - lite_ref)
    assert diff.max() <= 1
    assert np.count_nonzero(diff) <= 0.01 * diff.size
