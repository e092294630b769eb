"""TFLite export against the Keras fake-quant model, the TFLite interpreter and the file's
own quantization parameters. Quantized models come from tfmot with the DFP test quantizers
of ``qmodels.py`` (written from the formula), so the expected scales are known exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest
from export.qmodels import conv_net, frac_bits_for, quantize_for_test

from kerasq._compat import keras
from kerasq.errors import ExportError, VerificationError
from kerasq.export import export_tflite, to_tflite
from kerasq.export.verify import TFLiteRunner, op_table, tensor_table
from kerasq.schemes import slots


@pytest.fixture(scope="module")
def digits():
    from kerasq.demo import load_digits_data

    return load_digits_data()


@pytest.fixture(scope="module")
def trained_conv_net(digits):
    x_train, y_train, _, _ = digits
    model = conv_net()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x_train, y_train, epochs=4, verbose=0)
    return model


@pytest.fixture(scope="module")
def qmodel(trained_conv_net, digits):
    return quantize_for_test(trained_conv_net, digits[0][:300], input_fl=8)


@pytest.fixture(scope="module")
def int8_result(qmodel, digits):
    return export_tflite(qmodel, target="int8", verify_data=digits[2])


def test_int8_file_is_integer_inside(int8_result):
    ops = op_table(int8_result.content)
    inner = [o for o in ops if o["op"] not in ("QUANTIZE", "DEQUANTIZE")]
    assert {o["op"] for o in inner} >= {
        "CONV_2D",
        "DEPTHWISE_CONV_2D",
        "ADD",
        "CONCATENATION",
        "MAX_POOL_2D",
    }
    for o in inner:
        assert all(d != np.float32 for d in o["inputs"] + o["outputs"] if d is not None), o
    assert [o["op"] for o in ops].count("QUANTIZE") == 1  # only the float input


def test_int8_scales_are_the_chosen_powers_of_two(int8_result, qmodel, digits):
    # activation scales: 2^-fl of the test quantizers, zero point -128 (unsigned) or 0
    chosen = {}
    for layer in qmodel.layers:
        cfg = getattr(layer, "quantize_config", None)
        if cfg is None:
            continue
        fl = getattr(cfg, "act_fl", getattr(cfg, "fl", None))
        chosen[layer.layer.name] = (fl, getattr(cfg, "act_signed", getattr(cfg, "signed", True)))
    tensors = tensor_table(int8_result.content)
    acts = [
        t
        for t in tensors
        if t["dtype"] == np.int8
        and len(t["scales"]) == 1
        and len(t["shape"]) >= 2
        and t["shape"][0] == 1
    ]
    observed = {
        (-(math.frexp(float(t["scales"][0]))[1] - 1), int(t["zero_points"][0])) for t in acts
    }
    for t in acts:
        assert math.frexp(float(t["scales"][0]))[0] == 0.5, t  # a power of two
    chosen["input"] = (8, False)  # quantize_for_test(..., input_fl=8) on inputs in [0, 1]
    expected = {(fl, 0 if signed else -128) for fl, signed in chosen.values() if fl is not None}
    assert observed == expected
    dense = next(
        layer.layer.name
        for layer in qmodel.layers
        if type(getattr(layer, "layer", None)).__name__ == "Dense"
    )
    out = [
        t
        for t in tensors
        if f"_deploy/{dense}/" in t["name"] and t["dtype"] == np.int8 and len(t["scales"]) == 1
    ][-1]
    assert out["scales"][0] == math.ldexp(1.0, -chosen[dense][0])
    # weight scales: per output channel, 2^-fl with fl = 8 - ceil(log2 max|w_c|) - 1
    model = qmodel
    for layer in model.layers:
        inner = getattr(layer, "layer", None)
        if type(inner).__name__ != "Conv2D":
            continue
        kernel = slots.find_weight_slot(layer, "kernel").weight.numpy()
        expected = np.ldexp(1.0, -frac_bits_for(np.abs(kernel).max(axis=(0, 1, 2)), 8))
        hits = [
            t
            for t in tensors
            if f"_deploy/{inner.name}/Conv2D;" in t["name"]
            and len(t["scales"]) > 1
            and t["dtype"] == np.int8
        ]
        assert hits and np.array_equal(hits[0]["scales"], expected.astype(np.float32))


def test_int8_output_agrees_with_keras(int8_result, qmodel, digits):
    # With power-of-two scales exact ties are frequent, and TFLite's kernels break them
    # their own way: XNNPACK (default) requantizes in float and rounds ties to even, the
    # reference kernels use gemmlowp's double rounding (round(acc/2), then a rounding
    # shift). The test quantizers round half up, like the reference kernels do for
    # non-negative values; one-step differences then travel through the layers.
    from kerasq.export.verify import verify_tflite

    reference = verify_tflite(
        int8_result.content,
        qmodel,
        digits[2],
        kernels="reference",
        output_step=int8_result.report.output_step,
    )
    assert reference.max_error_steps <= 2
    assert reference.top1_agreement >= 0.995
    assert reference.exact_fraction >= 0.9
    default = int8_result.report
    assert default.max_error_steps <= 3
    assert default.top1_agreement >= 0.97


def test_float_target_equals_fake_quant_model(qmodel, digits):
    result = export_tflite(qmodel, target="float", verify_data=digits[2])
    assert result.report.max_abs_error == 0.0
    assert result.report.top1_agreement == 1.0
    assert "QUANTIZE" not in {o["op"] for o in op_table(result.content)}


@pytest.mark.parametrize("act_bits,w_bits", [(4, 4), (12, 12), (16, 6)])
def test_float_target_any_bit_width(trained_conv_net, digits, act_bits, w_bits):
    q = quantize_for_test(
        trained_conv_net, digits[0][:200], act_bits=act_bits, w_bits=w_bits, input_fl=act_bits
    )
    result = export_tflite(q, target="float", verify_data=digits[2][:200])
    keras_out = q.predict(digits[2][:200], verbose=0)
    tfl_out = TFLiteRunner(result.content)(digits[2][:200])
    # float rounding only: the grids are exact, so the outputs are identical or one step
    # apart where TFLite sums a convolution in another order right at a tie
    step = 2.0 ** -int(frac_bits_for(np.abs(keras_out).max(), act_bits, True))
    assert np.abs(tfl_out - keras_out).max() <= step
    assert np.mean(tfl_out == keras_out) >= 0.99


def test_float16_target_stores_fp16_weights(qmodel, digits):
    result = export_tflite(qmodel, target="float16", verify_data=digits[2][:100])
    # kernels are exact in float16; the float biases are rounded to float16
    assert result.report.max_error_steps <= 1
    assert result.report.exact_fraction >= 0.99
    assert any(t["dtype"] == np.float16 for t in tensor_table(result.content))


def test_12_bit_weights_to_int8_is_an_export_error(trained_conv_net, digits):
    q = quantize_for_test(trained_conv_net, digits[0][:100], w_bits=12, input_fl=8)
    with pytest.raises(ExportError, match="12-bit weights.*'float'"):
        to_tflite(q, target="int8")


def test_16_bit_activations_to_int8_is_an_export_error(trained_conv_net, digits):
    q = quantize_for_test(trained_conv_net, digits[0][:100], act_bits=16, input_fl=16)
    with pytest.raises(ExportError, match="int16x8"):
        to_tflite(q, target="int8")


def test_verify_failure_leaves_no_file(qmodel, digits, tmp_path):
    out = tmp_path / "m.tflite"
    with pytest.raises(VerificationError):
        export_tflite(
            qmodel, out, target="int8", verify_data=digits[2], verify=True, max_error_steps=0.0
        )
    # no .tflite; only the per-layer divergence report named in the error
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["m.tflite.divergence.json"]
    import json

    body = json.loads((tmp_path / "m.tflite.divergence.json").read_text())
    assert body["layers"] and {"layer", "max_error_steps", "exact_fraction"} <= set(
        body["layers"][0])


def test_unknown_target(qmodel):
    with pytest.raises(ExportError, match="unknown target"):
        to_tflite(qmodel, target="int4")


def test_unquantized_model_exports_as_float(trained_conv_net, digits, tmp_path):
    out = tmp_path / "f.tflite"
    blob = to_tflite(trained_conv_net, out, target="float")
    assert out.read_bytes() == blob
    got = TFLiteRunner(blob)(digits[2][:50])
    np.testing.assert_allclose(got, trained_conv_net.predict(digits[2][:50], verbose=0), atol=1e-5)


def test_int16x8_has_int16_activations_and_int8_weights(digits):
    import kerasq
    from kerasq.demo import build_cnn

    x_train, y_train, x_test, _ = digits
    model = build_cnn()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x_train, y_train, epochs=3, verbose=0)
    qmodel = kerasq.quantize_model(model, kerasq.QuantizationConfig(bitwidth_activations=16))
    kerasq.calibrate(qmodel, x_train[:256])
    result = export_tflite(
        qmodel, target="int16x8", representative_data=x_train[:200], verify_data=x_test
    )
    tensors = tensor_table(result.content)
    assert any(t["dtype"] == np.int16 and len(t["shape"]) == 4 for t in tensors)
    assert any(t["dtype"] == np.int8 and len(t["scales"]) > 1 for t in tensors)
    # TFLite's own 16x8 calibration and per-channel weight scales (not kerasq's grids)
    assert result.report.top1_agreement >= 0.99
