"""The full kerasq flow: prune_model -> strip -> kerasq.quantize_model (sparsity preserved
automatically) -> QAT with pruning continuing -> kerasq.load_model(.h5) -> kerasq.export.

Reference: exact zeros of the Keras kernels, of the fake-quantized kernels, and of the weight
tensors of every CONV_2D / DEPTHWISE_CONV_2D / TRANSPOSE_CONV / FULLY_CONNECTED op read back
from the .tflite file with the ai_edge_litert interpreter."""

from __future__ import annotations

import numpy as np
import pytest

import kerasq
from kerasq._compat import keras
from kerasq.prune import (
    ConstantSparsity,
    PruningCallback,
    find_mask_slots,
    prune_model,
    sparsity_report,
    strip,
)
from kerasq.schemes.slots import weight_slots


@pytest.mark.parametrize(
    "offset,target", [(False, "int8"), (True, "float")], ids=["dfp8-int8", "apply_offset-float"]
)
def test_prune_quantize_prune_export(helpers, tmp_path, offset, target):
    export = pytest.importorskip("kerasq.export", reason="kerasq.export not present")
    x, y = helpers.digits_images(128)
    sparse = strip(prune_model(helpers.small_model(), ConstantSparsity(0.5, 0)))
    qmodel = kerasq.quantize_model(
        sparse, kerasq.QuantizationConfig(apply_offset_weights=offset)
    )  # preserve_sparsity=None -> automatic: the kernels have exact zeros
    slots = find_mask_slots(qmodel)
    assert {s.name for s in slots} == {
        "conv/kernel",
        "dw/depthwise_kernel",
        "deconv/kernel",
        "fc/kernel",
    }
    kerasq.calibrate(qmodel, x[:64])
    qmodel.compile(
        keras.optimizers.SGD(0.05, momentum=0.9),
        keras.losses.CategoricalCrossentropy(from_logits=True),
    )
    qmodel.fit(
        x,
        y,
        batch_size=32,
        epochs=1,
        verbose=0,
        callbacks=[PruningCallback(ConstantSparsity(0.7, 0, frequency=2))],
    )
    path = str(tmp_path / "q.h5")
    qmodel.save(path)
    reloaded = kerasq.load_model(path)
    rows = {r.layer: r for r in sparsity_report(reloaded)}
    for row in rows.values():
        assert row.sparsity >= 0.7 - 1.0 / row.count, row
        assert row.mask_zeros == row.zeros and row.quantized_zeros >= row.zeros, row
    np.testing.assert_allclose(
        reloaded.predict(x, verbose=0), qmodel.predict(x, verbose=0), atol=1e-5
    )

    content = export.to_tflite(reloaded, target=target, representative_data=x[:32])
    kernels = helpers.tflite_kernels(content)
    assert len(kernels) == 4
    by_size = {row.count: row for row in rows.values()}
    for t in kernels:
        row = by_size[t["value"].size]
        if target == "int8":
            assert t["dtype"] == np.int8, t["name"]
        assert int((t["value"] == 0).sum()) >= row.zeros, (t["name"], row)


def test_batchnorm_folded_conv_keeps_zeros(helpers):
    """Conv2D + BatchNormalization is folded by quantize_model (W' = W * gamma / sigma per
    output channel); the folded kernel carries the mask, so zeros stay exact through QAT."""
    x, y = helpers.digits_images(64)
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(8, 3, use_bias=False, name="conv")(inp)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.ReLU(name="relu")(h)
    h = keras.layers.Flatten()(h)
    model = keras.Model(inp, keras.layers.Dense(10, name="fc")(h))
    model.compile("adam", keras.losses.CategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=1, verbose=0)  # non-trivial BN statistics
    sparse = strip(prune_model(model, ConstantSparsity(0.5, 0)))
    qmodel = kerasq.quantize_model(sparse)
    slots = {s.layer_name: s for s in find_mask_slots(qmodel)}
    assert "conv" in slots and "fc" in slots
    zeros_before = slots["conv"].weight.numpy() == 0
    assert zeros_before.mean() >= 0.5 - 1.0 / zeros_before.size
    qmodel.compile(
        keras.optimizers.SGD(0.05, momentum=0.9),
        keras.losses.CategoricalCrossentropy(from_logits=True),
    )
    qmodel.fit(x, y, epochs=1, verbose=0)
    kernel = slots["conv"].weight.numpy()
    assert np.all(kernel[zeros_before] == 0)
    row = {r.layer: r for r in sparsity_report(qmodel)}["conv"]
    assert row.quantized_zeros >= int(zeros_before.sum())


@pytest.mark.parametrize(
    "settings,remask,plain_loses_zeros",
    [
        ({}, False, False),  # symmetric DFP: 0 -> 0 by itself
        ({"power2_range": False}, False, False),  # caffe-jacinto symmetric non-pow2 scale
        ({"apply_offset_weights": True}, True, True),  # offset: 0 -> (round(o) - o)/s
        ({"precision": "minifloat"}, False, False),  # minifloat keeps 0
        # Ristretto maps 0 to +2^exp_min (quant-schemes §2.4); kerasq.numerics keeps 0 and the
        # quantizer declares preserves_zero, so the mask need not be re-applied.
        ({"precision": "pow2_weights"}, False, False),
    ],
    ids=["dfp", "dfp-nonpow2", "offset", "minifloat", "pow2"],
)
def test_which_configs_need_the_mask_after_quantization(
    helpers, settings, remask, plain_loses_zeros
):
    x, _ = helpers.digits_images(32)
    sparse = strip(prune_model(helpers.small_model(), ConstantSparsity(0.6, 0)))
    config = kerasq.QuantizationConfig(**settings)
    masked = kerasq.quantize_model(sparse, config, preserve_sparsity=True)
    plain = kerasq.quantize_model(sparse, config, preserve_sparsity=False)
    for model in (masked, plain):
        kerasq.calibrate(model, x)
    quantizers = [s.quantizer for layer in masked.layers for s in weight_slots(layer)]
    spqs = [q for q in quantizers if hasattr(q, "reapplies_mask")]
    assert len(spqs) == 4 and all(q.reapplies_mask == remask for q in spqs)
    masked_rows = {r.layer: r for r in sparsity_report(masked)}
    plain_rows = {r.layer: r for r in sparsity_report(plain)}
    for name, row in masked_rows.items():
        assert row.quantized_zeros >= row.zeros, (name, row)  # with the mask: always kept
        if plain_loses_zeros:  # without the mask the zeros are destroyed (quant-schemes §6.1)
            assert plain_rows[name].quantized_zeros < plain_rows[name].zeros, name
        else:
            assert plain_rows[name].quantized_zeros >= plain_rows[name].zeros, name


def test_savedmodel_round_trip_keeps_masks_and_pruning_continues(helpers, tmp_path):
    # Conv2DTranspose is left out: a quantized Conv2DTranspose does not save as a SavedModel
    # even without masks (tfmot/kerasq.schemes issue, reported), .h5 works (tested above).
    x, y = helpers.digits_images(64)
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(inp)
    h = keras.layers.DepthwiseConv2D(3, name="dw")(h)
    h = keras.layers.Flatten()(h)
    model = keras.Model(inp, keras.layers.Dense(10, name="fc")(h))
    pruned = prune_model(model, ConstantSparsity(0.6, 0))
    pruned.save(str(tmp_path / "float_sm"), save_format="tf")
    float_again = kerasq.load_model(str(tmp_path / "float_sm"))
    assert len(find_mask_slots(float_again)) == 3
    qmodel = kerasq.quantize_model(strip(pruned))
    qmodel.save(str(tmp_path / "q_sm"), save_format="tf")
    reloaded = kerasq.load_model(str(tmp_path / "q_sm"))
    np.testing.assert_allclose(
        reloaded.predict(x, verbose=0), qmodel.predict(x, verbose=0), atol=1e-5
    )
    slots = find_mask_slots(reloaded)
    assert [int(s.ready.numpy()) for s in slots] == [1, 1, 1]
    reloaded.compile(
        keras.optimizers.SGD(0.05, momentum=0.9),
        keras.losses.CategoricalCrossentropy(from_logits=True),
    )
    reloaded.fit(
        x, y, epochs=1, verbose=0,
        callbacks=[PruningCallback(ConstantSparsity(0.7, 0, frequency=1))],
    )  # fmt: skip
    for row in sparsity_report(reloaded):
        assert row.sparsity >= 0.7 - 1.0 / row.count and row.quantized_zeros >= row.zeros


def test_jacinto_schedule_continues_during_qat(helpers):
    """caffe-jacinto's recipe on a quantized model: the channel-wise threshold schedule runs
    while QAT trains, until the convolutions reach sparsity_target."""
    from kerasq.prune import JacintoChannelSchedule
    from kerasq.prune.schedules import mask_sparsity

    x, y = helpers.digits_images(256)
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv1")(inp)
    h = keras.layers.Conv2D(32, 3, activation="relu", name="conv2")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inp, keras.layers.Dense(10, name="fc")(h))
    qmodel = kerasq.quantize_model(model, preserve_sparsity=True)
    schedule = JacintoChannelSchedule(
        0.6, start_factor=0.5, step_factor=0.05, step_iter=2,
        threshold_maxratio=1.0, threshold_value_max=10.0, threshold_step_factor=1e-6,
    )  # fmt: skip
    qmodel.compile(
        keras.optimizers.SGD(0.05, momentum=0.9),
        keras.losses.CategoricalCrossentropy(from_logits=True),
    )
    qmodel.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[PruningCallback(schedule)])
    slots = {s.layer_name: s for s in find_mask_slots(qmodel)}
    assert mask_sparsity([slots["conv2"]]) >= 0.6 - 1.0 / 9  # "mid": the factor itself
    assert (slots["fc"].weight.numpy() == 0).sum() == 0  # InnerProduct is never thresholded
    rows = {r.layer: r for r in sparsity_report(qmodel)}
    assert rows["conv2"].quantized_zeros >= rows["conv2"].zeros > 0


def test_export_spec_is_the_inner_quantizers(helpers):
    """The exporter asks the mask quantizer for its grid; masking does not change it."""
    x, _ = helpers.digits_images(32)
    sparse = strip(prune_model(helpers.small_model(), ConstantSparsity(0.5, 0)))
    qmodel = kerasq.quantize_model(sparse)
    kerasq.calibrate(qmodel, x)
    checked = declared = 0
    for layer in qmodel.layers:
        for _, quantizer, qvars in getattr(layer, "_weight_vars", []):
            if not hasattr(quantizer, "reapplies_mask"):
                continue
            inner_spec = quantizer.inner.export_spec(qvars["inner"])
            spec = quantizer.export_spec(qvars)
            if inner_spec is None:
                assert spec is None, layer.name
            else:
                declared += 1
                spec, inner_spec = spec.as_dict(), inner_spec.as_dict()
                assert set(spec) == set(inner_spec), layer.name
                for key, value in inner_spec.items():
                    np.testing.assert_array_equal(spec[key], value, err_msg=layer.name)
            checked += 1
    assert checked == 4 and declared >= 2  # DFP conv/dense kernels declare a grid


def test_mask_update_refreshes_the_inner_quantizer_state(helpers):
    """After a mask change the stored weight range (used by inference/export) is that of the
    masked kernel, not of the old one."""
    from kerasq.prune.masks import set_mask

    sparse = strip(prune_model(helpers.small_model(), ConstantSparsity(0.3, 0)))
    qmodel = kerasq.quantize_model(sparse)
    slot = next(s for s in find_mask_slots(qmodel) if s.name == "fc/kernel")
    w = slot.weight.numpy()
    mask = (np.abs(w) < np.abs(w).max(axis=0, keepdims=True)).astype(np.float32)  # drop maxima
    set_mask(slot, mask)
    state = slot.quantizer_vars["inner"]
    masked = w * mask
    np.testing.assert_allclose(state["max"].numpy().reshape(-1), masked.max(axis=0))
    np.testing.assert_allclose(state["min"].numpy().reshape(-1), masked.min(axis=0))
