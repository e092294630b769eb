"""Ristretto's bit-width search (quant-schemes.md §2.6 items 1 and 4).

The stopping rule is checked against the numbers Ristretto's own documentation publishes for
LeNet/MNIST (RIS-WEB "Ristretto tool" page, error margin 1): conv weights 16/8/4/2 bit score
0.9915/0.9915/0.9909/0.9853 against a 0.9915 baseline and the tool picks 2-bit conv weights.
The model-level test trains a small CNN on scikit-learn's real handwritten digits and checks
every row of the table against an independent evaluation of the same quantized model, and
the chosen widths against the rule applied to those independent scores.
"""

from __future__ import annotations

import numpy as np
import pytest

from kerasq.errors import QuantizationConfigError
from kerasq.schemes.search import sweep

RISTRETTO_LENET_CONV = {16: 0.9915, 8: 0.9915, 4: 0.9909, 2: 0.9853, 1: 0.1135}


def test_sweep_reproduces_ristretto_lenet_conv_choice():
    chosen, rows = sweep(RISTRETTO_LENET_CONV.__getitem__, 0.9915, (16, 8, 4, 2, 1), 1.0)
    # 1 bit: 0.1135 + 0.01 < 0.9915 fails; 2 bit: 0.9853 + 0.01 >= 0.9915 passes
    assert chosen == 2
    assert rows == [(16, 0.9915, True), (8, 0.9915, True), (4, 0.9909, True),
                    (2, 0.9853, True), (1, 0.1135, False)]


def test_sweep_stops_at_first_failure_and_never_evaluates_further():
    calls = []

    def evaluate(bw):
        calls.append(bw)
        return {16: 0.90, 8: 0.885, 4: 0.95, 2: 0.95}[bw]  # 4 would pass, but is never tried

    chosen, rows = sweep(evaluate, 0.90, (16, 8, 4, 2), 1.0)
    assert chosen == 16 and calls == [16, 8]
    assert rows[-1] == (8, 0.885, False)


def test_sweep_margin_boundary_and_percent_scores():
    # score + margin == baseline is not "<": it passes (Ristretto's comparison)
    assert sweep(lambda bw: 0.75, 0.76, (8,), 1.0)[0] == 8
    assert sweep(lambda bw: 0.7499, 0.76, (8,), 1.0)[0] is None
    assert sweep(lambda bw: 75.0, 76.0, (8,), 1.0, score_unit="percent")[0] == 8
    assert sweep(lambda bw: 74.9, 76.0, (8,), 1.0, score_unit="percent")[0] is None
    assert sweep(lambda bw: float("nan"), 0.5, (8,), 1.0)[0] is None


# ------------------------------------------------------------------------ on a real model
@pytest.fixture(scope="module")
def digits_model():
    from sklearn.datasets import load_digits

    from kerasq._compat import keras, tf

    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")[..., None]
    y = digits.target.astype("int64")
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    x, y = x[order], y[order]
    tf.random.set_seed(0)
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(8, 3, activation="relu", name="conv1")(inp)
    h = keras.layers.Conv2D(8, 3, activation="relu", name="conv2")(h)
    h = keras.layers.Flatten()(h)
    out = keras.layers.Dense(10, name="fc")(h)
    model = keras.Model(inp, out)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(x[:1400], y[:1400], epochs=8, batch_size=32, verbose=0)
    return model, x[:256], x[1400:], y[1400:]


def _accuracy(model, x, y):
    return float(np.mean(model.predict(x, batch_size=512, verbose=0).argmax(-1) == y))


@pytest.mark.parametrize("parts, candidates", [
    (("activations",), (8, 2)),
    pytest.param(("conv_weights", "dense_weights", "activations"), (8, 3),
                 marks=pytest.mark.slow),
])
def test_search_table_matches_independent_evaluations(digits_model, parts, candidates):
    import kerasq
    from kerasq.schemes import QuantizationConfig

    model, x_cal, x_val, y_val = digits_model
    result = kerasq.search_bitwidths(
        model, lambda m: _accuracy(m, x_val, y_val), x_cal, error_margin=1.0,
        parts=parts, candidates=candidates,
    )
    baseline = _accuracy(model, x_val, y_val)
    assert result.baseline == baseline and baseline > 0.8

    def independent(conv=None, dense=None, act=None):
        overrides = {
            "Conv2D": {"quantize_weights": conv is not None, **({"bitwidth_weights": conv}
                                                                 if conv else {})},
            "Dense": {"quantize_weights": dense is not None, **({"bitwidth_weights": dense}
                                                                if dense else {})},
        }
        cfg = QuantizationConfig(quantize_weights=False, quantize_activations=act is not None,
                                 bitwidth_activations=act or 8, overrides=overrides)
        qmodel = kerasq.quantize_model(model, cfg)
        kerasq.calibrate(qmodel, x_cal)
        return _accuracy(qmodel, x_val, y_val)

    by_part = {}
    for row in result.rows:
        kwargs = {"conv_weights": "conv", "dense_weights": "dense", "activations": "act"}
        assert row.score == independent(**{kwargs[row.part]: row.bitwidth}), row
        assert row.passed == (row.score + 0.01 >= baseline)
        by_part.setdefault(row.part, []).append(row)
    for part, rows in by_part.items():
        passing = [r.bitwidth for r in rows if r.passed]
        # sweep order is kept, and it stops right after the first failure
        assert [r.bitwidth for r in rows] == list(candidates)[:len(rows)]
        assert all(r.passed for r in rows[:-1])
        assert result.bitwidths[part] == (min(passing) if passing else None)
    assert set(by_part) == set(parts)
    # parts not searched keep the config's (default: 8-bit) setting
    chosen = {"conv_weights": 8, "dense_weights": 8, **result.bitwidths}
    assert result.score == independent(chosen["conv_weights"], chosen["dense_weights"],
                                       chosen["activations"])
    cfg = result.config
    assert cfg.quantize_activations == (chosen["activations"] is not None)
    conv_cfg = cfg.for_layer(model.get_layer("conv1"))
    assert conv_cfg.quantize_weights == (chosen["conv_weights"] is not None)
    if chosen["conv_weights"] is not None:
        assert conv_cfg.bitwidth_weights == chosen["conv_weights"]
    text = str(result)
    assert "baseline" in text and "combined" in text and parts[0] in text


def test_search_rejects_bad_arguments(digits_model):
    import kerasq

    model = digits_model[0]
    with pytest.raises(QuantizationConfigError, match="parts"):
        kerasq.search_bitwidths(model, lambda m: 1.0, None, parts=("bias",))
    with pytest.raises(QuantizationConfigError, match="candidates"):
        kerasq.search_bitwidths(model, lambda m: 1.0, None, candidates=(64,))
    with pytest.raises(QuantizationConfigError, match="error_margin"):
        kerasq.search_bitwidths(model, lambda m: 1.0, None, error_margin=-1)


def test_minifloat_exp_bits_by_hand():
    from kerasq.schemes.search import minifloat_exp_bits

    # 100: log2(100) - 1 = 5.64, log2(5.64) + 1 = 3.50 -> 4; 1e6: log2(18.93) + 1 = 5.24 -> 6
    assert minifloat_exp_bits([100.0]) == 4
    assert minifloat_exp_bits([3.0, 100.0, 1e6, 0.5]) == 6
    assert minifloat_exp_bits([0.25, 2.0]) == 4  # log2(max) - 1 <= 0: undefined, skipped
    assert minifloat_exp_bits([2.0 ** 33]) == 6  # log2(33 - 1) + 1 = 6 exactly: no rounding up


def test_minifloat_search_on_digits(digits_model):
    import kerasq
    from kerasq._compat import keras
    from kerasq.schemes import QuantizationConfig
    from kerasq.schemes.search import minifloat_exp_bits

    model, x_cal, x_val, y_val = digits_model
    result = kerasq.schemes.search.search_minifloat(
        model, lambda m: _accuracy(m, x_val, y_val), x_cal, error_margin=1.0,
        candidates=(8, 6))
    # exponent width from max|x| of every conv/Dense input and output, computed per layer
    maxima = []
    for name in ("conv1", "conv2", "fc"):
        layer = model.get_layer(name)
        for tensor in (layer.input, layer.output):
            values = keras.Model(model.input, tensor).predict(x_cal, verbose=0)
            maxima.append(float(np.abs(values).max()))
    exp_bits = minifloat_exp_bits(maxima)
    baseline = _accuracy(model, x_val, y_val)
    assert result.baseline == baseline
    for row in result.rows:
        cfg = QuantizationConfig(precision="minifloat", exp_bits=exp_bits,
                                 mant_bits=row.bitwidth - exp_bits - 1)
        qmodel = kerasq.quantize_model(model, cfg)
        kerasq.calibrate(qmodel, x_cal)
        assert row.score == _accuracy(qmodel, x_val, y_val)
        assert row.passed == (row.score + 0.01 >= baseline)
    passing = [r.bitwidth for r in result.rows if r.passed]
    assert result.bitwidths == {"minifloat": min(passing) if passing else None}
    if passing:
        assert (result.config.precision, result.config.exp_bits,
                result.config.mant_bits) == ("minifloat", exp_bits, min(passing) - exp_bits - 1)
    assert f"exp_bits {exp_bits}" in str(result) or "stays float" in str(result)


# ------------------------------------------------------------------------ combined miss
def parts_penalty_eval(qmodel):
    """A score that drops 0.6 points per quantized part (conv kernels, Dense kernels,
    activations), read from the quantization report: each part alone passes a 1-point
    margin, two or more together do not (the additive case Ristretto warns about)."""
    from kerasq.schemes.report import report

    parts = set()
    for row in report(qmodel):
        if row.tensor == "kernel":
            parts.add("dense" if row.layer.startswith("fc") else "conv")
        elif row.tensor != "bias":
            parts.add("activations")
    return 1.0 - 0.006 * len(parts)


def small_untrained_model():
    from kerasq._compat import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(4, 3, activation="relu", name="conv1")(inp)
    h = keras.layers.Flatten()(h)
    return keras.Model(inp, keras.layers.Dense(10, name="fc")(h))


def test_search_reports_a_combined_result_that_misses_the_margin(caplog):
    import kerasq

    x = np.random.default_rng(0).uniform(0, 1, (32, 8, 8, 1)).astype("float32")
    with caplog.at_level("WARNING", logger="kerasq.schemes.search"):
        result = kerasq.search_bitwidths(small_untrained_model(), parts_penalty_eval, x,
                                         parts=("conv_weights", "dense_weights"),
                                         candidates=(8,))
    # each part alone: 1 - 0.006 = 0.994 passes; combined (conv, dense, 8-bit activations
    # kept from the default config): 1 - 0.018 = 0.982, 1.8 points below the baseline
    assert all(r.passed and r.score == pytest.approx(0.994) for r in result.rows)
    assert result.score == pytest.approx(0.982)
    assert not result.within_margin
    message = result.margin_warning()
    assert "1.80 points below" in message and "1 point error margin" in message
    assert "MISSES THE MARGIN" in result.table()
    assert any("1.80 points below" in r.getMessage() for r in caplog.records)
    # within the margin: no message
    relaxed = kerasq.search_bitwidths(small_untrained_model(), parts_penalty_eval, x,
                                      error_margin=2.0, parts=("conv_weights",),
                                      candidates=(8,))
    assert relaxed.within_margin and relaxed.margin_warning() == ""
