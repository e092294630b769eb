"""Shared fixtures: the location of ../shared reference data and skip helpers."""

from __future__ import annotations

import os
import pathlib

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED = pathlib.Path(os.environ.get("KERASQ_SHARED", REPO_ROOT.parent / "shared"))


def shared_path(*parts: str) -> pathlib.Path:
    """Path under ../shared; skips the calling test with a clear reason if it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"reference data not found: {path} (CI keeps ../shared beside the checkout)")
    return path


@pytest.fixture
def shared() -> pathlib.Path:
    """The ../shared folder (skip if absent)."""
    return shared_path()


@pytest.fixture(scope="session")
def digits_models(tmp_path_factory):
    """A small CNN trained on scikit-learn's real digits, written as the files the evaluation
    tests read: ``model.h5`` (float), ``q.h5`` (DFP 8/8, calibrated), ``q.tflite`` (int8),
    the held-out samples as ``val.npz`` (x, y), ``x.npy``, ``y.npy`` and ``text.npy`` (the
    labels as strings). Returns ``(root, x_val, y_val, float_accuracy)``, the accuracy
    counted with Keras ``predict`` and numpy."""
    import numpy as np
    from sklearn.datasets import load_digits

    import kerasq
    from kerasq._compat import keras

    root = tmp_path_factory.mktemp("digits_models")
    data = load_digits()
    x = (data.images / 16.0).astype("float32")[..., None]
    y = data.target.astype("int64")
    keras.utils.set_random_seed(3)
    inp = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(6, 3, activation="relu", name="conv")(inp)
    h = keras.layers.Flatten(name="flat")(h)
    out = keras.layers.Dense(10, activation="softmax", name="prob")(h)
    model = keras.Model(inp, out)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x[:1200], y[:1200], epochs=4, batch_size=64, verbose=0)
    model.save(root / "model.h5")
    qmodel = kerasq.calibrate(kerasq.quantize_model(model), x[:256])
    qmodel.save(root / "q.h5")
    kerasq.export.to_tflite(qmodel, str(root / "q.tflite"), target="int8",
                            representative_data=x[:256])
    x_val, y_val = x[1200:], y[1200:]
    np.savez(root / "val.npz", x=x_val, y=y_val)
    np.save(root / "x.npy", x_val)
    np.save(root / "y.npy", y_val)
    np.save(root / "text.npy", np.array([str(v) for v in y_val]))
    accuracy = float(np.mean(model.predict(x_val, verbose=0).argmax(1) == y_val))
    return root, x_val, y_val, accuracy
