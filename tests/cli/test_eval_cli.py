"""``kerasq eval``: the CLI over :func:`kerasq.evaluate.evaluate`, .h5 and .tflite alike.

The reference numbers are computed with Keras ``predict`` and numpy on a small CNN trained on
scikit-learn's real digits (the ``digits_models`` fixture of tests/conftest.py).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from kerasq.cli import main


@pytest.fixture
def files(digits_models):
    """The digits files of tests/conftest.py and the float model's accuracy."""
    root, _, _, accuracy = digits_models
    return root, accuracy


def test_eval_h5_and_tflite_and_json(files, capsys):
    root, expected = files
    assert main(["eval", str(root / "model.h5"), "--data", str(root / "val.npz"),
                 "--json", str(root / "s.json")]) == 0
    out = capsys.readouterr().out
    assert f"{100 * expected:.2f} %" in out and "prob" in out and "classifier" in out
    saved = json.loads((root / "s.json").read_text())
    assert saved["outputs"][0]["accuracy"] == pytest.approx(expected)
    # the int8 file, labels from --labels, agreement with the q.h5 it was exported from
    assert main(["eval", str(root / "q.tflite"), "--data", str(root / "x.npy"),
                 "--labels", str(root / "y.npy"), "--reference", str(root / "q.h5")]) == 0
    out = capsys.readouterr().out
    assert "agreement" in out and "accuracy" in out and "identical" in out


def test_eval_refuses_text_labels_and_missing_labels(files, capsys):
    root, _ = files
    assert main(["eval", str(root / "q.h5"), "--data", str(root / "x.npy"),
                 "--labels", str(root / "text.npy")]) == 2
    err = capsys.readouterr().err
    # kerasq.data refuses the text array before scoring (one line naming the file and dtype)
    assert err.count("\n") == 1 and "expected numbers" in err and "text.npy" in err
    assert main(["eval", str(root / "q.h5"), "--data", str(root / "x.npy")]) == 2
    err = capsys.readouterr().err
    assert "nothing to score" in err and err.count("\n") == 1


def test_eval_names_each_output_of_a_two_output_model(tmp_path, capsys):
    from kerasq._compat import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((6,))
    prob = keras.layers.Dense(3, activation="softmax", name="prob")(inp)
    box = keras.layers.Dense(4, name="box")(inp)
    model = keras.Model(inp, [prob, box])
    model.save(tmp_path / "two.h5")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(30, 6)).astype("float32")
    labels, boxes = rng.integers(0, 3, 30), rng.normal(size=(30, 4)).astype("float32")
    np.savez(tmp_path / "two.npz", x=x, y_prob=labels, y_box=boxes)
    assert main(["eval", str(tmp_path / "two.h5"), "--data", str(tmp_path / "two.npz"),
                 "--json", str(tmp_path / "two.json")]) == 0
    scores = {o["name"]: o for o in json.loads((tmp_path / "two.json").read_text())["outputs"]}
    p, b = model.predict(x, verbose=0)
    assert scores["prob"]["kind"] == "classifier" and scores["box"]["kind"] == "regression"
    assert scores["prob"]["accuracy"] == pytest.approx(float(np.mean(p.argmax(1) == labels)))
    assert scores["box"]["mean_abs_error"] == pytest.approx(float(np.mean(np.abs(b - boxes))),
                                                            rel=1e-5)
    out = capsys.readouterr().out
    assert "prob" in out and "box" in out
