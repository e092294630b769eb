"""Keras 3 quantized models under ``tf.distribute.MirroredStrategy`` (TensorFlow backend):
quantize, calibrate and compile inside the strategy's scope, QAT with ``fit``, int8 export.
References: the same steps without a strategy (bit for bit on one device), the TFLite
interpreter (export's verification), the replicas' copies of every variable (equal), the
range of the whole batch (numpy) in the input quantizer after a step on two replicas."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

import kerasq
from kerasq._compat import keras3, tf

keras = keras3()
REPO = Path(__file__).resolve().parent.parent.parent


def _flow(k3, weights, x, y, strategy=None):
    """Quantize, calibrate, compile (inside ``strategy``'s scope when given), one QAT epoch."""
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        model = k3.sequential()
        model.set_weights(weights)
        qmodel = kerasq.calibrate(kerasq.quantize_model(model), x[:256])
        qmodel.compile(keras.optimizers.SGD(1e-2), "sparse_categorical_crossentropy")
    ptq = k3.predict(qmodel, x[:200])
    qmodel.fit(x[:640], y[:640], batch_size=64, epochs=1, shuffle=False, verbose=0)
    return qmodel, ptq, k3.predict(qmodel, x[:200])


def test_mirrored_strategy_one_device_equals_no_strategy(k3, digits):
    x, y, xt, _ = digits
    weights = k3.train(k3.sequential(), x, y, epochs=1).get_weights()
    strategy = tf.distribute.MirroredStrategy()  # the one CPU
    assert strategy.num_replicas_in_sync == 1
    q_dist, ptq_dist, qat_dist = _flow(k3, weights, x, y, strategy)
    _, ptq, qat = _flow(k3, weights, x, y)
    np.testing.assert_array_equal(ptq_dist, ptq)  # calibration: the same ranges
    np.testing.assert_allclose(qat_dist, qat, rtol=0, atol=1e-5)  # the same QAT step
    assert not np.array_equal(qat_dist, ptq_dist)  # QAT changed the model
    blob = kerasq.export.to_tflite(q_dist, target="int8", verify_data=xt[:32], verify=True)
    assert len(blob) > 1000


def test_mirrored_strategy_two_replicas_keeps_replicas_equal_and_exports(tmp_path):
    code = textwrap.dedent("""
        import numpy as np
        from kerasq._compat import tf, keras3
        keras = keras3()
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import kerasq
        from kerasq.demo import load_digits_data
        x, y, xt, _ = load_digits_data()
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with strategy.scope():
            keras.utils.set_random_seed(0)
            model = keras.Sequential([
                keras.Input((8, 8, 1)),
                keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1"),
                keras.layers.MaxPooling2D(2, name="pool1"),
                keras.layers.Flatten(name="flatten"),
                keras.layers.Dense(10, name="fc")])
            q = kerasq.calibrate(kerasq.quantize_model(model), x[:256])
            q.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        h = q.fit(x[:512], y[:512], batch_size=64, epochs=1, verbose=0)
        assert np.isfinite(h.history["loss"][-1])
        mirrored = divergent = 0
        for v in q.weights:
            parts = getattr(getattr(v, "value", v), "values", None)
            if parts is None:
                continue
            mirrored += 1
            arrays = [np.asarray(p) for p in parts]
            divergent += not all(np.array_equal(arrays[0], a) for a in arrays[1:])
        assert mirrored == len(q.weights) and divergent == 0, (mirrored, divergent)
        blob = kerasq.export.to_tflite(q, target="int8", verify_data=xt[:32], verify=True)
        # each replica gets half of a batch; the stored range is the whole batch's (as on
        # tf_keras), not the mean of the halves' ranges
        with strategy.scope():
            fresh = kerasq.quantize_model(model)
            fresh.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        batch = x[:64].copy()
        batch[:32] *= 4.0
        fresh.fit(batch, y[:64], batch_size=64, epochs=1, shuffle=False, verbose=0)
        (inq,) = [l for l in fresh.layers if type(l).__name__ == "InputQuantizer"]
        stored = {v.path.rsplit("_", 1)[-1]: float(np.asarray(v)) for v in inq.weights
                  if v.path.endswith(("_min", "_max"))}
        assert stored == {"min": float(batch.min()), "max": float(batch.max())}, stored
        print("replicas", strategy.num_replicas_in_sync, "variables", mirrored)
    """)
    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "replicas 2" in proc.stdout
