"""Accuracy parity with the tf_keras path on digits: the same float CNN (Keras 3, and its
tf_keras copy with identical weights) quantized, calibrated and QAT-trained both ways with
the same data order, optimizer and deterministic rounding reaches the same PTQ and QAT
accuracy (within 0.2 points)."""

import numpy as np

import kerasq
from kerasq._compat import keras as tf_keras
from kerasq._compat import keras3
from kerasq.keras3 import twin as k3twin
from kerasq.schemes.api import quantize_model as tf_keras_quantize
from kerasq.schemes.calibration import calibrate as tf_keras_calibrate

keras = keras3()
CONFIG = {"train_rounding": "nearest"}


def test_ptq_and_qat_accuracy_match_tf_keras_twin(digits, k3):
    x, y, xt, yt = digits
    model = k3.train(k3.sequential(), x, y, epochs=4)
    tf_float = k3twin.to_tf_keras(model)

    q3 = kerasq.quantize_model(model, CONFIG)
    kerasq.calibrate(q3, x[:256])
    q2 = tf_keras_quantize(tf_float, CONFIG)
    tf_keras_calibrate(q2, x[:256])

    def acc(out):
        return 100.0 * float(np.mean(np.asarray(out).argmax(-1) == yt))

    ptq3, ptq2 = acc(k3.predict(q3, xt)), acc(q2(xt, training=False).numpy())
    assert abs(ptq3 - ptq2) <= 0.2, (ptq3, ptq2)

    q3.compile(keras.optimizers.SGD(0.01), "sparse_categorical_crossentropy")
    q2.compile(tf_keras.optimizers.SGD(0.01), "sparse_categorical_crossentropy")
    q3.fit(x, y, epochs=2, batch_size=64, shuffle=False, verbose=0)
    q2.fit(x, y, epochs=2, batch_size=64, shuffle=False, verbose=0)
    qat3, qat2 = acc(k3.predict(q3, xt)), acc(q2(xt, training=False).numpy())
    assert abs(qat3 - qat2) <= 0.2, (qat3, qat2)
    assert qat3 >= 80.0
