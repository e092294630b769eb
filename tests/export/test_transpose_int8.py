"""General (dense-kernel) Conv2DTranspose in int8 TFLite files: the file run by the TFLite
interpreter (ai-edge-litert, default kernels) must give the bytes of the quantized Keras
model, and both must equal a numpy reference of the transposed convolution (float64 sums of
the grid values, rounded ties-to-even onto the output grid), over strides 1..4, kernels
2..8, "same"/"valid", output_padding, dilation, with and without bias, per-channel and
per-tensor weights, DFP 8/8 and caffe-jacinto's defaults made deployable."""

from __future__ import annotations

import numpy as np
import pytest

import kerasq
from kerasq._compat import keras
from kerasq.export import export_tflite
from kerasq.export.graph import build_deploy_model
from kerasq.export.verify import TFLiteRunner, op_table
from kerasq.schemes import slots


def transpose_conv_reference(x, kernel, bias, strides, padding, out_hw, dilation=(1, 1)):
    """Transposed convolution from its definition, in float64: every input pixel scatters
    x[i, j]·K[t, u] to full[s·i + d·t, s·j + d·u]; the output is full[p + o] for o < O, with
    p = 0 ("valid") or ⌊max(s·(n − 1) + k_eff − O, 0)/2⌋ ("same", TF's rule). kernel is
    Keras' (kh, kw, cout, cin)."""
    x = np.asarray(x, np.float64)
    kernel = np.asarray(kernel, np.float64)
    batch, h, w, _ = x.shape
    kh, kw, cout, _ = kernel.shape
    (sh, sw), (dh, dw) = strides, dilation
    keh, kew = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    full = np.zeros((batch, sh * (h - 1) + keh, sw * (w - 1) + kew, cout))
    for i in range(h):
        for j in range(w):
            for t in range(kh):
                for u in range(kw):
                    full[:, sh * i + dh * t, sw * j + dw * u] += x[:, i, j] @ kernel[t, u].T
    pads = []
    for n, s, k, o in zip((h, w), strides, (keh, kew), out_hw):
        pads.append(max(s * (n - 1) + k - o, 0) // 2 if padding == "same" else 0)
    out = np.zeros((batch, *out_hw, cout))
    hh = min(out_hw[0], full.shape[1] - pads[0])
    ww = min(out_hw[1], full.shape[2] - pads[1])
    out[:, :hh, :ww] = full[:, pads[0]:pads[0] + hh, pads[1]:pads[1] + ww]
    return out + (0.0 if bias is None else np.asarray(bias, np.float64))


def _on_grid(y, spec):
    """round-half-even(y·2^fl) clipped to [qmin, qmax], times 2^-fl."""
    codes = np.clip(np.round(np.ldexp(y, int(spec.frac_bits))), spec.qmin, spec.qmax)
    return np.ldexp(codes, -int(spec.frac_bits))


def _jacinto_deployable():
    """caffe-jacinto 0.16's settings (what `quantize: true` alone selects: 12-bit weights
    per tensor with an offset, EMA ranges, ties away) made int8-deployable."""
    from kerasq.schemes import int8_deployable

    jacinto = kerasq.QuantizationConfig(
        bitwidth_weights=12, rounding="nearest", power2_range=False, apply_offset_weights=True,
        per_channel_weights=False, range_estimator="ema", ema_update_factor=0.1,
        range_expansion=1.2, quantization_start=1, quantize_inputs=False)
    return int8_deployable(jacinto)[0]


CONFIGS = {
    "dfp8": lambda: kerasq.QuantizationConfig(),
    "dfp8_per_tensor": lambda: kerasq.QuantizationConfig(per_channel_weights=False),
    "jacinto": _jacinto_deployable,
}

# (strides, kernel, padding, output_padding, dilation, bias, activation, config)
CASES = [
    ((2, 2), (2, 2), "valid", None, (1, 1), True, "relu", "dfp8"),
    ((2, 2), (4, 4), "same", None, (1, 1), True, None, "dfp8"),
    ((2, 2), (3, 3), "same", None, (1, 1), False, None, "dfp8_per_tensor"),
    ((2, 2), (5, 5), "same", (1, 1), (1, 1), True, None, "dfp8"),
    ((2, 2), (7, 7), "valid", None, (1, 1), True, "relu", "dfp8_per_tensor"),
    ((3, 3), (3, 3), "valid", None, (1, 1), True, None, "jacinto"),
    ((3, 3), (2, 2), "valid", None, (1, 1), False, None, "dfp8"),
    ((3, 3), (5, 5), "same", None, (1, 1), True, "relu", "dfp8"),
    ((3, 3), (6, 6), "same", None, (1, 1), True, None, "jacinto"),
    ((4, 4), (8, 8), "same", None, (1, 1), True, None, "jacinto"),
    ((4, 4), (4, 4), "valid", None, (1, 1), True, None, "dfp8"),
    ((4, 4), (3, 3), "same", None, (1, 1), False, None, "dfp8"),
    ((2, 3), (4, 5), "valid", None, (1, 1), True, None, "dfp8_per_tensor"),
    ((1, 1), (3, 3), "same", None, (2, 2), True, None, "dfp8"),
]


def _case_id(case):
    strides, kernel, padding, out_pad, dilation, bias, act, config = case
    return (f"s{strides[0]}x{strides[1]}-k{kernel[0]}x{kernel[1]}-{padding}"
            f"{'-op' if out_pad else ''}{'-d2' if dilation != (1, 1) else ''}"
            f"{'' if bias else '-nobias'}{'-relu' if act else ''}-{config}")


def _quantized(case, seed=0):
    strides, kernel, padding, out_pad, dilation, bias, act, config = case
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    inp = keras.Input((5, 6, 3), name="image")
    layer = keras.layers.Conv2DTranspose(
        4, kernel, strides=strides, padding=padding, output_padding=out_pad,
        dilation_rate=dilation, use_bias=bias, activation=act, name="up")
    model = keras.Model(inp, layer(inp))
    weights = [rng.normal(0, 0.4, layer.kernel.shape).astype(np.float32)]
    if bias:
        weights.append(rng.normal(0, 0.3, (4,)).astype(np.float32))
    layer.set_weights(weights)
    data = rng.uniform(-1, 1, (96, 5, 6, 3)).astype(np.float32)
    qmodel = kerasq.calibrate(kerasq.quantize_model(model, CONFIGS[config]()), data[:48])
    return qmodel, data


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_general_transpose_int8_is_bit_identical_and_matches_numpy(case):
    strides, _, padding, _, dilation, _, act, _ = case
    qmodel, data = _quantized(case)
    result = export_tflite(qmodel, target="int8", representative_data=data[:48],
                           verify_data=data[48:], verify=True, max_error_steps=0)
    report = result.report
    assert report.max_error_steps == 0 and report.exact_fraction == 1.0, report.describe()
    ops = [op["op"] for op in op_table(result.content)]
    assert "TRANSPOSE_CONV" not in ops and "CONV_2D" in ops, ops
    assert "DEQUANTIZE" not in ops[1:-1], ops  # integer from QUANTIZE to DEQUANTIZE
    # square strides > 1: the sub-pixel form; otherwise zero insertion
    assert ("DEPTH_TO_SPACE" in ops) == (strides[0] == strides[1] > 1), ops

    # numpy: the input on its grid, the Keras quantizers' kernel and bias, float64 sums,
    # the output grid's round-half-even
    plan = build_deploy_model(qmodel, "fakequant8")
    in_spec = next(s for rows in plan.specs.values() for what, s in rows if what == "input")
    wrapper = next(lay for lay in qmodel.layers if getattr(lay, "layer", None) is not None
                   and lay.layer.name == "up")
    values = {}
    for entry in slots.weight_slots(wrapper):
        q = entry.quantizer(entry.weight, training=False, weights=entry.variables)
        values[entry.weight.name.split("/")[-1].split(":")[0]] = np.asarray(q, np.float64)
    x = data[48:]
    got = TFLiteRunner(result.content)(x).astype(np.float64)
    want = transpose_conv_reference(_on_grid(x, in_spec), values["kernel"], values.get("bias"),
                                    strides, padding, got.shape[1:3], dilation)
    if act == "relu":
        want = np.maximum(want, 0)
    want = _on_grid(want, plan.output_spec)
    np.testing.assert_array_equal(got, want)


def test_reference_matches_keras_float_conv2d_transpose():
    """The numpy reference against Keras' own float Conv2DTranspose (TF's semantics of
    "same", output_padding and dilation)."""
    rng = np.random.default_rng(1)
    for strides, kernel, padding, out_pad, dilation, *_ in CASES:
        layer = keras.layers.Conv2DTranspose(4, kernel, strides=strides, padding=padding,
                                             output_padding=out_pad, dilation_rate=dilation)
        x = rng.normal(size=(2, 5, 6, 3)).astype(np.float32)
        layer.build(x.shape)
        k, b = layer.get_weights()
        b = rng.normal(size=b.shape).astype(np.float32)
        layer.set_weights([k, b])
        y = np.asarray(layer(x))
        want = transpose_conv_reference(x, k, b, strides, padding, y.shape[1:3], dilation)
        np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)


def _digits_transpose_net(seed=0):
    """Conv, pool, a stride-2 Conv2DTranspose with ReLU, average pool, Dense (the Keras 3
    suite's transpose CNN, in tf_keras)."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 1), name="image")
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inp)
    h = keras.layers.MaxPooling2D(2, name="pool1")(h)
    h = keras.layers.Conv2DTranspose(8, 2, strides=2, activation="relu", name="up")(h)
    h = keras.layers.AveragePooling2D(2, name="pool2")(h)
    h = keras.layers.Flatten(name="flatten")(h)
    return keras.Model(inp, keras.layers.Dense(10, name="fc")(h))


def test_trained_net_with_transpose_is_bit_identical_and_reports_every_layer(tmp_path):
    from kerasq.demo import load_digits_data
    from kerasq.export.diagnose import first_divergence, layer_report

    x, y, x_test, _ = load_digits_data()
    model = _digits_transpose_net()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=3, verbose=0)
    qmodel = kerasq.calibrate(kerasq.quantize_model(model), x[:200])
    result = export_tflite(qmodel, str(tmp_path / "t.tflite"), target="int8",
                           representative_data=x[:200], verify_data=x_test, verify=True,
                           max_error_steps=0)
    assert result.report.exact_fraction == 1.0, result.report.describe()
    # the per-layer report: built from the model's own graph (the input QuantizeLayer was
    # called in other graphs too), one row per activation grid including the conv outputs
    rows = layer_report(result.content, qmodel, result.plan, x_test[:32])
    assert [r["layer"] for r in rows] == ["image_quantize", "conv1", "up", "pool2", "fc"], rows
    assert first_divergence(rows) is None, rows


def test_divergence_report_names_the_first_diverging_layer():
    """A file whose transposed convolution computes something else (its int8 kernel
    changed): the report finds that layer first, not a "Graph disconnected" error."""
    from kerasq.export.diagnose import first_divergence, layer_report

    qmodel, data = _quantized(CASES[0])
    result = export_tflite(qmodel, target="int8", representative_data=data[:48])
    rows = layer_report(result.content, qmodel, result.plan, data[:32])
    assert [r["layer"] for r in rows] == ["image_quantize", "up"] and first_divergence(rows) is None
    wrapper = next(lay for lay in qmodel.layers if getattr(lay, "layer", None) is not None
                   and lay.layer.name == "up")
    kernel = slots.weight_variable(wrapper, "kernel")
    kernel.assign(-kernel.numpy())  # the Keras model now differs from the file
    rows = layer_report(result.content, qmodel, result.plan, data[:32])
    row = first_divergence(rows)
    assert row is not None and row["layer"] == "up" and row["max_error_steps"] >= 1, rows


def test_free_spatial_size_is_refused_in_one_line():
    from kerasq.errors import ExportError

    inp = keras.Input((None, None, 3))
    model = keras.Model(inp, keras.layers.Conv2DTranspose(4, 3, strides=2, padding="same",
                                                          name="up")(inp))
    x = np.random.default_rng(0).uniform(-1, 1, (16, 5, 6, 3)).astype(np.float32)
    qmodel = kerasq.calibrate(kerasq.quantize_model(model), x)
    with pytest.raises(ExportError) as err:
        export_tflite(qmodel, target="int8", representative_data=x)
    text = str(err.value)
    assert "up" in text and "free spatial input size" in text and "\n" not in text, text


@pytest.mark.parametrize("case", [CASES[1], CASES[6], CASES[9]], ids=_case_id)
def test_general_transpose_int8_onnx_is_bit_identical(case):
    """The same deploy graph written as int8 QDQ ONNX, run by onnxruntime's int8 kernels
    (a stride-3 kernel-2 layer used to fail there: ConvTranspose pads < 0)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx")
    from kerasq.export.onnx import export_onnx

    qmodel, data = _quantized(case)
    result = export_onnx(qmodel, target="int8", verify_data=data[48:], verify=True)
    (check,) = result.report.outputs
    assert check.max_error_steps == 0 and check.exact_fraction == 1.0, result.report.describe()


def test_free_spatial_size_still_exports_to_float():
    """The float target keeps the stock Conv2DTranspose (also a depthwise one) on a free
    input size; the file equals the Keras model up to float summation order."""
    inp = keras.Input((None, None, 3))
    layer = keras.layers.Conv2DTranspose(3, 4, strides=2, use_bias=False, name="up")
    model = keras.Model(inp, layer(inp))
    kernel = np.zeros((4, 4, 3, 3), np.float32)
    for c in range(3):  # diagonal: the depthwise (Caffe group = channels) form
        kernel[:, :, c, c] = np.random.default_rng(c).normal(0, 0.5, (4, 4))
    layer.set_weights([kernel])
    x = np.random.default_rng(0).uniform(-1, 1, (16, 5, 6, 3)).astype(np.float32)
    qmodel = kerasq.calibrate(kerasq.quantize_model(model), x)
    result = export_tflite(qmodel, target="float", representative_data=x)
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=result.content)
    inp_detail = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(inp_detail["index"], x[:2].shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp_detail["index"], x[:2])
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(got, np.asarray(qmodel(x[:2])), atol=1e-5)


@pytest.mark.parametrize("after", ["relu_layer", "batchnorm_relu", "crop_relu", "add"])
def test_transpose_followed_by_layers_that_quantize(after):
    """A ReLU (or BatchNorm + ReLU) layer after the transposed convolution quantizes its
    output and the layer has no grid of its own (caffe-jacinto's merge rule): the CONV_2D
    must be the last op so the converter fuses the ReLU into it (zero-insertion form). A
    Caffe Deconvolution's Cropping2D before the ReLU, or an Add, leave the layer its own
    grid (sub-pixel form)."""
    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    inp = keras.Input((5, 6, 3))
    y = keras.layers.Conv2DTranspose(4, 4, strides=2, padding="same" if after != "crop_relu"
                                     else "valid", name="up")(inp)
    if after == "add":
        z = keras.layers.Conv2DTranspose(4, 2, strides=2, name="up2")(inp)
        y = keras.layers.Add(name="add")([y, z])
    else:
        if after == "batchnorm_relu":
            y = keras.layers.BatchNormalization(name="bn")(y)
        if after == "crop_relu":
            y = keras.layers.Cropping2D(1, name="crop")(y)
        y = keras.layers.ReLU(name="relu")(y)
    model = keras.Model(inp, y)
    x = rng.uniform(-1, 1, (64, 5, 6, 3)).astype(np.float32)
    if after == "batchnorm_relu":  # moving statistics that are not the identity
        model.compile("adam", "mse")
        model.fit(x, rng.normal(size=(64, *model.output_shape[1:])), epochs=1, verbose=0)
    qmodel = kerasq.calibrate(kerasq.quantize_model(model), x[:32])
    result = export_tflite(qmodel, target="int8", representative_data=x[:32],
                           verify_data=x[32:], verify=True, max_error_steps=0)
    assert result.report.exact_fraction == 1.0, result.report.describe()
    ops = [op["op"] for op in op_table(result.content)]
    assert "TRANSPOSE_CONV" not in ops and "DEQUANTIZE" not in ops[1:-1], ops
    assert ("DEPTH_TO_SPACE" in ops) == (after in ("crop_relu", "add")), ops


def test_bias_finer_than_the_accumulator_grid_warns_in_one_line(caplog):
    """caffe-jacinto 0.17's 16-bit biases: a bias with more fractional bits than
    s_in·s_w = 2^-(fl_in + fl_w) cannot be held by TFLite's int32 bias; the export says so
    for that layer, and the file is then within one step of the Keras model."""
    import logging

    CONFIGS["bias16"] = lambda: kerasq.QuantizationConfig(bitwidth_bias=16,
                                                         per_channel_weights=False)
    try:
        qmodel, data = _quantized(((2, 2), (4, 4), "same", None, (1, 1), True, None, "bias16"))
    finally:
        del CONFIGS["bias16"]
    with caplog.at_level(logging.WARNING, logger="kerasq.export.graph"):
        result = export_tflite(qmodel, target="int8", representative_data=data[:48],
                               verify_data=data[48:])
    lines = [r.getMessage() for r in caplog.records if "int32 bias grid" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith("up: ") and "\n" not in lines[0], lines
    assert result.report.max_error_steps <= 1, result.report.describe()
    # measured: 1 step here; the default 32-bit bias is linked to the grid and exact
    assert result.report.max_error_steps == 1, result.report.describe()
