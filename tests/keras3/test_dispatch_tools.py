"""The bit-width search, the quantization / run report and the integer runner on Keras 3
models (kerasq.dispatch: through the tf_keras twin). Reference: the tf_keras path run on an
independent tf_keras copy of the same float model (kerasq.keras3.twin.to_tf_keras, the
tf_keras search / report / integer runner), and the Keras 3 model's own outputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

import kerasq
import kerasq.integer
from kerasq._compat import keras3
from kerasq.cli import main
from kerasq.keras3 import twin as k3twin
from kerasq.schemes.api import quantize_model as tf_keras_quantize
from kerasq.schemes.calibration import calibrate as tf_keras_calibrate
from kerasq.schemes.report import format_report
from kerasq.schemes.report import report as tf_keras_report
from kerasq.schemes.search import search_bitwidths as tf_keras_search

keras = keras3()


@pytest.fixture(scope="module")
def trained(k3, digits):
    x, y, _, _ = digits
    return k3.train(k3.sequential(), x, y, epochs=3)


@pytest.fixture(scope="module")
def pair(trained, digits):
    """(calibrated Keras 3 model, calibrated tf_keras reference), same float weights."""
    x, _, _, _ = digits
    q3 = kerasq.calibrate(kerasq.quantize_model(trained), x[:256])
    ref = tf_keras_quantize(k3twin.to_tf_keras(trained))
    tf_keras_calibrate(ref, x[:256])
    return q3, ref


def _rows(rows):
    """Report rows as comparable tuples (nan == nan)."""
    out = []
    for row in rows:
        d = row.to_dict()
        out.append(tuple((k, "nan" if isinstance(v, float) and math.isnan(v) else v)
                         for k, v in sorted(d.items())))
    return out


def test_search_bitwidths_keras3_equals_the_tf_keras_search(trained, digits):
    x, _, xt, yt = digits
    seen = []

    def accuracy(model):
        seen.append(kerasq._compat.is_keras3_model(model))
        out = model.predict(xt[:300], batch_size=100, verbose=0)
        return float(np.mean(np.asarray(out).argmax(-1) == yt[:300]))

    kwargs = dict(candidates=(8, 4), parts=("conv_weights", "activations"))
    got = kerasq.search_bitwidths(trained, accuracy, x[:256], 1.0, **kwargs)
    assert seen and all(seen)  # eval_fn saw the Keras 3 baseline and Keras 3 candidates
    want = tf_keras_search(k3twin.to_tf_keras(trained), accuracy, x[:256], 1.0, **kwargs)
    assert got.baseline == want.baseline
    assert [(r.part, r.bitwidth, r.score, r.passed) for r in got.rows] == [
        (r.part, r.bitwidth, r.score, r.passed) for r in want.rows]
    assert got.bitwidths == want.bitwidths and got.score == want.score
    assert got.config.to_dict() == want.config.to_dict()


def test_quantization_report_keras3_equals_tf_keras(pair, digits):
    _, _, xt, _ = digits
    q3, ref = pair
    got = kerasq.dispatch.quantization_report(q3, xt[:128])
    want = tf_keras_report(ref, xt[:128])
    assert len(got) >= 8 and any(r.sqnr_db is not None and r.tensor == "output" for r in got)
    assert _rows(got) == _rows(want)


def test_run_report_keras3_equals_tf_keras(pair, digits):
    from kerasq.report import build_report

    _, _, xt, _ = digits
    q3, ref = pair
    got = build_report(q3, xt[:64], latency_runs=1).to_dict()
    want = build_report(ref, xt[:64], latency_runs=1).to_dict()
    for key in ("quantization", "sparsity", "weight_histograms", "activation_histograms",
                "parameters", "layers", "model_name"):
        assert got[key] == want[key], key


def test_integer_run_and_prepare_keras3_equal_tf_keras_and_the_model(pair, digits, k3):
    _, _, xt, _ = digits
    q3, ref = pair
    got = kerasq.run_integer(q3, xt[:100])
    want = kerasq.integer.run(ref, xt[:100])
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got, k3.predict(q3, xt[:100]))  # == qmodel(x) bit for bit
    program = kerasq.prepare_integer(q3)
    np.testing.assert_array_equal(program(xt[:100]), got)
    ints = kerasq.run_integer(q3, xt[:4], return_integers=True)
    wants = kerasq.integer.run(ref, xt[:4], return_integers=True)
    np.testing.assert_array_equal(getattr(ints, "values", ints), getattr(wants, "values", wants))


def test_integer_run_refuses_a_float_keras3_model(trained, digits):
    _, _, xt, _ = digits
    with pytest.raises(kerasq.errors.ModelFormatError, match="float model"):
        kerasq.run_integer(trained, xt[:2])


def test_cli_report_on_a_keras3_file_prints_the_tf_keras_table(trained, pair, digits,
                                                                tmp_path, capsys):
    x, _, _, _ = digits
    _, ref = pair
    float_path = tmp_path / "f3.keras"
    trained.save(float_path)
    np.save(tmp_path / "cal.npy", x[:256])
    out = tmp_path / "q3.keras"
    assert main(["quantize", str(float_path), "-o", str(out), "--report",
                 "--calibration", str(tmp_path / "cal.npy")]) == 0
    printed = capsys.readouterr().out
    assert format_report(tf_keras_report(ref, x[:256])) in printed
    assert out.exists()


def test_cli_search_on_a_keras3_file_chooses_what_the_tf_keras_search_chooses(
        trained, digits, tmp_path, capsys):
    from kerasq.cli.quantize import accuracy_fn

    x, _, xt, yt = digits
    float_path = tmp_path / "f3.keras"
    trained.save(float_path)
    np.save(tmp_path / "cal.npy", x[:256])
    np.savez(tmp_path / "eval.npz", x=xt[:300], y=yt[:300])
    out = tmp_path / "q3.keras"
    assert main(["quantize", str(float_path), "-o", str(out), "--search",
                 "--candidates", "8,4", "--calibration", str(tmp_path / "cal.npy"),
                 "--eval", str(tmp_path / "eval.npz")]) == 0
    printed = capsys.readouterr().out
    want = tf_keras_search(k3twin.to_tf_keras(trained), accuracy_fn(xt[:300], yt[:300]),
                           x[:256], 1.0, candidates=(8, 4))
    assert want.table() in printed and out.exists()


def test_cli_inspect_report_on_a_keras3_file_equals_the_tf_keras_report(pair, digits,
                                                                        tmp_path, capsys):
    import json

    from kerasq.report import build_report

    _, _, xt, _ = digits
    q3, ref = pair
    path = tmp_path / "q3.keras"
    q3.save(path)
    np.save(tmp_path / "x.npy", xt[:64])
    report = tmp_path / "r.json"
    assert main(["inspect", str(path), "--data", str(tmp_path / "x.npy"), "--report",
                 str(report)]) == 0
    printed = capsys.readouterr().out
    assert format_report(tf_keras_report(ref, xt[:64])) in printed
    got = json.loads(report.read_text())
    want = build_report(ref, xt[:64], latency_runs=1).to_dict()
    for key in ("quantization", "sparsity", "weight_histograms", "activation_histograms"):
        assert got[key] == json.loads(json.dumps(want[key])), key


def test_tf_keras_only_functions_name_the_keras3_entry_points(pair, digits):
    _, _, xt, _ = digits
    q3, _ = pair
    with pytest.raises(kerasq.errors.ModelFormatError, match="kerasq.run_integer"):
        kerasq.integer.run(q3, xt[:2])
    with pytest.raises(kerasq.errors.ModelFormatError, match="Keras 3 model"):
        tf_keras_report(q3, xt[:2])
