"""prune_model / PruningCallback / strip / sparsity report on float and quantized models.

References: tfmot's PolynomialDecay formula (Zhu & Gupta) for the sparsity reached at a step,
numpy counts of exact zeros, caffe-jacinto's schedule rules (quant-schemes.md §6.2)."""

from __future__ import annotations

import numpy as np
import pytest

from kerasq._compat import keras, tf
from kerasq.errors import ArgumentError, KerasqError, ModelFormatError
from kerasq.prune import (
    ConstantSparsity,
    JacintoChannelSchedule,
    PolynomialDecay,
    PruneWrapper,
    PruningCallback,
    SparsityReportCallback,
    find_mask_slots,
    format_sparsity,
    init_masks,
    prune_model,
    sparsity_report,
    strip,
)
from kerasq.prune.schedules import mask_sparsity


def _conv_model(filters=32, seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name="conv1")(inp)
    x = keras.layers.Conv2D(filters, 3, activation="relu", name="conv2")(x)
    x = keras.layers.Conv2D(filters, 1, name="pw")(x)  # 1x1: never thresholded by jacinto
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(10, name="fc")(x)
    return keras.Model(inp, out)


def _fit(model, x, y, epochs, callbacks, batch_size=32):
    model.compile(
        keras.optimizers.SGD(0.05, momentum=0.9),
        keras.losses.CategoricalCrossentropy(from_logits=True),
    )
    model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0, callbacks=callbacks)


def test_polynomial_decay_reaches_target_during_fit_and_strip_keeps_zeros(helpers, tmp_path):
    x, y = helpers.digits_images(128)  # 4 steps per epoch
    pruned = prune_model(_conv_model(8))
    wrapped = [layer for layer in pruned.layers if isinstance(layer, PruneWrapper)]
    assert {layer.layer.name for layer in wrapped} == {"conv1", "conv2", "pw", "fc"}
    schedule = PolynomialDecay(0.0, 0.75, begin_step=0, end_step=6, frequency=2)
    _fit(pruned, x, y, epochs=2, callbacks=[PruningCallback(schedule)])  # steps 0..7
    for slot in find_mask_slots(pruned):
        w = slot.weight.numpy()
        # last update at step 6 = end_step: s = final sparsity (tfmot formula, p = 1)
        expected = max(1, int(np.round(w.size * (1 - 0.75))))
        assert np.count_nonzero(w) <= expected, slot.name
        np.testing.assert_array_equal(w != 0, slot.mask.numpy() != 0)

    path = str(tmp_path / "pruned.h5")
    pruned.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_allclose(
        reloaded.predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-6
    )
    stripped = strip(reloaded)
    assert not any(isinstance(layer, PruneWrapper) for layer in stripped.layers)
    np.testing.assert_allclose(
        stripped.predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-6
    )
    for row in sparsity_report(stripped):
        assert row.sparsity >= 0.75 - 1.0 / row.count


def test_intermediate_polynomial_step_matches_formula(helpers):
    x, y = helpers.digits_images(64)  # 2 steps per epoch
    pruned = prune_model(_conv_model(8))
    schedule = PolynomialDecay(0.2, 0.9, begin_step=0, end_step=10, power=3, frequency=1)
    _fit(pruned, x, y, epochs=1, callbacks=[PruningCallback(schedule)])  # updates at 0 and 1
    s1 = 0.9 + (0.2 - 0.9) * (1 - 1 / 10) ** 3
    for slot in find_mask_slots(pruned):
        n = slot.weight.numpy().size
        assert np.count_nonzero(slot.mask.numpy()) == max(1, int(np.round(n * (1 - s1)))), slot.name


def test_jacinto_schedule_during_fit_reaches_target_only_on_eligible_convs(helpers):
    x, y = helpers.digits_images(256)
    pruned = prune_model(_conv_model(32))
    schedule = JacintoChannelSchedule(
        0.5,
        start_iter=1,
        start_factor=0.3,
        step_factor=0.1,
        step_iter=1,
        threshold_maxratio=1.0,
        threshold_value_max=10.0,
        threshold_step_factor=1e-6,
    )
    _fit(pruned, x, y, epochs=1, callbacks=[PruningCallback(schedule)], batch_size=16)
    slots = {s.layer_name: s for s in find_mask_slots(pruned)}
    eligible = {name for name, s in slots.items() if schedule.eligible(s)}
    assert eligible == {"conv1", "conv2"}  # 1x1 conv and Dense excluded as in Caffe
    for name in ("pw", "fc"):
        assert np.count_nonzero(slots[name].weight.numpy() == 0) == 0
    convs = [s for s in slots.values() if len(s.weight.shape) > 2]
    assert (
        mask_sparsity(convs)
        >= 0.5
        * sum(slots[n].weight.numpy().size for n in ("conv1", "conv2"))
        / sum(s.weight.numpy().size for s in convs)
        - 1e-9
    )
    # conv2 (ni = no = 32, "mid") reaches the factor used; conv1 (ni = 1, "low") half of it
    assert (slots["conv2"].weight.numpy() == 0).mean() > (slots["conv1"].weight.numpy() == 0).mean()
    assert schedule.factor <= min(0.5 + 0.15, 0.95) + schedule.step_factor + 1e-9


def test_jacinto_fractions_and_eligibility_rules():
    s = JacintoChannelSchedule(0.8, start_factor=0.6)
    assert s.fraction_for(ni=256, no=512) == 0.6
    assert s.fraction_for(ni=32, no=32) == 0.6
    assert s.fraction_for(ni=3, no=32) == 0.3
    inp = keras.Input((8, 8, 32))
    layers = {
        "c3": keras.layers.Conv2D(32, 3),
        "c1": keras.layers.Conv2D(64, 1),
        "small": keras.layers.Conv2D(16, 3),
        "dw": keras.layers.DepthwiseConv2D(3),
        "dw2": keras.layers.DepthwiseConv2D(3, depth_multiplier=2),
        "fc": keras.layers.Dense(64),
    }
    outs = [layer(inp) for layer in layers.values()]
    model = prune_model(keras.Model(inp, outs))
    by_name = {s.layer.name: s for s in find_mask_slots(model)}
    verdict = {key: s.eligible(by_name[layer.name]) for key, layer in layers.items()}
    # Caffe: (ni>=32 or no>=32), group<no, kernel > 2; depth_multiplier 2 has group = ni < no
    assert verdict == {
        "c3": True,
        "c1": False,
        "small": True,
        "dw": False,
        "dw2": True,
        "fc": False,
    }


def test_report_counts_and_format(helpers):
    model = _conv_model(8)
    for layer in model.layers:
        if layer.weights:
            w = layer.get_weights()
            w[0][np.abs(w[0]) < 0.1] = 0.0
            layer.set_weights(w)
    rows = sparsity_report(model)
    assert [r.layer for r in rows] == ["conv1", "conv2", "pw", "fc"]
    for row in rows:
        kernel = model.get_layer(row.layer).kernel.numpy()
        assert (row.zeros, row.count) == (int((kernel == 0).sum()), kernel.size)
        assert row.mask_zeros is None and row.quantized_zeros is None
    text = format_sparsity(rows)
    lines = text.splitlines()
    assert lines[0] == "Num Params(4), Sparsity (zero_weights/count): "
    zeros, total = sum(r.zeros for r in rows), sum(r.count for r in rows)
    assert (
        lines[-1] == f"Total Sparsity (zero_weights/count) =  ({zeros}/{total}) {zeros / total:.3g}"
    )
    assert lines[1].startswith(f"conv1_param_kernel({rows[0].sparsity:.3g}) ({rows[0].zeros}/")


def test_report_callback_prints_every_epoch(helpers):
    x, y = helpers.digits_images(32)
    printed = []
    pruned = prune_model(_conv_model(8), ConstantSparsity(0.5, 0))
    _fit(
        pruned,
        x,
        y,
        epochs=2,
        callbacks=[SparsityReportCallback(every_epochs=1, print_fn=printed.append)],
    )
    assert len(printed) == 2 and all(p.startswith("Num Params(4)") for p in printed)
    assert "[mask 0.5]" in printed[-1]


def test_quantize_then_prune_composes_with_float_pruned_start(helpers):
    """prune (float) -> strip -> quantize with masks -> more pruning during QAT."""
    x, y = helpers.digits_images(128)
    pruned = prune_model(helpers.small_model(), ConstantSparsity(0.5, 0))
    float_sparse = strip(pruned)
    qmodel = helpers.quantize_with_masks(float_sparse)
    assert init_masks(qmodel) == 4
    frozen = {s.name: s.weight.numpy() == 0 for s in find_mask_slots(qmodel)}
    _fit(qmodel, x, y, epochs=1, callbacks=[PruningCallback(ConstantSparsity(0.7, 0, frequency=1))])
    for slot in find_mask_slots(qmodel):
        w = slot.weight.numpy()
        assert np.all(w[frozen[slot.name]] == 0), slot.name  # earlier zeros are never revived
        assert (w == 0).mean() >= 0.7 - 1.0 / w.size, slot.name


def test_errors_name_the_problem():
    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = keras.layers.Dense(2)

        def call(self, x):
            return self.d(x)

    with pytest.raises(ModelFormatError, match="subclassed"):
        prune_model(Sub())
    with pytest.raises(ArgumentError, match="nope"):
        prune_model(_conv_model(4), layers=["nope"])
    with pytest.raises(KerasqError, match="schedule"):
        PruningCallback(0.5)
    with pytest.raises(KerasqError, match="target"):
        JacintoChannelSchedule(1.5)
    model = _conv_model(4)
    model.compile("sgd", "mse")
    with pytest.raises(KerasqError, match="no pruning masks"):
        model.fit(
            np.zeros((2, 8, 8, 1)),
            np.zeros((2, 10)),
            verbose=0,
            callbacks=[PruningCallback(ConstantSparsity(0.5, 0))],
        )


@pytest.mark.parametrize(
    "optimizer",
    [
        lambda: keras.optimizers.SGD(0.1, momentum=0.9),
        lambda: keras.optimizers.AdamW(0.1, weight_decay=0.5),
        lambda: keras.optimizers.legacy.SGD(0.1, momentum=0.9),
    ],
    ids=["sgd-momentum", "adamw", "legacy-sgd"],
)
def test_custom_training_loop_cannot_revive_pruned_weights(optimizer):
    """Momentum built up before pruning, and decoupled weight decay, would move a pruned
    weight; the mask constraint re-zeroes it inside apply_gradients."""
    keras.utils.set_random_seed(0)
    model = prune_model(keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, name="d")]))
    slot = find_mask_slots(model)[0]
    opt = optimizer()
    x = tf.random.normal((16, 6))

    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x, training=True) - 1.0))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))

    for _ in range(3):  # build up momentum on every weight
        step()
    mask = np.ones((6, 5), np.float32)
    mask[::2, :] = 0.0
    from kerasq.prune.masks import set_mask

    set_mask(slot, mask)
    for _ in range(3):
        step()
    w = slot.weight.numpy()
    assert np.all(w[mask == 0] == 0)
    assert np.all(w[mask == 1] != 0)
