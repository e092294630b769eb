"""`-o *.onnx` on `kerasq convert` and `kerasq export`: the file runs in onnxruntime and
matches real Caffe outputs / the Keras model; bad options give one line and no file."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import shared_path

from kerasq.cli import main

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("tf2onnx")


def test_convert_caffe_to_onnx_matches_caffe(tmp_path, capsys):
    folder = shared_path("caffe-golden", "lenet")
    out = tmp_path / "net.onnx"
    code = main(["convert", str(folder / "deploy.prototxt"), str(folder / "model.caffemodel"),
                 "-o", str(out)])  # fmt: skip
    assert code == 0
    assert "verification (onnxruntime)" in capsys.readouterr().out
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = np.load(folder / "input.npy").transpose(0, 2, 3, 1)
    (prob,) = session.run(None, {session.get_inputs()[0].name: x})
    want = np.load(folder / "blobs" / "prob.npy").reshape(prob.shape)
    np.testing.assert_allclose(prob, want, rtol=1e-4, atol=1e-5)


def test_power2_symmetric_needs_int8(tmp_path, capsys):
    folder = shared_path("caffe-golden", "lenet")
    out = tmp_path / "net.onnx"
    code = main(["convert", str(folder / "deploy.prototxt"), str(folder / "model.caffemodel"),
                 "-o", str(out), "--power2-symmetric"])  # fmt: skip
    assert code == 2 and not out.exists()
    err = capsys.readouterr().err
    assert err.startswith("kerasq: error: ") and "power2_symmetric" in err
    assert "Traceback" not in err


@pytest.fixture(scope="module")
def saved_qmodel(tmp_path_factory):
    import kerasq
    from kerasq.demo import build_cnn, load_digits_data

    x_train, _, x_test, _ = load_digits_data()
    qmodel = kerasq.quantize_model(build_cnn())
    kerasq.calibrate(qmodel, x_train[:128])
    d = tmp_path_factory.mktemp("q")
    qmodel.save(d / "q.h5")
    np.save(d / "x.npy", x_test[:64])
    return d


def test_export_int8_onnx_verified(saved_qmodel, capsys):
    out = saved_qmodel / "q.onnx"
    code = main(["export", str(saved_qmodel / "q.h5"), "-o", str(out), "--target", "int8",
                 "--data", str(saved_qmodel / "x.npy"), "--verify", "--power2-symmetric"])  # fmt: skip
    assert code == 0 and out.stat().st_size > 0
    text = capsys.readouterr().out
    assert "ONNX int8" in text and "top-1 agreement" in text
    import onnx

    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops


def test_export_float_onnx_of_a_saved_model(saved_qmodel, capsys):
    """`kerasq export MODEL -o model.onnx` (target float): the file runs in onnxruntime and
    reproduces the reloaded quantized model's fake-quant outputs."""
    import kerasq

    out = saved_qmodel / "f.onnx"
    code = main(["export", str(saved_qmodel / "q.h5"), "-o", str(out), "--target", "float",
                 "--data", str(saved_qmodel / "x.npy")])  # fmt: skip
    assert code == 0
    assert "ONNX float" in capsys.readouterr().out
    x = np.load(saved_qmodel / "x.npy")
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x})
    want = np.asarray(kerasq.load_model(str(saved_qmodel / "q.h5"))(x))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * max(1.0, np.abs(want).max()))


def test_export_onnx_rejects_tflite_only_target(saved_qmodel, capsys):
    out = saved_qmodel / "h.onnx"
    code = main(["export", str(saved_qmodel / "q.h5"), "-o", str(out), "--target", "int16x8"])
    assert code == 2 and not out.exists()
    assert "ONNX targets" in capsys.readouterr().err


def test_convert_caffe_to_int8_onnx_in_one_command(tmp_path, capsys):
    """Caffe LeNet -> kerasq default config (as JSON) -> calibrated -> int8 QDQ ONNX,
    verified in onnxruntime on the calibration digits."""
    from kerasq.demo import load_digits_data
    from kerasq.schemes.config import QuantizationConfig

    folder = shared_path("caffe-models", "lenet-mnist")
    config = tmp_path / "kerasq.json"
    config.write_text(QuantizationConfig().to_json())
    x = load_digits_data()[0][:64]
    x = np.pad(np.kron(x, np.ones((1, 3, 3, 1), np.float32)), ((0, 0), (2, 2), (2, 2), (0, 0)))
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "q.onnx"
    code = main(["convert", str(folder / "lenet.prototxt"),
                 str(folder / "lenet_iter_10000.caffemodel"), "--input-shape", "data:1,1,28,28",
                 "--quantize", "--quantize-config", str(config), "--calibration",
                 str(tmp_path / "x.npy"), "-o", str(out)])  # fmt: skip
    assert code == 0
    text = capsys.readouterr().out
    assert "ONNX int8" in text and "top-1 agreement 100.00%" in text
    import onnx

    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    assert ops.count("QuantizeLinear") >= 5


def test_convert_nchw_file_runs_in_opencv_on_caffe_layout(tmp_path):
    """--nchw: the file takes and gives Caffe's NCHW blobs; OpenCV's ONNX importer runs it
    on the golden input and matches real Caffe's output."""
    cv2 = pytest.importorskip("cv2")
    folder = shared_path("caffe-golden", "conv_group")
    out = tmp_path / "net.onnx"
    code = main(["convert", str(folder / "deploy.prototxt"), str(folder / "model.caffemodel"),
                 "-o", str(out), "--nchw"])  # fmt: skip
    assert code == 0
    x = np.load(folder / "input.npy")
    want = np.load(folder / "blobs" / "conv.npy")
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x})
    atol = 1e-5 * max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=atol)
    net = cv2.dnn.readNetFromONNX(str(out))
    net.setInput(x)
    np.testing.assert_allclose(net.forward(), want, rtol=1e-4, atol=atol)
