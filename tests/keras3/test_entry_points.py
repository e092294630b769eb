"""Keras 3 models through kerasq.export.to_onnx, kerasq.evaluate and the CLI (`kerasq
quantize` / `kerasq export` on a Keras 3 .keras file). References: onnxruntime running
the file, the ai_edge_litert interpreter, numpy top-1 of the Keras 3 model's outputs."""

from __future__ import annotations

import numpy as np
import pytest

import kerasq
from kerasq._compat import keras3
from kerasq.cli import main

ort = pytest.importorskip("onnxruntime")
keras = keras3()


@pytest.fixture(scope="module")
def trained(k3, digits):
    x, y, _, _ = digits
    return k3.train(k3.sequential(), x, y, epochs=3)


@pytest.fixture(scope="module")
def calibrated(trained, digits):
    x, _, _, _ = digits
    qmodel = kerasq.quantize_model(trained)
    return kerasq.calibrate(qmodel, x[:256])


def _ort_run(content: bytes, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(content, providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x})
    return got


def test_to_onnx_float_keras3_model_runs_in_onnxruntime(trained, digits, k3):
    _, _, x_test, _ = digits
    x = x_test[:64]
    content = kerasq.export.to_onnx(trained, target="float")
    got = _ort_run(content, x)
    want = k3.predict(trained, x)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * max(1.0, np.abs(want).max()))


def test_to_onnx_quantized_keras3_model_float_and_int8(calibrated, digits, k3):
    from kerasq.export.onnx import export_onnx

    _, _, x_test, _ = digits
    x = x_test[:64]
    want = k3.predict(calibrated, x)  # the Keras 3 fake-quant model
    got = _ort_run(kerasq.export.to_onnx(calibrated, target="float"), x)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * max(1.0, np.abs(want).max()))
    result = export_onnx(calibrated, target="int8", verify_data=x, verify=True)
    (out,) = result.report.outputs
    assert out.max_error_steps <= 1.0 and out.top1_agreement >= 0.995
    got8 = _ort_run(result.content, x)
    assert np.mean(got8.argmax(-1) == want.argmax(-1)) >= 0.995


def test_evaluate_keras3_model_and_file(calibrated, digits, k3, tmp_path):
    from kerasq.evaluate import evaluate

    _, _, x_test, y_test = digits
    x, y = x_test[:200], y_test[:200]
    want = float(np.mean(k3.predict(calibrated, x).argmax(-1) == y))
    path = tmp_path / "q3.keras"
    calibrated.save(path)
    for model in (calibrated, str(path)):
        result = evaluate(model, x, y)
        (score,) = result.outputs
        assert score.accuracy == pytest.approx(want, abs=1e-12)
    tflite = kerasq.export.to_tflite(calibrated, target="int8")
    agree = evaluate(str(path), x, reference=tflite).outputs[0]
    assert agree.agreement >= 0.995


def test_cli_quantize_and_export_a_keras3_file(trained, digits, k3, tmp_path, capsys):
    from ai_edge_litert.interpreter import Interpreter

    x_train, _, x_test, _ = digits
    float_path, q_path = tmp_path / "f3.keras", tmp_path / "q3.keras"
    trained.save(float_path)
    np.save(tmp_path / "cal.npy", x_train[:256])
    np.save(tmp_path / "x.npy", x_test[:64])
    assert main(["quantize", str(float_path), "-o", str(q_path),
                 "--calibration", str(tmp_path / "cal.npy")]) == 0
    qmodel = kerasq.load_model(str(q_path))
    assert isinstance(qmodel, keras.Model)
    # the same as quantizing and calibrating in the API
    api = kerasq.calibrate(kerasq.quantize_model(trained), x_train[:256])
    x = x_test[:64]
    np.testing.assert_array_equal(k3.predict(qmodel, x), k3.predict(api, x))

    tfl = tmp_path / "q3.tflite"
    assert main(["export", str(q_path), "-o", str(tfl), "--target", "int8",
                 "--data", str(tmp_path / "x.npy"), "--verify"]) == 0
    interp = Interpreter(model_path=str(tfl))
    runner = interp.get_signature_runner()
    (name,) = runner.get_output_details()
    in_name = next(iter(runner.get_input_details()))
    details = runner.get_input_details()[in_name]
    scale, zero = details["quantization"]
    if details["dtype"] == np.int8:
        feed = np.clip(np.round(x / scale) + zero, -128, 127).astype(np.int8)
    else:
        feed = x.astype(np.float32)
    got = runner(**{in_name: feed})[name]
    out = runner.get_output_details()[name]
    if out["dtype"] == np.int8:
        s, z = out["quantization"]
        got = (got.astype(np.float32) - z) * s
    assert np.mean(got.argmax(-1) == k3.predict(qmodel, x).argmax(-1)) >= 0.995

    onnx_path = tmp_path / "q3.onnx"
    assert main(["export", str(q_path), "-o", str(onnx_path), "--target", "float",
                 "--data", str(tmp_path / "x.npy")]) == 0
    got = _ort_run(onnx_path.read_bytes(), x)
    want = k3.predict(qmodel, x)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * max(1.0, np.abs(want).max()))


def test_cli_keras3_refusals(trained, tmp_path, capsys):
    float_path = tmp_path / "f3.keras"
    trained.save(float_path)
    out = tmp_path / "q.h5"
    assert main(["quantize", str(float_path), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kerasq: error: ") and ".keras" in err and "Traceback" not in err
    assert not out.exists()
