"""Caffe input preprocessing (``kerasq convert --mean/--scale/--swap-rb``) in int8 files,
through the command line: the file, run by ai-edge-litert's default interpreter, equals the
reloaded ``q.h5`` bit for bit on held-out inputs, and the preprocessing runs in int8 (the
only float operators are the Softmax island kept on purpose). Preprocessing without an
exact int8 form is refused with an error naming the layer and the ways out, among them
``--preprocessing outside``: the file then takes the preprocessed tensor, the constants
go to ``<file>.preprocessing.json``, and the file fed with the sidecar's preprocessing
(applied here in numpy straight from the JSON, not through kerasq) equals ``q.h5`` fed
with the raw inputs, bit for bit.
"""

from __future__ import annotations

import dataclasses

import pytest
from conftest import shared_path
from export import real_net_matrix as matrix

from kerasq.export.graph import FLOAT_ISLAND
from kerasq.export.verify import op_table

LENET = matrix.BY_NAME["lenet"]
CIFAR = matrix.BY_NAME["cifar10-quick"]


def _float_ops(content: bytes) -> list[tuple[str, str]]:
    """(op, output names) of every operator computing in float, QUANTIZE/DEQUANTIZE aside."""
    import numpy as np

    found = []
    for op in op_table(content):
        if op["op"] in ("QUANTIZE", "DEQUANTIZE"):
            continue
        if any(d == np.float32 for d in op["inputs"] + op["outputs"] if d is not None):
            found.append((op["op"], ",".join(op.get("output_names", []))))
    return found


CASES = [
    # (net, convert arguments, input range)
    pytest.param(LENET, ("--scale", "0.00390625", "--mean", "32"), (0.0, 255.0),
                 id="lenet-mean-scale"),
    pytest.param(CIFAR, ("--mean", "125,123,114", "--swap-rb"), (0.0, 255.0),
                 id="cifar10-mean-swap"),
]


@pytest.mark.parametrize("net,extra,limits", CASES)
def test_preprocessing_exports_bit_identical(net, extra, limits, tmp_path):
    shared_path("caffe-models", net.prototxt)
    net = dataclasses.replace(net, extra=net.extra + extra, low=limits[0], high=limits[1])
    result = matrix.run_net(net, tmp_path)
    assert result.stage == "done", result.line()
    for output in result.outputs:
        assert output.max_steps == 0 and output.exact_fraction == 1.0, result.line()
    float_ops = _float_ops((tmp_path / "q.tflite").read_bytes())
    # only the Softmax output runs in float (on purpose); the preprocessing is int8
    assert all(FLOAT_ISLAND in names and "_preprocess" not in names
               for _, names in float_ops), float_ops


def test_inexact_preprocessing_names_layer_and_fix(tmp_path):
    shared_path("caffe-models", CIFAR.prototxt)
    net = dataclasses.replace(CIFAR, extra=("--mean", "123.68,116.78,103.94",
                                            "--scale", "0.017"), low=0.0, high=255.0)
    result = matrix.run_net(net, tmp_path, verify=False)
    assert result.stage == "export"
    assert "data_preprocess" in result.message
    assert "0.017 is not a power of two" in result.message
    assert "--target float" in result.message
    assert "--preprocessing outside" in result.message
    assert "--int8" not in result.message  # the quantization-config way out does not apply
    assert not (tmp_path / "q.tflite").exists()


# -- preprocessing left outside the file ---------------------------------------------------

def _sidecar_preprocess(json_path, x):
    """The sidecar's preprocessing in plain numpy, read from the JSON as a device would:
    round to the input grid (ties to even), reverse the channels, subtract the mean values
    or image, multiply by the scale, all in float32."""
    import json

    import numpy as np

    spec = json.loads(json_path.read_text())
    assert spec["layout"] == "NHWC"
    x = np.asarray(x, np.float32)
    grid = spec["input_grid"]
    if grid is not None:
        x = np.clip(np.rint(x / np.float32(grid["step"])) * np.float32(grid["step"]),
                    grid["min"], grid["max"]).astype(np.float32)
        assert grid["rounding"] == "nearest_even"  # what np.rint does
    if spec["swap_rb"]:
        x = x[..., ::-1]
    if spec["mean"] is not None:
        x = x - np.float32(spec["mean"])
    if spec["mean_image"] is not None:
        mean = np.load(json_path.parent / spec["mean_image"]["file"])
        assert list(mean.shape) == spec["mean_image"]["shape"]
        x = x - mean.astype(np.float32)
    return (x * np.float32(spec["scale"])).astype(np.float32)


def _run_file(path, x):
    """The file in ai-edge-litert's default interpreter: (input name, output) for ``x``."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    inp = interp.get_input_details()[0]
    interp.resize_tensor_input(inp["index"], [len(x), *inp["shape"][1:]])
    interp.allocate_tensors()
    interp.set_tensor(inp["index"], np.ascontiguousarray(x, np.float32))
    interp.invoke()
    out = interp.get_output_details()[0]
    got = interp.get_tensor(out["index"]).astype(np.float64)
    scale, zero = out["quantization"]
    return inp["name"], (got - zero) * scale if scale else got, scale


def _check_outside_file(tmp_path, tflite, h5, test, input_name="data"):
    import kerasq
    import numpy as np

    sidecar = tmp_path / f"{tflite}.preprocessing.json"
    assert sidecar.exists()
    name, got, _ = _run_file(tmp_path / tflite, _sidecar_preprocess(sidecar, test))
    assert f"{input_name}_preprocessed" in name
    want = np.asarray(kerasq.load_model(str(tmp_path / h5))(test, training=False), np.float64)
    assert np.array_equal(got.reshape(want.shape), want), (
        f"max abs error {np.abs(got.reshape(want.shape) - want).max()}")
    assert np.mean(np.argmax(want, -1) == np.argmax(got.reshape(want.shape), -1)) == 1.0
    float_ops = _float_ops((tmp_path / tflite).read_bytes())
    assert all(FLOAT_ISLAND in names for _, names in float_ops), float_ops


def _inputs(shape, low, high, n, seed):
    import numpy as np

    return np.random.default_rng(seed).uniform(low, high, (n, *shape)).astype(np.float32)


def test_lenet_non_pow2_scale_outside_is_bit_identical(tmp_path):
    """LeNet with --scale 0.0125 (1/80, no int8 form) and --mean 33: `kerasq export
    --preprocessing outside`."""
    import numpy as np

    shared_path("caffe-models", LENET.prototxt)
    np.save(tmp_path / "calib.npy", _inputs(LENET.shape_nhwc, 0, 255, 64, 0))
    test = _inputs(LENET.shape_nhwc, 0, 255, 64, 1)
    np.save(tmp_path / "test.npy", test)
    for args in (
        ["convert", str(matrix.MODELS / LENET.prototxt), str(matrix.MODELS / LENET.caffemodel),
         "--scale", "0.0125", "--mean", "33", "-o", "model.h5"],
        ["quantize", "model.h5", "--calibration", "calib.npy", "-o", "q.h5"],
    ):
        proc = matrix._cli(*args, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-800:]
    proc = matrix._cli("export", "q.h5", "-o", "q.tflite", "--data", "test.npy", "--verify",
                       cwd=tmp_path)
    assert proc.returncode == 2 and "--preprocessing outside" in proc.stderr
    assert "0.0125 is not a power of two" in proc.stderr
    proc = matrix._cli("export", "q.h5", "-o", "q.tflite", "--data", "test.npy", "--verify",
                       "--preprocessing", "outside", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-800:]
    assert "data_preprocessed = (data - [33]) * 0.0125" in proc.stdout
    assert "wrote q.tflite.preprocessing.json" in proc.stdout
    assert "100.00% identical" in proc.stdout
    _check_outside_file(tmp_path, "q.tflite", "q.h5", test)
    proc = matrix._cli("export", "q.h5", "-o", "q.onnx", "--preprocessing", "outside",
                       cwd=tmp_path)
    assert proc.returncode == 2 and "applies to TFLite files" in proc.stderr
    assert not (tmp_path / "q.onnx").exists()


def test_cifar_mean_image_outside_in_one_convert_command(tmp_path):
    """CIFAR-10 quick with a per-pixel mean image (.binaryproto) and --swap-rb, Caffe ->
    int8 TFLite in one `kerasq convert ... --tflite --preprocessing outside`."""
    import numpy as np

    mean_file = shared_path("caffe-models", "mean-binaryproto", "mean.binaryproto")
    shared_path("caffe-models", CIFAR.prototxt)
    np.save(tmp_path / "calib.npy", _inputs(CIFAR.shape_nhwc, 0, 255, 64, 0))
    test = _inputs(CIFAR.shape_nhwc, 0, 255, 64, 1)
    proc = matrix._cli("convert", str(matrix.MODELS / CIFAR.prototxt),
                       str(matrix.MODELS / CIFAR.caffemodel), "--mean", str(mean_file),
                       "--swap-rb", "--quantize", "--calibration", "calib.npy",
                       "--tflite", "q.tflite", "--verify", "--preprocessing", "outside",
                       "-o", "q.h5", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-800:]
    assert "mean image 32x32x3" in proc.stdout
    mean_npy = tmp_path / "q.tflite.preprocessing.mean.npy"
    assert mean_npy.exists()
    # the sidecar's mean image is the .binaryproto's, CHW -> HWC, read here from the
    # protobuf bytes: num=1 channels=3 height=32 width=32, then field 5 packed (12288 bytes)
    raw = mean_file.read_bytes()
    assert raw[:11] == bytes.fromhex("08011003182020202a8060")
    want = np.frombuffer(raw[11:], "<f4").reshape(3, 32, 32).transpose(1, 2, 0)
    assert np.array_equal(np.load(mean_npy), want.astype(np.float32))
    _check_outside_file(tmp_path, "q.tflite", "q.h5", test)


def test_api_outside_float_target_and_sidecar_round_trip(tmp_path):
    """The Python API: preprocessing="outside" for the float target too; the sidecar reads
    back (load_preprocessing) to the same preprocessing; a model without preprocessing and
    an unknown mode are refused."""
    import numpy as np

    import kerasq
    from kerasq.converters import caffe
    from kerasq.errors import ExportError
    from kerasq.export.preprocessing import load_preprocessing
    from kerasq.export.tflite import export_tflite

    shared_path("caffe-models", LENET.prototxt)
    model = caffe.load(matrix.MODELS / LENET.prototxt, matrix.MODELS / LENET.caffemodel,
                       scale=1 / 58.8, mean=[20.5], swap_rb=False)
    qmodel = kerasq.quantize_model(model)
    kerasq.calibrate(qmodel, _inputs(LENET.shape_nhwc, 0, 255, 32, 0))
    test = _inputs(LENET.shape_nhwc, 0, 255, 32, 1)
    for target in ("int8", "float"):
        path = tmp_path / f"m-{target}.tflite"
        result = export_tflite(qmodel, path, target=target, verify_data=test, verify=True,
                               preprocessing="outside")
        assert result.report.max_abs_error == 0.0, result.report.describe()
        assert result.sidecars == [f"{path}.preprocessing.json"]
        prep = load_preprocessing(result.sidecars[0])
        assert prep.tensor_name == "data_preprocessed" and prep.scale == 1 / 58.8
        assert np.array_equal(prep.apply(test), result.preprocessing.apply(test))
        assert np.array_equal(prep.apply(test), _sidecar_preprocess(path.parent / (
            path.name + ".preprocessing.json"), test))
    with pytest.raises(ExportError, match="--preprocessing outside"):
        export_tflite(qmodel, tmp_path / "inside.tflite", target="int8")
    assert not (tmp_path / "inside.tflite").exists()
    with pytest.raises(ExportError, match="unknown preprocessing"):
        export_tflite(qmodel, target="int8", preprocessing="device")
    plain = kerasq.quantize_model(caffe.load(matrix.MODELS / LENET.prototxt,
                                             matrix.MODELS / LENET.caffemodel))
    kerasq.calibrate(plain, _inputs(LENET.shape_nhwc, 0, 1, 32, 0))
    with pytest.raises(ExportError, match="no input preprocessing"):
        export_tflite(plain, tmp_path / "plain.tflite", preprocessing="outside")
    assert not (tmp_path / "plain.tflite").exists()
