"""Calibration reproduces Ristretto's fractional lengths and caffe-jacinto's EMA ranges on
hand-computed examples; quantization_start delays fake quantization."""

from __future__ import annotations

import numpy as np
import pytest

import kerasq
from kerasq._compat import keras
from kerasq.schemes.config import QuantizationConfig


def _dense_model():
    inp = keras.Input((4,), name="x")
    out = keras.layers.Dense(2, name="fc")(inp)
    model = keras.Model(inp, out)
    # max|w| = 0.7 (il = ceil(log2 0.7) + 1 = 1), bias 0
    model.get_layer("fc").set_weights([
        np.array([[0.7, -0.1], [0.2, 0.3], [-0.5, 0.05], [0.1, -0.6]], np.float32),
        np.zeros(2, np.float32)])
    return model


def _vars(qmodel, layer_name):
    return {v.name.split("/")[-1].split(":")[0]: v.numpy()
            for v in qmodel.get_layer(layer_name).weights}


def _batches():
    b1 = np.zeros((2, 4), np.float32)
    b1[0, 0], b1[1, 2] = 3.2, -1.0    # max|x| = 3.2, min = -1
    b2 = np.zeros((2, 4), np.float32)
    b2[0, 1], b2[1, 3] = -5.9, 2.0    # max|x| = 5.9, min = -5.9
    return [b1, b2]


def test_ristretto_fractional_lengths_hand_computed():
    """Ristretto quantization.cpp: il_in = ceil(log2 max|x|), il_params = ceil(log2 max|w| + 1),
    fl = bw - il; max over all statistics batches (not an EMA)."""
    cfg = QuantizationConfig(range_estimator="max_abs", per_channel_weights=False,
                             unsigned_activations=False)
    q = kerasq.quantize_model(_dense_model(), cfg)
    kerasq.calibrate(q, [_batches()[0]])
    v = _vars(q, "x_quantize")
    assert v["x_quantize_max"] == pytest.approx(3.2) and v["x_quantize_frac_bits"] == 8 - 2
    kerasq.calibrate(q, _batches())  # running max over both batches: 5.9 -> il 3
    v = _vars(q, "x_quantize")
    assert v["x_quantize_max"] == pytest.approx(5.9) and v["x_quantize_frac_bits"] == 8 - 3
    w = _vars(q, "quant_fc")
    assert w["kernel_frac_bits"] == 8 - 1  # il_params = ceil(log2(0.7) + 1) = 1
    # and the input is trimmed with that fl, signed, saturating at 127/32 (Ristretto's
    # deliberately short il: values above 2^(il-1) saturate)
    x = np.array([[5.9, -5.9, 3.96, 0.01]], np.float32)
    layer = q.get_layer("x_quantize")
    out = layer.quantizer(x, False, layer.quantizer_vars).numpy()
    np.testing.assert_array_equal(out, [[127 / 32, -4.0, 127 / 32, 0.0]])


def test_jacinto_ema_ranges_hand_computed():
    """caffe-jacinto 0.17 UpdateQuantizationRangeInLayers: first batch r = e·batch,
    then r <- (1 - b)·r + b·e·batch, separately for min and max (b = 0.01, e = 1.25)."""
    b1 = np.array([[2.0, -1.0, 0.0, 0.0]], np.float32)
    b2 = np.array([[4.0, -3.0, 0.0, 0.0]], np.float32)
    b3 = np.array([[1.0, 0.5, 0.0, 0.0]], np.float32)
    q = kerasq.quantize_model(_dense_model(), QuantizationConfig(range_estimator="ema"))
    kerasq.calibrate(q, [b1, b2, b3])
    v = _vars(q, "x_quantize")
    r_max = 1.25 * 2.0                                  # 2.5
    r_max = 0.99 * r_max + 0.01 * 1.25 * 4.0            # 2.525
    r_max = 0.99 * r_max + 0.01 * 1.25 * 1.0            # 2.51225
    r_min = 1.25 * -1.0                                 # -1.25
    r_min = 0.99 * r_min + 0.01 * 1.25 * -3.0           # -1.275
    r_min = 0.99 * r_min + 0.01 * 1.25 * 0.0            # -1.26225
    assert v["x_quantize_max"] == pytest.approx(r_max, rel=1e-6)
    assert v["x_quantize_min"] == pytest.approx(r_min, rel=1e-6)
    assert v["x_quantize_frac_bits"] == 8 - (2 + 1)  # signed, ceil(log2 2.51225) = 2


def test_minmax_and_percentile_ranges():
    q = kerasq.quantize_model(_dense_model())
    kerasq.calibrate(q, _batches())
    v = _vars(q, "x_quantize")
    assert (v["x_quantize_min"], v["x_quantize_max"]) == (pytest.approx(-5.9), pytest.approx(3.2))
    data = np.linspace(0.0, 10.0, 10000, dtype=np.float32).reshape(-1, 4)
    q = kerasq.quantize_model(_dense_model(), QuantizationConfig(range_estimator="percentile",
                                                                 percentile=99.0))
    kerasq.calibrate(q, data, batch_size=len(data))
    assert _vars(q, "x_quantize")["x_quantize_max"] == pytest.approx(9.9, abs=2e-3)


def test_calibration_does_not_change_weights_and_reset_forgets():
    model = _dense_model()
    q = kerasq.quantize_model(model)
    before = [w.copy() for w in q.get_weights() if w.ndim == 2]
    kerasq.calibrate(q, np.full((3, 4), 100.0, np.float32))
    kerasq.calibrate(q, _batches())  # reset=True: the 100s are forgotten
    assert _vars(q, "x_quantize")["x_quantize_max"] == pytest.approx(3.2)
    after = [w for w in q.get_weights() if w.ndim == 2]
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(kerasq.KerasqError, match="empty"):
        kerasq.calibrate(q, [])


def test_quantization_start_delays_fake_quantization():
    model = _dense_model()
    x = np.random.RandomState(0).normal(0, 1, (8, 4)).astype(np.float32)
    q = kerasq.quantize_model(model, QuantizationConfig(
        quantization_start=3, bitwidth_weights=3, rounding="nearest", train_rounding="nearest"))
    float_out = model(x).numpy()
    for _ in range(3):  # statistics only: exactly the float model
        np.testing.assert_array_equal(q(x, training=True).numpy(), float_out)
    quantized = q(x, training=True).numpy()  # 4th step: quantized with 3-bit weights
    assert np.max(np.abs(quantized - float_out)) > 1e-2
    np.testing.assert_array_equal(q(x, training=False).numpy(), quantized)
    assert _vars(q, "x_quantize")["x_quantize_count"] == 4


def test_calibration_accepts_datasets_generators_and_steps():
    from kerasq._compat import tf

    x = np.concatenate(_batches())
    y = np.zeros(len(x))
    for data, kwargs in [
        (tf.data.Dataset.from_tensor_slices((x, y)).batch(2), {}),
        ((b for b in _batches()), {}),
        (x, {"batch_size": 1, "steps": 4}),
    ]:
        q = kerasq.quantize_model(_dense_model())
        kerasq.calibrate(q, data, **kwargs)
        v = _vars(q, "x_quantize")
        assert (v["x_quantize_min"], v["x_quantize_max"]) == (pytest.approx(-5.9),
                                                              pytest.approx(3.2))
    q = kerasq.quantize_model(_dense_model())
    kerasq.calibrate(q, x, batch_size=1, steps=1)  # only the first row: max 3.2, min 0
    assert _vars(q, "x_quantize")["x_quantize_count"] == 1
    assert _vars(q, "x_quantize")["x_quantize_min"] == 0.0


def test_bias_after_absval_is_linked_to_the_accumulator_grid():
    """Conv -> tanh -> AbsVal -> MaxPool -> Conv (VanillaCNN's pattern): |x| keeps the step
    of x, so the second bias is put on 2^-(fl_in + fl_w) with fl_in the tanh output's fl,
    the grid TFLite's int32 bias has (hand-computed from the stored fls)."""
    from kerasq.converters.caffe.keras_layers import AbsVal
    from kerasq.schemes.slots import output_slot, weight_slots

    inp = keras.Input((12, 12, 3))
    y = keras.layers.Conv2D(4, 3, name="conv1")(inp)
    y = keras.layers.Activation("tanh", name="tanh1")(y)
    y = AbsVal(name="abs1")(y)
    y = keras.layers.MaxPooling2D(2, name="pool1")(y)
    y = keras.layers.Conv2D(5, 3, name="conv2")(y)
    model = keras.Model(inp, y)
    x = np.random.default_rng(0).uniform(-1, 1, (8, 12, 12, 3)).astype("float32")
    qmodel = kerasq.calibrate(kerasq.quantize_model(model), x)
    layers = {getattr(l, "layer", l).name: l for l in qmodel.layers}
    _, tanh_vars = output_slot(layers["tanh1"]).base()
    fl_in = float(tanh_vars["frac_bits"].numpy())
    slots = {s.role: s.base() for s in weight_slots(layers["conv2"])}
    fl_w = np.asarray(slots["kernel"][1]["frac_bits"].numpy()).reshape(-1)
    bias_vars = slots["bias"][1]
    assert float(bias_vars["linked"].numpy()) == 1.0
    np.testing.assert_array_equal(np.asarray(bias_vars["frac_bits"].numpy()).reshape(-1),
                                  fl_w + fl_in)


def test_a_second_calibrate_call_reuses_the_traced_graph():
    """The calibration graph is traced once per model: later calls (another data set, a
    shorter last batch, reset) reuse it and still give the running min/max of their data
    (numpy reference)."""

    from kerasq.schemes import calibration as calibrate_module
    q = kerasq.quantize_model(_dense_model(), QuantizationConfig(range_estimator="minmax"))
    rng = np.random.RandomState(0)
    first, second = rng.normal(0, 2, (40, 4)).astype(np.float32), rng.normal(0, 5, (70, 4))
    kerasq.calibrate(q, first, batch_size=16)  # 16, 16, 8: the batch dimension generalizes
    collect = calibrate_module._COLLECT_FUNCTIONS[q][2]
    traces = collect.experimental_get_tracing_count()
    kerasq.calibrate(q, second.astype(np.float32), batch_size=16, verbose=0)
    assert calibrate_module._COLLECT_FUNCTIONS[q][2] is collect
    assert collect.experimental_get_tracing_count() == traces
    v = _vars(q, "x_quantize")
    x32 = second.astype(np.float32)
    assert v["x_quantize_min"] == x32.min() and v["x_quantize_max"] == x32.max()
    fresh = kerasq.calibrate(kerasq.quantize_model(_dense_model(), QuantizationConfig(
        range_estimator="minmax")), x32, batch_size=16)
    for a, b in zip(q.get_weights(), fresh.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_calibration_cache_does_not_keep_a_model_alive():
    import gc
    import weakref

    from kerasq.schemes import calibration as calibrate_module
    q = kerasq.calibrate(kerasq.quantize_model(_dense_model()), _batches())
    assert q in calibrate_module._COLLECT_FUNCTIONS
    ref = weakref.ref(q)
    del q
    gc.collect()
    assert ref() is None
