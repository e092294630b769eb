"""int8 QDQ ONNX of kerasq-quantized nets, run by onnxruntime (its fused int8 kernels and,
separately, with graph optimizations off = float QDQ emulation) against the Keras
fake-quant model. The file's grids are checked against the float Caffe weights and the
formula (powers of two, zero points 0, codes in int8)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest
from conftest import shared_path

pytest.importorskip("onnxruntime")
pytest.importorskip("tf2onnx")

from kerasq._compat import keras


def to_mnist_size(x):  # 8x8 digits -> 24x24 -> padded 28x28, values in [0, 1]
    return np.pad(np.kron(x, np.ones((1, 3, 3, 1), np.float32)), ((0, 0), (2, 2), (2, 2), (0, 0)))


@pytest.fixture(scope="module")
def lenet():
    from kerasq.converters.caffe import load

    import kerasq
    from kerasq.demo import load_digits_data

    folder = shared_path("caffe-models", "lenet-mnist")
    model = load(folder / "lenet.prototxt", folder / "lenet_iter_10000.caffemodel",
                 input_shape={"data": [1, 1, 28, 28]})  # fmt: skip
    x_train, _, x_test, _ = load_digits_data()
    qmodel = kerasq.quantize_model(model)
    kerasq.calibrate(qmodel, to_mnist_size(x_train[:256]))
    ip2 = next(layer.name for layer in qmodel.layers if layer.name.endswith("ip2"))
    logits = keras.Model(qmodel.inputs, qmodel.get_layer(ip2).output)
    return model, qmodel, logits, to_mnist_size(x_test)


@pytest.fixture(scope="module")
def lenet_logits_int8(lenet):
    from kerasq.export.onnx import export_onnx

    _, _, logits, x = lenet
    return export_onnx(logits, target="int8", verify_data=x, verify=True)


def _arrays(proto):
    from onnx import numpy_helper

    return {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}


def test_lenet_int8_agrees_with_keras_in_onnxruntime(lenet_logits_int8):
    report = lenet_logits_int8.report
    (out,) = report.outputs
    assert report.samples == 450
    assert out.max_error_steps <= 1.0 and out.top1_agreement >= 0.995
    # measured: bit-identical logits (ORT fuses QLinearConv / MatMulIntegerToFloat and the
    # Keras model's biases are on the int32 grid s_in·s_w, as ORT quantizes them)
    assert out.exact_fraction == 1.0


def test_lenet_int8_float_emulation_is_identical_too(lenet, lenet_logits_int8):
    from kerasq.export.onnx import OnnxRunner, compare

    _, _, logits, x = lenet
    runner = OnnxRunner(lenet_logits_int8.content, optimize=False)
    got = runner({runner.input_names[0]: x})[runner.output_names[0]]
    step = lenet_logits_int8.report.outputs[0].output_step
    assert compare("logits", got, np.asarray(logits(x)), step).exact_fraction == 1.0


def test_lenet_int8_file_is_qdq_on_power_of_two_grids(lenet, lenet_logits_int8):
    import onnx

    model = lenet[0]
    proto = onnx.load_from_string(lenet_logits_int8.content)
    arrays = _arrays(proto)
    kinds = [n.op_type for n in proto.graph.node]
    assert "QLinearConv" not in kinds  # QDQ form
    qs = [n for n in proto.graph.node if n.op_type == "QuantizeLinear"]
    dqs = [n for n in proto.graph.node if n.op_type == "DequantizeLinear"]
    assert len(qs) >= 5  # input, conv1, conv2, relu1 / ip1, ip2
    for node in qs + dqs:
        scale, zero = arrays[node.input[1]], arrays[node.input[2]]
        assert np.all(zero == 0), node.name
        assert zero.dtype in (np.int8, np.uint8)
        for s in np.atleast_1d(scale):
            mant, _ = math.frexp(float(s))
            assert mant == 0.5, f"{node.name}: scale {s} is not a power of two"
    # weights: int8 codes behind a per-channel DequantizeLinear, within half a step of the
    # float Caffe weights (the reference: the converted float model's kernels)
    weights = [n for n in dqs if n.input[0] in arrays and arrays[n.input[0]].dtype == np.int8]
    assert {n.name.split("_weight")[0] for n in weights} == {"conv1", "conv2", "ip1", "ip2"}
    for node in weights:
        layer = node.name.split("_weight")[0]
        codes, scale = arrays[node.input[0]], arrays[node.input[1]]
        axis = next(a.i for a in node.attribute if a.name == "axis")
        kernel = model.get_layer(layer).get_weights()[0]
        assert scale.shape == (kernel.shape[-1],)  # one scale per output channel
        shape = [1] * codes.ndim
        shape[axis] = -1
        deq = codes.astype(np.float32) * scale.reshape(shape)
        if codes.ndim == 4:  # ONNX Conv OIHW -> Keras HWIO
            deq = deq.transpose(2, 3, 1, 0)
        deq = deq.reshape(kernel.shape)
        step = np.broadcast_to(scale, kernel.shape[-1:])
        want = np.clip(kernel, -128 * step, 127 * step)  # 8-bit codes saturate
        assert np.all(np.abs(deq - want) <= 0.5 * step + 1e-7), layer


def test_lenet_int8_with_softmax_keeps_top1(lenet):
    from kerasq.export.onnx import export_onnx

    _, qmodel, _, x = lenet
    result = export_onnx(qmodel, target="int8", verify_data=x, verify=False)
    # the probabilities' 1/256 grid amplifies a one-step logit tie into several steps;
    # the decision does not move
    assert result.report.outputs[0].top1_agreement >= 0.995


def test_power2_symmetric_widens_affine_ranges_to_symmetric_power_of_two():
    """tfmot's own input quantizer (affine min/max) -> per-tensor symmetric 2^k grid."""
    import onnx

    from kerasq.export.onnx import _qdq_activations, _symmetric_grid

    # the formula: smallest 2^k with [low, high] inside [-128, 127]·2^k (or [0, 255]·2^k)
    for low, high in [(-1.0, 3.0), (-0.3, 0.2), (0.0, 6.0), (-5.0, -1.0)]:
        scale, dtype = _symmetric_grid(low, high)
        k = math.log2(scale)
        assert k == int(k)
        lo, hi = (0, 255) if dtype == np.uint8 else (-128, 127)
        assert lo * scale <= low and high <= hi * scale
        assert not (lo * scale / 2 <= low and high <= hi * scale / 2)
    from onnx import helper, numpy_helper

    scale = numpy_helper.from_array(np.array(6.0 / 255, np.float32), "s")
    zero = numpy_helper.from_array(np.array(43, np.uint8), "z")
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="q"),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], name="dq")]  # fmt: skip
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [4])],
        [scale, zero],
    )  # fmt: skip
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    plain = onnx.ModelProto()
    plain.CopyFrom(proto)
    assert _qdq_activations(plain, power2_symmetric=False) == []
    assert [n.input[2] for n in plain.graph.node] == ["z", "z"]  # left affine
    assert _qdq_activations(proto, power2_symmetric=True) == []
    arrays = _arrays(proto)
    for node in proto.graph.node:
        assert float(arrays[node.input[1]]) == 2.0**-4  # 43·6/255 ≈ 1.01 below, 5 above
        assert arrays[node.input[2]] == 0 and arrays[node.input[2]].dtype == np.int8


def test_power2_symmetric_file_equals_a_dfp_input_grid_export():
    """A model with tfmot's affine input quantizer (range [-0.7, 2.3], zero point != 0):
    with power2_symmetric every activation is per-tensor 2^-k / zero point 0, and the file
    computes exactly what the same net with a DFP input grid 2^-5 (the smallest symmetric
    power of two covering the range: 0.7/128, 2.3/127 <= 2^-5) exports to."""
    import onnx
    from export.qmodels import conv_net, quantize_for_test

    from kerasq.export.onnx import OnnxRunner, export_onnx

    x = np.random.RandomState(0).uniform(-0.7, 2.3, (64, 8, 8, 1)).astype(np.float32)
    affine = quantize_for_test(conv_net(), x)
    plain = onnx.load_from_string(export_onnx(affine, target="int8").content)
    zeros = [_arrays(plain)[n.input[2]] for n in plain.graph.node if n.op_type == "QuantizeLinear"]
    assert any(z != 0 for z in zeros)  # without the option the affine input stays affine
    tidl = export_onnx(affine, target="int8", power2_symmetric=True).content
    proto = onnx.load_from_string(tidl)
    arrays = _arrays(proto)
    for node in proto.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            scale, zero = arrays[node.input[1]], arrays[node.input[2]]
            assert np.all(zero == 0) and zero.dtype in (np.int8, np.uint8), node.name
            assert all(math.frexp(float(v))[0] == 0.5 for v in np.atleast_1d(scale)), node.name
            if node.op_type == "QuantizeLinear":
                assert scale.ndim == 0, node.name  # per-tensor activations
    reference = quantize_for_test(conv_net(), x, input_fl=5)
    want = export_onnx(reference, target="int8").content
    ours, theirs = OnnxRunner(tidl), OnnxRunner(want)
    got = ours({ours.input_names[0]: x})[ours.output_names[0]]
    ref = theirs({theirs.input_names[0]: x})[theirs.output_names[0]]
    np.testing.assert_array_equal(got, ref)


def test_int8_needs_a_quantized_model(lenet):
    from kerasq.errors import ExportError
    from kerasq.export.onnx import export_onnx

    with pytest.raises(ExportError, match="needs a kerasq-quantized"):
        export_onnx(lenet[0], target="int8")
    with pytest.raises(ExportError, match="unknown ONNX target"):
        export_onnx(lenet[0], target="int16x8")


def test_float_target_of_quantized_model_is_exact(lenet):
    from kerasq.export.onnx import export_onnx

    _, qmodel, _, x = lenet
    result = export_onnx(qmodel, target="float", verify_data=x[:100])
    assert result.report.outputs[0].max_abs_error == 0.0


def test_mismatch_names_first_diverging_layer(lenet):
    """A file from the float LeNet checked against a copy whose conv2 weights changed:
    verification fails and names conv2 (not conv1, not the later layers)."""
    from kerasq.export.onnx import export_onnx, first_divergence, verify_onnx

    model, _, _, x = lenet
    content = export_onnx(model, target="float").content
    changed = keras.models.clone_model(model)
    changed.set_weights(model.get_weights())
    w, b = changed.get_layer("conv2").get_weights()
    changed.get_layer("conv2").set_weights([w * 1.01, b])
    report = verify_onnx(content, changed, x[:16])
    assert not report.ok()
    where = first_divergence(content, changed, x[:16])
    assert where is not None and where.startswith("conv2 ")


def test_int8_disagreement_raises_naming_the_first_tie(lenet, tmp_path):
    """LeNet quantized with rounding "nearest" (ties away from zero) where ONNX's
    QuantizeLinear rounds ties to even: the softmax differs by more than a step, the export
    raises VerificationError naming the first quantized tensor that met a tie (the
    float-emulated file and the Keras model agree up to it), and writes no file."""
    import re

    import kerasq
    from kerasq.errors import VerificationError
    from kerasq.export.onnx import export_onnx, first_divergence
    from kerasq.schemes.config import QuantizationConfig

    model, _, _, x = lenet
    qmodel = kerasq.quantize_model(model, QuantizationConfig(rounding="nearest"))
    kerasq.calibrate(qmodel, x[:256])
    path = tmp_path / "q.onnx"
    with pytest.raises(VerificationError) as info:
        export_onnx(qmodel, path, target="int8", verify_data=x)
    assert not path.exists()
    match = re.search(r"first diverging layer: (\S+) \(max \|Δ\| ([0-9.e-]+)\)", str(info.value))
    assert match, str(info.value)
    # independently: the layer's own tensor differs, every layer before it matches
    from kerasq.export.onnx import _deploy_int8

    result = export_onnx(qmodel, target="int8", verify=False)

    graph = _deploy_int8(qmodel)[0]
    names = [layer.name for layer in graph.layers]
    assert match.group(1) in names
    # a rounding difference appears at a quantizer (a tensor rounded onto its grid)
    assert type(graph.get_layer(match.group(1))).__name__ in ("GridQuantize", "AffineFakeQuant")
    upto = keras.Model(graph.inputs, graph.get_layer(match.group(1)).input)
    assert first_divergence(result.content, upto, x[:8]) is None


# -- caffe-jacinto nets --------------------------------------------------------------------
def _jacinto_qmodel(tmp_path, net, shape, seed):
    from kerasq.converters.caffe import load

    import kerasq

    base = shared_path("caffe-models", "jacinto")
    proto = base / net / "deploy.prototxt"
    weights = tmp_path / "model.caffemodel"
    subprocess.run(
        [sys.executable, str(base / "make_weights.py"), str(proto), str(weights), str(seed), "new"],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    model = load(proto, weights, input_shape={"data": list(shape)})
    rng = np.random.RandomState(seed)
    calib = rng.uniform(0, 255, (16,) + tuple(shape[2:]) + (shape[1],)).astype(np.float32)
    qmodel = kerasq.quantize_model(model)
    kerasq.calibrate(qmodel, calib)
    x = rng.uniform(0, 255, (32,) + tuple(shape[2:]) + (shape[1],)).astype(np.float32)
    return qmodel, x


@pytest.mark.slow
def test_jacinto_mobilenet_int8_qdq_agrees_with_keras(tmp_path):
    from kerasq.export.onnx import export_onnx

    qmodel, x = _jacinto_qmodel(tmp_path, "imagenet-mobilenet0.5", (1, 3, 64, 64), 5)
    result = export_onnx(qmodel, target="int8", verify_data=x, verify=False)
    print("mobilenet0.5", result.report.describe())
    (out,) = result.report.outputs
    assert out.top1_agreement >= 0.99, out.describe()


def _int8_weight_feeds(proto):
    """Conv node name -> (group, the int8 codes and per-channel scales of its weight)."""
    from onnx import numpy_helper

    arrays = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    dq = {n.output[0]: n for n in proto.graph.node if n.op_type == "DequantizeLinear"}
    feeds = {}
    for node in proto.graph.node:
        if node.op_type == "Conv" and node.input[1] in dq:
            w = dq[node.input[1]]
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            feeds[node.name] = (group, arrays.get(w.input[0]), arrays.get(w.input[1]))
    return feeds


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(1, 3, 64, 128), (1, 3, 128, 256)], ids=["64x128", "128x256"])
def test_jacinto_jsegnet_int8_qdq_agrees_with_keras(tmp_path, shape):
    """JSegNet21 (grouped and dilated convs, depthwise bilinear Deconvolution, Crop,
    ArgMax) as int8 QDQ: the class map equals the Keras model's, and the logits before
    the ArgMax (a file of their own) agree to the step, in the fused kernels and in the
    float QDQ emulation."""
    import onnx

    from kerasq.export.onnx import OnnxRunner, compare, export_onnx

    qmodel, x = _jacinto_qmodel(tmp_path, "cityscapes5-jsegnet21v2", shape, 6)
    x = x[:16]
    result = export_onnx(qmodel, target="int8", verify_data=x, verify=True)
    (classes,) = result.report.outputs
    assert classes.exact_fraction == 1.0, classes.describe()  # the per-pixel class index
    proto = onnx.load_from_string(result.content)
    producer = {out: node.op_type for node in proto.graph.node for out in node.output}
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    # the four zero-insertion upsamplings (Pad / Reshape between the grid and the Conv) get
    # the grid repeated before their Conv: a DequantizeLinear -> Conv onnxruntime fuses
    regrid = [n for n in convs if "input_regrid" in n.input[0]]
    assert len(regrid) == 4 and all(producer[n.input[0]] == "DequantizeLinear" for n in regrid)
    with tempfile.TemporaryDirectory() as tmp:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        opts.optimized_model_filepath = os.path.join(tmp, "fused.onnx")
        ort.InferenceSession(result.content, opts, providers=["CPUExecutionProvider"])
        fused = [n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node]
    # measured: every Conv but one runs as QLinearConv; onnxruntime 1.32 keeps out3a (group
    # 2; its input blob also feeds pool3) as a float FusedConv on the same values
    assert fused.count("QLinearConv") == len(convs) - 1 and "Conv" not in fused
    feeds = _int8_weight_feeds(proto)
    assert len(feeds) == len(convs)
    grouped = [v for v in feeds.values() if v[0] > 1]
    assert len(grouped) >= 8  # the grouped convs and the depthwise Deconvolutions
    for _, codes, scales in feeds.values():
        assert codes is not None and codes.dtype == np.int8
        assert scales.shape == (codes.shape[0],)  # per output channel
        assert all(math.frexp(float(s))[0] == 0.5 for s in scales)

    logits = keras.Model(qmodel.inputs, qmodel.layers[-1].input)
    result = export_onnx(logits, target="int8", verify_data=x, verify=True)
    (out,) = result.report.outputs
    print("jsegnet21", shape, out.describe())
    assert out.output_step is not None  # found behind the Crop
    assert out.max_error_steps <= 1.0 and out.top1_agreement >= 0.995, out.describe()
    assert out.exact_fraction == 1.0  # measured: bit-identical
    runner = OnnxRunner(result.content, optimize=False, keras_layout=True)
    got = runner({runner.input_names[0]: x})[runner.output_names[0]]
    emulated = compare("logits", got, np.asarray(logits(x)), out.output_step)
    assert emulated.exact_fraction == 1.0, emulated.describe()
