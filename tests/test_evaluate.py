"""``kerasq.evaluate``: the same scores for .h5 and .tflite, per output, checked against an
independent computation (Keras ``predict`` and ai-edge-litert's interpreter driven directly
by the test, then numpy).

The classifier is a small CNN trained on scikit-learn's real digits, quantized (DFP 8/8) and
exported to int8 TFLite; the two-output model has a softmax head and a regression head.
"""

from __future__ import annotations

import numpy as np
import pytest

from kerasq.errors import KerasqError


@pytest.fixture
def digits(digits_models):
    """The digits files of tests/conftest.py and the held-out samples."""
    root, x, y, _ = digits_models
    return root, x, y


def _interpreter_outputs(path, x):
    """Run a .tflite file sample by sample in the interpreter: float in, float out."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    outs = []
    for sample in x:
        value = sample[None]
        if inp["dtype"] != np.float32:
            scale, zero = inp["quantization"]
            value = np.clip(np.round(value / scale) + zero, -128, 127).astype(inp["dtype"])
        interp.set_tensor(inp["index"], value)
        interp.invoke()
        detail = interp.get_output_details()[0]
        o = interp.get_tensor(detail["index"])
        if detail["dtype"] != np.float32:
            scale, zero = detail["quantization"]
            o = (o.astype(np.float32) - zero) * scale
        outs.append(o[0])
    return np.stack(outs)


def test_accuracy_of_h5_and_tflite_equals_an_independent_count(digits):
    import kerasq
    from kerasq.evaluate import evaluate

    root, x, y = digits
    keras_out = kerasq.load_model(root / "q.h5").predict(x, verbose=0)
    tflite_out = _interpreter_outputs(root / "q.tflite", x)
    for path, out in ((root / "q.h5", keras_out), (root / "q.tflite", tflite_out)):
        result = evaluate(str(path), x, y)
        (score,) = result.outputs
        # the .tflite output carries the exporter's name for the layer (e.g. prob_output_q)
        assert score.name.startswith("prob") and score.kind == "classifier"
        assert score.samples == len(x)
        assert score.accuracy == pytest.approx(float(np.mean(out.argmax(1) == y)), abs=0)
        assert score.accuracy > 0.8  # a trained classifier, not chance
    # one-hot labels give the same accuracy
    onehot = np.eye(10, dtype="float32")[y]
    assert evaluate(str(root / "q.h5"), x, onehot).outputs[0].accuracy == pytest.approx(
        float(np.mean(keras_out.argmax(1) == y)))


def test_agreement_of_tflite_with_its_h5(digits):
    import kerasq
    from kerasq.evaluate import evaluate

    root, x, _ = digits
    keras_out = kerasq.load_model(root / "q.h5").predict(x, verbose=0)
    tflite_out = _interpreter_outputs(root / "q.tflite", x)
    result = evaluate(str(root / "q.tflite"), x, reference=str(root / "q.h5"))
    (score,) = result.outputs
    assert score.kind == "classifier" and score.reference_name == "prob"
    assert score.agreement == pytest.approx(
        float(np.mean(tflite_out.argmax(1) == keras_out.argmax(1))))
    assert score.max_abs_diff == pytest.approx(float(np.abs(tflite_out - keras_out).max()),
                                               abs=1e-6)
    assert score.identical == pytest.approx(float(np.mean(tflite_out == keras_out)))
    assert "agreement" in result.table() and "prob" in result.table()


def test_two_outputs_are_scored_each_by_its_kind(tmp_path):
    from kerasq._compat import keras, tf
    from kerasq.evaluate import evaluate

    keras.utils.set_random_seed(0)
    inp = keras.Input((6,))
    prob = keras.layers.Dense(3, activation="softmax", name="prob")(inp)
    box = keras.layers.Dense(4, name="box")(inp)
    model = keras.Model(inp, [prob, box])
    model.save(tmp_path / "two.h5")
    (tmp_path / "two.tflite").write_bytes(
        tf.lite.TFLiteConverter.from_keras_model(model).convert())
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 6)).astype("float32")
    labels = rng.integers(0, 3, 50)
    boxes = rng.normal(size=(50, 4)).astype("float32")
    p, b = model.predict(x, verbose=0)
    for path in ("two.h5", "two.tflite"):
        result = evaluate(str(tmp_path / path), x, {"prob": labels, "box": boxes},
                          reference=str(tmp_path / "two.h5"))
        scores = {o.name: o for o in result.outputs}
        assert scores["prob"].kind == "classifier" and scores["box"].kind == "regression"
        assert scores["prob"].accuracy == pytest.approx(float(np.mean(p.argmax(1) == labels)))
        assert scores["box"].mean_abs_error == pytest.approx(float(np.mean(np.abs(b - boxes))),
                                                             rel=1e-5)
        assert scores["box"].agreement is None  # no top-1 rule on a regression output
        assert scores["prob"].agreement == 1.0
        assert scores["box"].max_abs_diff < 1e-5
    # the regression head can be declared a classifier, and is then scored by top-1
    forced = evaluate(str(tmp_path / "two.h5"), x, reference=str(tmp_path / "two.tflite"),
                      kinds={"box": "classifier"})
    assert {o.name: o.kind for o in forced.outputs}["box"] == "classifier"


def test_bad_labels_are_one_line_errors(digits):
    from kerasq.evaluate import evaluate

    root, x, y = digits
    with pytest.raises(KerasqError, match="labels are not numbers"):
        evaluate(str(root / "q.h5"), x, np.array(["cat"] * len(x)))
    with pytest.raises(KerasqError, match="labels for"):
        evaluate(str(root / "q.h5"), x, y[:10])
    with pytest.raises(KerasqError, match="nothing to score"):
        evaluate(str(root / "q.h5"), x)
    with pytest.raises(KerasqError, match="no such file"):
        evaluate(str(root / "missing.tflite"), x, y)
