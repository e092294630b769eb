"""kerasq's Caffe writer against OpenCV's independent Caffe implementation (cv2.dnn)."""

from __future__ import annotations

import numpy as np
import pytest

from kerasq._compat import keras
from kerasq.converters.caffe.writer import write_caffe
from kerasq.errors import UnsupportedLayerError

cv2 = pytest.importorskip("cv2")


def _net():
    keras.utils.set_random_seed(1)
    return keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(6, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(5, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(7, activation="relu"),
            keras.layers.Dense(4),
        ]
    )


def test_written_net_runs_the_same_in_opencv(tmp_path):
    model = _net()
    proto, weights = tmp_path / "n.prototxt", tmp_path / "n.caffemodel"
    write_caffe(model, proto, weights)
    x = np.random.default_rng(0).normal(size=(5, 8, 8, 3)).astype(np.float32)
    net = cv2.dnn.readNetFromCaffe(str(proto), str(weights))
    net.setInput(x.transpose(0, 3, 1, 2).copy())
    got = net.forward()
    np.testing.assert_allclose(got, model.predict(x, verbose=0), rtol=1e-4, atol=1e-5)


def test_written_net_round_trips_through_the_importer(tmp_path):
    from kerasq.converters.caffe import load

    model = _net()
    write_caffe(model, tmp_path / "n.prototxt", tmp_path / "n.caffemodel")
    converted = load(tmp_path / "n.prototxt", tmp_path / "n.caffemodel")
    x = np.random.default_rng(1).normal(size=(4, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(
        np.asarray(converted.predict(x, verbose=0)).reshape(4, 4),
        model.predict(x, verbose=0),
        rtol=1e-4,
        atol=1e-5,
    )


def test_unsupported_layer_is_named_and_no_file_written(tmp_path):
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.BatchNormalization(name="bn")])
    with pytest.raises(UnsupportedLayerError, match="bn"):
        write_caffe(model, tmp_path / "n.prototxt", tmp_path / "n.caffemodel")
    assert not list(tmp_path.iterdir())
