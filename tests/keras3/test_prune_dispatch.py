"""``kerasq.prune.prune_model`` and ``kerasq.prune.PruningCallback`` on Keras 3 models (the
Keras 3 branch of kerasq/prune/api.py and kerasq/prune/callbacks.py, kerasq/prune/keras3.py). References: the tf_keras path's masks on the twin
(same weights, same schedule), numpy counts of the zeros, tfmot's schedule values."""

from __future__ import annotations

import numpy as np
import pytest

import kerasq
import kerasq.prune as kp
from kerasq._compat import keras3
from kerasq.keras3 import twin
from kerasq.keras3.layers import layer_variable

keras = keras3()


def _kernel(layer) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(layer_variable(layer, "kernel")))


def test_prune_model_keras3_equals_the_tf_keras_masks(k3, digits):
    x, y, _, _ = digits
    model = k3.train(k3.sequential(), x, y, epochs=1)
    tf_model = twin.to_tf_keras(model)  # the same weights, in tf_keras
    schedule = kp.ConstantSparsity(0.6, 0)
    pruned_tf = kp.strip(kp.prune_model(tf_model, schedule, layers=["fc", "conv2"]))
    out = kp.prune_model(model, schedule, layers=["fc", "conv2"])
    assert out is model  # Keras 3: pruned in place
    for name in ("fc", "conv2"):
        got = _kernel(model.get_layer(name))
        want = pruned_tf.get_layer(name).kernel.numpy()
        np.testing.assert_array_equal(got, want)
        assert abs(np.mean(got == 0) - 0.6) < 1.0 / got.size + 1e-9
    assert np.all(_kernel(model.get_layer("conv1")) != 0)  # not in layers


def test_prune_model_keras3_refusals(k3):
    model = k3.sequential()
    with pytest.raises(kerasq.errors.KerasqError, match="schedule"):
        kp.prune_model(model, kp.JacintoChannelSchedule(target=0.5))
    with pytest.raises(kerasq.errors.KerasqError, match="no such layer"):
        kp.prune_model(model, 0.5, layers=["nope"])


def test_pruning_callback_on_a_keras3_qat_run(k3, digits):
    x, y, _, _ = digits
    model = k3.train(k3.sequential(), x, y, epochs=1)
    kp.prune_model(model, kp.ConstantSparsity(0.3, 0), layers=["fc"])
    qmodel = kerasq.calibrate(kerasq.quantize_model(model), x[:256])
    schedule = kp.PolynomialDecay(0.3, 0.7, begin_step=0, end_step=20, frequency=5)
    callback = kp.PruningCallback(schedule)
    assert isinstance(callback, kerasq.prune.callbacks.PruningCallback)  # tf_keras's class too
    qmodel.compile(keras.optimizers.SGD(1e-2), "sparse_categorical_crossentropy")
    qmodel.fit(x[:64 * 25], y[:64 * 25], batch_size=64, epochs=1, verbose=0,
               callbacks=[callback])
    fc = qmodel.get_layer("fc") if "fc" in [l.name for l in qmodel.layers] else next(
        l for l in qmodel.layers if getattr(getattr(l, "layer", None), "name", "") == "fc")
    kernel = _kernel(fc.layer)
    want = float(schedule(20)[1])  # tfmot's value at the last pruning step
    assert abs(np.mean(kernel == 0) - want) < 1.0 / kernel.size + 1e-9
    # the zeros are exact in the quantized model's weights (the masks are its variables)
    from kerasq.keras3.prune import mask_slots

    (slot,) = [s for s in mask_slots(qmodel) if s[0] is fc]
    mask = np.asarray(keras.ops.convert_to_numpy(slot[2]["mask"]))
    np.testing.assert_array_equal(mask == 0, kernel == 0)


def test_pruning_callback_needs_masks_on_keras3(k3, digits):
    x, y, _, _ = digits
    qmodel = kerasq.quantize_model(k3.sequential(), preserve_sparsity=False)
    qmodel.compile("sgd", "sparse_categorical_crossentropy")
    with pytest.raises(kerasq.errors.KerasqError, match="no masked kernels"):
        qmodel.fit(x[:64], y[:64], verbose=0,
                   callbacks=[kp.PruningCallback(kp.ConstantSparsity(0.5, 0))])
