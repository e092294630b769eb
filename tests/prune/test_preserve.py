"""SparsityPreservingQuantizer: zeros survive pruning + QAT + .h5 reload + TFLite int8 export,
for Conv2D, DepthwiseConv2D, Conv2DTranspose and Dense, with symmetric and offset quantizers.

References: exact zero counts of the Keras kernels, of the int8 weight tensors read from the
TFLite interpreter (``ai_edge_litert``), and a numpy formula of the offset quantizer showing
that without the mask zeros do vanish (quant-schemes.md §6.1)."""

from __future__ import annotations

import numpy as np
import pytest

from kerasq._compat import keras, tf, tfmot
from kerasq.prune import (
    ConstantSparsity,
    PruningCallback,
    SparsityPreservingQuantizer,
    find_mask_slots,
    init_masks,
    sparsity_report,
)

tq = tfmot().quantization.keras
KERNELS = {"conv/kernel", "dw/depthwise_kernel", "deconv/kernel", "fc/kernel"}


def _train(model, x, y, epochs, callbacks=()):
    model.compile(
        keras.optimizers.SGD(0.05, momentum=0.9),
        keras.losses.CategoricalCrossentropy(from_logits=True),
    )
    model.fit(x, y, batch_size=32, epochs=epochs, verbose=0, callbacks=list(callbacks))


@pytest.mark.parametrize("offset", [False, True], ids=["symmetric", "apply_offset"])
def test_zeros_survive_qat_pruning_h5_and_tflite(helpers, tmp_path, offset):
    x, y = helpers.digits_images(128)
    qmodel = helpers.quantize_with_masks(helpers.small_model(), offset=offset)
    init_masks(qmodel)
    assert {s.name for s in find_mask_slots(qmodel)} == KERNELS
    target = 0.6
    # pruning continues while QAT runs (and momentum tries to revive pruned weights)
    _train(
        qmodel,
        x,
        y,
        epochs=2,
        callbacks=[PruningCallback(ConstantSparsity(target, 0, frequency=2))],
    )
    kernels = {s.name: s.weight.numpy() for s in find_mask_slots(qmodel)}
    for name, k in kernels.items():
        assert (k == 0).mean() >= target - 1.0 / k.size, name

    path = str(tmp_path / "q.h5")
    qmodel.save(path)
    reloaded = helpers.load_h5(path)
    slots = {s.name: s for s in find_mask_slots(reloaded)}
    assert set(slots) == KERNELS
    for name, slot in slots.items():
        assert int(slot.ready.numpy()) == 1
        np.testing.assert_array_equal(slot.weight.numpy(), kernels[name])
        np.testing.assert_array_equal(slot.mask.numpy(), (kernels[name] != 0).astype(np.float32))
    np.testing.assert_allclose(
        reloaded.predict(x, verbose=0), qmodel.predict(x, verbose=0), atol=1e-6
    )

    # one more QAT epoch after reload: zeros still exact
    _train(reloaded, x, y, epochs=1)
    for name, slot in {s.name: s for s in find_mask_slots(reloaded)}.items():
        assert np.all(slot.weight.numpy()[kernels[name] == 0] == 0), name

    # the kernels the layers compute with (after the inner quantizer) keep the zeros too
    for row in sparsity_report(reloaded):
        assert row.quantized_zeros >= row.zeros, row

    kernels_tflite = helpers.tflite_kernels(helpers.tflite_bytes(reloaded))
    assert sorted(t["op"] for t in kernels_tflite) == sorted(
        ["CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "FULLY_CONNECTED"]
    )
    by_size = {k.size: name for name, k in kernels.items()}
    for t in kernels_tflite:
        name = by_size[t["value"].size]
        if not offset:  # symmetric fake quant -> real int8 weights
            assert t["dtype"] == np.int8, name
        assert (t["value"] == 0).mean() >= (kernels[name] == 0).mean(), name
        assert (t["value"] == 0).sum() >= (kernels[name] == 0).sum(), name


def test_offset_quantizer_destroys_zeros_without_mask(helpers):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 3, 4, 8)).astype(np.float32)
    w[np.abs(w) < 0.8] = 0.0
    reference = helpers.offset_quantize_numpy(w)
    plain = helpers.OffsetQuantizer()(tf.constant(w), False, {}).numpy()
    np.testing.assert_allclose(plain, reference, atol=1e-5)
    assert (plain == 0).mean() < 0.05 < (w == 0).mean()  # the caffe-jacinto problem (§6.1)

    layer = keras.layers.Dense(1)
    layer.build((None, 1))
    spq = SparsityPreservingQuantizer(helpers.OffsetQuantizer())
    assert spq.reapplies_mask
    variables = spq.build(w.shape, "kernel", layer)
    masked = spq(tf.constant(w), False, variables).numpy()
    np.testing.assert_array_equal(masked == 0, w == 0)
    np.testing.assert_allclose(masked[w != 0], reference[w != 0], atol=1e-5)


def test_symmetric_inner_is_not_remasked_and_lazy_init(helpers):
    inner = tq.quantizers.LastValueQuantizer(
        num_bits=8, per_axis=False, symmetric=True, narrow_range=True
    )
    spq = SparsityPreservingQuantizer(inner)
    assert not spq.reapplies_mask  # fake_quant keeps 0 on the grid: no op after FakeQuant
    w = np.array([[0.0, 0.5], [-0.25, 0.0]], np.float32)
    layer = keras.layers.Dense(2)
    layer.build((None, 2))
    variables = spq.build(w.shape, "kernel", layer)
    assert int(variables["mask_ready"].numpy()) == 0
    out = spq(tf.constant(w), False, variables).numpy()  # inference does not initialise
    assert int(variables["mask_ready"].numpy()) == 0
    np.testing.assert_array_equal(out == 0, w == 0)
    spq(tf.constant(w), True, variables)  # first training call initialises from w != 0
    assert int(variables["mask_ready"].numpy()) == 1
    np.testing.assert_array_equal(variables["mask"].numpy(), (w != 0).astype(np.float32))
    # later training calls keep the mask even if the weight changed
    spq(tf.constant(np.ones_like(w)), True, variables)
    np.testing.assert_array_equal(variables["mask"].numpy(), (w != 0).astype(np.float32))


def test_config_round_trip(helpers):
    inner = tq.quantizers.LastValueQuantizer(
        num_bits=4, per_axis=True, symmetric=True, narrow_range=False
    )
    spq = SparsityPreservingQuantizer(inner, remask_output=True)
    config = keras.utils.serialize_keras_object(spq)
    assert config["registered_name"] == "kerasq>SparsityPreservingQuantizer"
    again = keras.utils.deserialize_keras_object(config)
    assert again == spq and again.remask_output is True
    assert again.inner.get_config() == inner.get_config()
    with tq.quantize_scope({"OffsetQuantizer": helpers.OffsetQuantizer}):
        offset = SparsityPreservingQuantizer.from_config(
            SparsityPreservingQuantizer(helpers.OffsetQuantizer(6)).get_config()
        )
    assert offset.inner.bits == 6 and offset.reapplies_mask
