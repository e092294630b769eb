"""Keras 3 digits models shared by the Keras 3 tests (TensorFlow backend in-process)."""

import types

import numpy as np
import pytest

from kerasq._compat import keras3
from kerasq.demo import load_digits_data

keras = keras3()


def build_branchy_cnn(seed: int = 0):
    """Conv-BN-ReLU, pool, 1x1 conv | depthwise (Add), 1x1 conv, Concatenate, ReLU6,
    Reshape, Dense, Softmax on 8x8 digits."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 1), name="image")
    h = keras.layers.Conv2D(16, 3, padding="same", name="conv1")(inp)
    h = keras.layers.BatchNormalization(name="bn1")(h)
    h = keras.layers.ReLU(name="relu1")(h)
    h = keras.layers.MaxPooling2D(2, name="pool1")(h)
    a = keras.layers.Conv2D(16, 1, activation="relu", name="conv2a")(h)
    b = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu", name="dw")(h)
    h = keras.layers.Add(name="add")([a, b])
    u = keras.layers.Conv2D(8, 1, activation="relu", name="conv3")(h)
    h = keras.layers.Concatenate(name="cat")([h, u])
    h = keras.layers.ReLU(max_value=6.0, name="relu6")(h)
    h = keras.layers.Reshape((4 * 4 * 24,), name="reshape")(h)
    h = keras.layers.Dense(10, name="fc")(h)
    out = keras.layers.Softmax(name="prob")(h)
    return keras.Model(inp, out, name="k3_branchy")


def build_transpose_cnn(seed: int = 0):
    """Conv, pool, Conv2DTranspose (stride 2), AveragePooling2D, Flatten, Dense."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 1), name="image")
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inp)
    h = keras.layers.MaxPooling2D(2, name="pool1")(h)
    h = keras.layers.Conv2DTranspose(8, 2, strides=2, activation="relu", name="up")(h)
    h = keras.layers.AveragePooling2D(2, name="pool2")(h)
    h = keras.layers.Flatten(name="flatten")(h)
    out = keras.layers.Dense(10, name="fc")(h)
    return keras.Model(inp, out, name="k3_transpose")


def build_sequential_cnn(seed: int = 0):
    """The demo's digits CNN (kerasq.demo.build_cnn) in Keras 3, with a softmax."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1"),
        keras.layers.MaxPooling2D(2, name="pool1"),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2"),
        keras.layers.MaxPooling2D(2, name="pool2"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(10, name="fc"),
        keras.layers.Softmax(name="prob"),
    ], name="k3_digits_cnn")


def train_float(model, x, y, epochs: int = 6):
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=64, verbose=0)
    return model


@pytest.fixture(scope="session")
def digits():
    return load_digits_data()


@pytest.fixture(scope="module")
def branchy(digits):
    x, y, _, _ = digits
    return train_float(build_branchy_cnn(), x, y)


def predict(model, x):
    return np.asarray(keras.ops.convert_to_numpy(model(x, training=False)))


@pytest.fixture(scope="session")
def k3():
    """The builders above: ``k3.branchy()``, ``k3.sequential()``, ``k3.train(...)``, ``k3.predict``."""
    return types.SimpleNamespace(branchy=build_branchy_cnn, sequential=build_sequential_cnn,
                                 transpose=build_transpose_cnn,
                                 train=train_float, predict=predict)
