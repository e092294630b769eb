"""The Keras 3 path on the JAX backend (a subprocess with KERAS_BACKEND=jax runs
jax_flow.py): calibration bit-identical to the tf_keras twin, QAT with fit, int8 export of
the JAX-trained model; its .keras file reloads on the TensorFlow backend here and matches
both the JAX model and the int8 file. The search, report and integer runner on the JAX
models equal the tf_keras path's on a tf_keras copy of the model."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import kerasq

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def jax_run(tmp_path_factory):
    pytest.importorskip("jax")
    out = tmp_path_factory.mktemp("jax")
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent.parent), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, str(HERE / "jax_flow.py"), str(out)], env=env,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads((out / "result.json").read_text())


def test_jax_calibration_and_qat(jax_run):
    _, result = jax_run
    assert result["backend"] == "jax"
    assert result["ptq_equals_twin"], result
    assert result["ptq_acc"] >= result["float_acc"] - 0.03
    assert result["qat_acc"] >= result["ptq_acc"] - 0.02


def test_jax_search_report_and_integer_runner_equal_the_tf_keras_path(jax_run):
    _, result = jax_run
    assert result["integer_equals_model"] and result["integer_equals_tf_keras"], result
    assert result["report_rows"] >= 8 and result["report_equals_tf_keras"], result
    assert result["search_rows"] == result["search_rows_tf_keras"], result
    assert len(result["search_rows"]) >= 1 and result["search_config_equal"], result


def test_jax_accuracy_matches_tf_keras_twin(jax_run):
    _, result = jax_run
    assert abs(result["parity_ptq_jax"] - result["parity_ptq_tf_keras"]) <= 0.2, result
    assert abs(result["parity_qat_jax"] - result["parity_qat_tf_keras"]) <= 0.2, result


def test_jax_trained_model_reloads_on_tensorflow_and_matches_its_int8_file(jax_run, digits, k3):
    from ai_edge_litert.interpreter import Interpreter

    out, _ = jax_run
    _, _, xt, _ = digits
    loaded = kerasq.load_model(out / "q.keras")
    here = k3.predict(loaded, xt)
    np.testing.assert_array_equal(here, np.load(out / "outputs.npz")["qat"])
    interp = Interpreter(model_path=str(out / "q.tflite"))
    interp.allocate_tensors()
    inp, res = interp.get_input_details()[0], interp.get_output_details()[0]
    rows = []
    for i in range(len(xt)):
        interp.set_tensor(inp["index"], xt[i:i + 1])
        interp.invoke()
        rows.append(interp.get_tensor(res["index"])[0].copy())
    np.testing.assert_array_equal(np.stack(rows), here)
