"""The Keras 3 flow on the JAX backend, run by test_keras3_jax.py in a subprocess with
KERAS_BACKEND=jax: float training, quantize, calibrate, QAT fit, .keras save, int8 export;
the bit-width search, the quantization report and the integer runner.

Usage: KERAS_BACKEND=jax python jax_flow.py OUT_DIR   (writes OUT_DIR/result.json,
q.keras, q.tflite and outputs.npz)
"""

import json
import os
import sys

import numpy as np

import kerasq
import kerasq.integer
from kerasq._compat import keras3
from kerasq.demo import load_digits_data

keras = keras3()


def _parity(model, x, y, xt, yt) -> dict:
    """PTQ / QAT accuracy (percent) of the JAX model and of its tf_keras copy, trained the
    same way (SGD, no shuffling, deterministic rounding)."""
    from kerasq._compat import keras as tf_keras
    from kerasq.keras3 import twin as k3twin
    from kerasq.schemes.api import quantize_model as tf_keras_quantize
    from kerasq.schemes.calibration import calibrate as tf_keras_calibrate

    config = {"train_rounding": "nearest"}
    q3 = kerasq.quantize_model(model, config)
    kerasq.calibrate(q3, x[:256])
    q2 = tf_keras_quantize(k3twin.to_tf_keras(model), config)
    tf_keras_calibrate(q2, x[:256])

    def acc(out):
        return 100.0 * float(np.mean(np.asarray(out).argmax(-1) == yt))

    found = {"parity_ptq_jax": acc(keras.ops.convert_to_numpy(q3(xt))),
             "parity_ptq_tf_keras": acc(q2(xt, training=False).numpy())}
    q3.compile(keras.optimizers.SGD(0.01), "sparse_categorical_crossentropy")
    q2.compile(tf_keras.optimizers.SGD(0.01), "sparse_categorical_crossentropy")
    q3.fit(x, y, epochs=2, batch_size=64, shuffle=False, verbose=0)
    q2.fit(x, y, epochs=2, batch_size=64, shuffle=False, verbose=0)
    found["parity_qat_jax"] = acc(keras.ops.convert_to_numpy(q3(xt)))
    found["parity_qat_tf_keras"] = acc(q2(xt, training=False).numpy())
    return found


def _tools(model, qmodel, x, xt, yt) -> dict:
    """The search, the quantization report and the integer runner on the JAX models, and
    the same tools of the tf_keras path on a tf_keras copy of the float model."""
    from kerasq.keras3 import twin as k3twin
    from kerasq.schemes.api import quantize_model as tf_keras_quantize
    from kerasq.schemes.calibration import calibrate as tf_keras_calibrate
    from kerasq.schemes.report import report as tf_keras_report
    from kerasq.schemes.search import search_bitwidths as tf_keras_search

    ref = tf_keras_quantize(k3twin.to_tf_keras(model))
    tf_keras_calibrate(ref, x[:256])
    ints = kerasq.run_integer(qmodel, xt)
    own = np.asarray(keras.ops.convert_to_numpy(qmodel(xt, training=False)))
    rows = [r.to_dict() for r in kerasq.dispatch.quantization_report(qmodel, xt[:128])]
    want_rows = [r.to_dict() for r in tf_keras_report(ref, xt[:128])]

    def accuracy(m):
        return float(np.mean(np.asarray(m.predict(xt, verbose=0)).argmax(-1) == yt))

    kwargs = dict(candidates=(8, 4), parts=("activations",))
    got = kerasq.search_bitwidths(model, accuracy, x[:256], 1.0, **kwargs)
    want = tf_keras_search(k3twin.to_tf_keras(model), accuracy, x[:256], 1.0, **kwargs)
    return {
        "integer_equals_model": bool(np.array_equal(ints, own)),
        "integer_equals_tf_keras": bool(np.array_equal(ints, kerasq.integer.run(ref, xt))),
        "report_rows": len(rows),
        "report_equals_tf_keras": json.dumps(rows) == json.dumps(want_rows),
        "search_rows": [[r.part, r.bitwidth, r.score, r.passed] for r in got.rows],
        "search_rows_tf_keras": [[r.part, r.bitwidth, r.score, r.passed] for r in want.rows],
        "search_config_equal": got.config.to_dict() == want.config.to_dict(),
    }


def main(out_dir: str) -> None:
    assert keras.backend.backend() == "jax", keras.backend.backend()
    x, y, xt, yt = load_digits_data()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(16, 3, padding="same", name="conv1"),
        keras.layers.BatchNormalization(name="bn1"),
        keras.layers.ReLU(name="relu1"),
        keras.layers.MaxPooling2D(2, name="pool1"),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2"),
        keras.layers.MaxPooling2D(2, name="pool2"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(10, name="fc"),
        keras.layers.Softmax(name="prob"),
    ], name="jax_digits")
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=4, batch_size=64, verbose=0)

    def predict(m, data):
        return np.asarray(keras.ops.convert_to_numpy(m(data, training=False)))

    qmodel = kerasq.quantize_model(model)
    kerasq.calibrate(qmodel, x[:256])
    ptq = predict(qmodel, xt)
    tools = _tools(model, qmodel, x, xt, yt)
    twin = kerasq.keras3.tf_keras_twin(qmodel)
    twin_out = twin(xt, training=False).numpy()
    qmodel.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    qmodel.fit(x, y, epochs=1, batch_size=64, verbose=0,
               callbacks=[kerasq.keras3.SharedGridCallback()])
    qat = predict(qmodel, xt)
    qmodel.save(os.path.join(out_dir, "q.keras"))
    blob = kerasq.export.to_tflite(qmodel, os.path.join(out_dir, "q.tflite"), target="int8",
                                   verify_data=xt[:64], verify=True)
    after_export = predict(qmodel, xt)
    np.savez(os.path.join(out_dir, "outputs.npz"), ptq=ptq, twin=twin_out, qat=after_export)
    parity = _parity(model, x, y, xt, yt)
    result = {**parity, **tools,
        "backend": keras.backend.backend(),
        "float_acc": float(np.mean(predict(model, xt).argmax(-1) == yt)),
        "ptq_acc": float(np.mean(ptq.argmax(-1) == yt)),
        "qat_acc": float(np.mean(qat.argmax(-1) == yt)),
        "ptq_equals_twin": bool(np.array_equal(ptq, twin_out)),
        "ptq_max_diff_twin": float(np.abs(ptq - twin_out).max()),
        "tflite_bytes": len(blob),
    }
    with open(os.path.join(out_dir, "result.json"), "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1])
