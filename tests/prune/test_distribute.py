"""Masks under tf.distribute.MirroredStrategy with two replicas (two logical CPUs, so it runs
in a fresh process): pruning during fit with momentum, in-graph lazy mask initialisation,
float (PruneWrapper) and quantized (SparsityPreservingQuantizer) models."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import textwrap

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import json, sys
    from kerasq._compat import keras, tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import numpy as np
    import kerasq
    import kerasq.prune as kp
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images[:64] / 16.0).astype(np.float32)[..., None]
    y = keras.utils.to_categorical(digits.target[:64], 10).astype(np.float32)

    def model():
        keras.utils.set_random_seed(0)
        inp = keras.Input((8, 8, 1))
        h = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(inp)
        h = keras.layers.DepthwiseConv2D(3, name="dw")(h)
        h = keras.layers.Flatten()(h)
        return keras.Model(inp, keras.layers.Dense(10, name="fc")(h))

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    out = {"replicas": strategy.num_replicas_in_sync}
    for kind in ("float", "quant", "quant-lazy"):
        with strategy.scope():
            m = kp.prune_model(model(), kp.ConstantSparsity(0.5, 0))
            if kind != "float":
                m = kerasq.quantize_model(kp.strip(m))
            if kind == "quant-lazy":
                for slot in kp.find_mask_slots(m):
                    slot.ready.assign(0)
            m.compile(keras.optimizers.SGD(0.05, momentum=0.9),
                      keras.losses.CategoricalCrossentropy(from_logits=True))
        callbacks = [] if kind == "quant-lazy" else [
            kp.PruningCallback(kp.PolynomialDecay(0.5, 0.7, 0, 2, frequency=1))]
        m.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=callbacks)
        out[kind] = {s.name: [float((s.weight.numpy() == 0).mean()), int(s.ready.numpy()),
                              bool(np.all((s.weight.numpy() == 0) == (s.mask.numpy() == 0)))]
                     for s in kp.find_mask_slots(m)}
    print("RESULT " + json.dumps(out))
    """
)


@pytest.mark.slow
def test_mirrored_strategy_two_replicas():
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT ") :])
    assert result["replicas"] == 2
    for kind, target in (("float", 0.7), ("quant", 0.7), ("quant-lazy", 0.5)):
        slots = result[kind]
        assert set(slots) == {"conv/kernel", "dw/depthwise_kernel", "fc/kernel"}, kind
        for name, (sparsity, ready, same_pattern) in slots.items():
            assert ready == 1 and same_pattern, (kind, name)
            assert sparsity >= target - 0.02, (kind, name, sparsity)
