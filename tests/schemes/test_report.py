"""kerasq.schemes.report: formats, fractional lengths and SQNR against a numpy computation.

The reference quantizers below are written from the spec (quant-schemes.md §1.2, §2.2, §2.3):
DFP x' = clip(round(x·2^fl), qmin, qmax)·2^-fl with round = ties away from zero, per-channel
weight fl = B − (ceil(log2 max|w_c|) + 1); Ristretto's minifloat trim; SQNR =
10·log10(Σx²/Σ(x−q)²) summed over all batches in float64.
"""

from __future__ import annotations

import math

import numpy as np
import pytest


def _round_away(y):
    return np.sign(y) * np.floor(np.abs(y) + 0.5)


def _dfp(x, bits, fl, signed=True):
    qmin, qmax = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)
    scale = np.float64(2.0) ** np.asarray(fl, dtype=np.float64)
    return np.clip(_round_away(np.asarray(x, np.float64) * scale), qmin, qmax) / scale


def _minifloat(x, exp_bits, mant_bits):
    """Ristretto Trim2MiniFloat (NEAREST), element-wise on float32 bit fields."""
    x = np.asarray(x, np.float32)
    bits = x.view(np.uint32).astype(np.int64)
    sign = np.where(bits >> 31, -1.0, 1.0)
    e32 = (bits >> 23) & 0xFF
    frac = bits & 0x7FFFFF
    bias = 2 ** (exp_bits - 1) - 1
    e = e32 - 127 + bias
    m = _round_away(frac / 2.0 ** (23 - mant_bits))
    sat = e > 2 ** exp_bits - 1
    e = np.where(sat, 2 ** exp_bits - 1, e)
    m = np.where(sat, 2 ** mant_bits - 1, m)
    out = sign * (1.0 + m / 2.0 ** mant_bits) * np.power(2.0, (e - bias).astype(np.float64))
    return np.where((e32 == 0) | (e < 0), 0.0, out)


def _sqnr(x, q):
    x = np.asarray(x, np.float64)
    q = np.asarray(q, np.float64)
    noise = np.sum((x - q) ** 2)
    return math.inf if noise == 0 else 10 * math.log10(np.sum(x * x) / noise)


def _weight_fl(w, bits):
    max_abs = np.abs(w).max(axis=0)  # Dense kernel (in, out): one fl per output channel
    return bits - (np.ceil(np.log2(max_abs)) + 1)


@pytest.fixture(scope="module")
def dense_model():
    from kerasq._compat import keras

    keras.utils.set_random_seed(3)
    inp = keras.Input((16,))
    h = keras.layers.Dense(12, activation="relu", use_bias=False, name="d1")(inp)
    out = keras.layers.Dense(5, use_bias=False, name="d2")(h)
    model = keras.Model(inp, out)
    x = np.random.default_rng(3).normal(size=(96, 16)).astype("float32")
    return model, x


def test_dfp_rows_match_numpy(dense_model):
    import kerasq
    from kerasq.schemes.report import format_report

    model, x = dense_model
    qmodel = kerasq.quantize_model(model, kerasq.QuantizationConfig(rounding="nearest"))  # as _dfp
    kerasq.calibrate(qmodel, x)
    rows = kerasq.schemes.report(qmodel, x, batch_size=32)  # the module is callable
    by = {(r.layer, r.tensor): r for r in rows}
    assert {("d1", "kernel"), ("d2", "kernel"), ("d1", "output"), ("d2", "output")} <= set(by)

    w1 = model.get_layer("d1").kernel.numpy()
    w2 = model.get_layer("d2").kernel.numpy()
    wq = {}
    for name, w in (("d1", w1), ("d2", w2)):
        fl = _weight_fl(w, 8)
        wq[name] = _dfp(w, 8, fl)
        row = by[(name, "kernel")]
        assert (row.format, row.bits, row.signed) == ("dfp", 8, True)
        assert row.frac_bits == (fl.min(), fl.max())
        assert (row.min, row.max) == pytest.approx((w.min(), w.max()))
        assert row.sqnr_db == pytest.approx(_sqnr(w, wq[name]), rel=1e-9)
        assert row.elements == w.size

    # activations: recompute the quantized forward pass with the reported fractional lengths
    inputs = [r for r in rows if r.tensor == "input"]
    if inputs:
        fl_in = inputs[0].frac_bits[0]
        x_q = _dfp(x, 8, fl_in, signed=inputs[0].signed).astype(np.float32)
        assert inputs[0].sqnr_db == pytest.approx(_sqnr(x, x_q), rel=1e-6)
    else:
        x_q = x
    d1 = by[("d1", "output")]
    pre1 = np.maximum(x_q @ wq["d1"].astype(np.float32), 0.0)
    assert d1.signed is False  # post-ReLU: unsigned range
    # calibration runs the float model (Ristretto's statistics pass): the range is float's
    assert d1.max == pytest.approx(np.maximum(x @ w1, 0.0).max(), rel=1e-5)
    q1 = _dfp(pre1, 8, d1.frac_bits[0], signed=False).astype(np.float32)
    assert d1.sqnr_db == pytest.approx(_sqnr(pre1, q1), rel=1e-4)
    assert d1.elements == pre1.size
    d2 = by[("d2", "output")]
    pre2 = q1 @ wq["d2"].astype(np.float32)
    q2 = _dfp(pre2, 8, d2.frac_bits[0], signed=True)
    assert d2.sqnr_db == pytest.approx(_sqnr(pre2, q2), rel=1e-4)
    np.testing.assert_allclose(qmodel.predict(x, verbose=0), q2, rtol=0, atol=1e-6)

    text = format_report(rows)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["layer", "tensor", "format"] and "SQNR dB" in lines[0]
    assert len(lines) == len(rows) + 2
    d1_line = next(line for line in lines if line.startswith("d1") and " output " in line)
    assert f"{d1.sqnr_db:.2f}" in d1_line and " no " in d1_line


def test_without_data_only_weights_have_sqnr(dense_model):
    import kerasq
    from kerasq.schemes.report import report

    model, x = dense_model
    qmodel = kerasq.quantize_model(model, kerasq.QuantizationConfig(per_channel_weights=False))
    kerasq.calibrate(qmodel, x)
    rows = report(qmodel)
    for row in rows:
        assert (row.sqnr_db is not None) == (row.tensor == "kernel"), row
    w1 = model.get_layer("d1").kernel.numpy()
    fl = 8 - (math.ceil(math.log2(np.abs(w1).max())) + 1)
    row = next(r for r in rows if (r.layer, r.tensor) == ("d1", "kernel"))
    assert row.frac_bits == (fl, fl)
    assert row.sqnr_db == pytest.approx(_sqnr(w1, _dfp(w1, 8, fl)), rel=1e-9)


def test_minifloat_rows(dense_model):
    import kerasq
    from kerasq.schemes.report import report

    model, x = dense_model
    cfg = kerasq.QuantizationConfig(precision="minifloat", exp_bits=4, mant_bits=3)
    qmodel = kerasq.quantize_model(model, cfg)
    kerasq.calibrate(qmodel, x)
    rows = {(r.layer, r.tensor): r for r in report(qmodel)}
    row = rows[("d2", "kernel")]
    assert (row.format, row.bits) == ("minifloat E4M3", 8)
    w2 = model.get_layer("d2").kernel.numpy()
    assert row.sqnr_db == pytest.approx(_sqnr(w2, _minifloat(w2, 4, 3)), rel=1e-9)


def test_sqnr_helper_and_float_model():
    from kerasq.schemes.report import format_report, report, sqnr_db

    assert sqnr_db([3.0, 4.0], [3.0, 4.0]) == math.inf
    assert math.isnan(sqnr_db([0.0], [0.1]))
    assert sqnr_db([1.0, 2.0], [1.0, 2.5]) == pytest.approx(10 * math.log10(5 / 0.25))
    from kerasq._compat import keras

    plain = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    assert report(plain) == [] and format_report([]) == "no quantized tensors"


def test_sparsity_preserving_weights_are_described_by_the_inner_quantizer():
    import kerasq
    from kerasq._compat import keras
    from kerasq.schemes.report import report

    keras.utils.set_random_seed(5)
    inp = keras.Input((16,))
    model = keras.Model(inp, keras.layers.Dense(8, name="sparse", use_bias=False)(inp))
    w = model.get_layer("sparse").kernel.numpy()
    w[np.abs(w) < 0.2] = 0.0
    model.get_layer("sparse").kernel.assign(w)
    x = np.random.default_rng(5).uniform(0, 1, (32, 16)).astype("float32")
    qmodel = kerasq.quantize_model(model, preserve_sparsity=True)
    kerasq.calibrate(qmodel, x)
    row = next(r for r in report(qmodel) if r.tensor == "kernel")
    fl = _weight_fl(w, 8)
    assert (row.format, row.bits, row.frac_bits) == ("dfp", 8, (fl.min(), fl.max()))
    assert (row.min, row.max) == pytest.approx((w.min(), w.max()))
    assert row.sqnr_db == pytest.approx(_sqnr(w, _dfp(w, 8, fl)), rel=1e-9)


def test_dataset_of_pairs_gives_the_same_rows_as_arrays(dense_model):
    import kerasq
    from kerasq._compat import tf
    from kerasq.schemes.report import report

    model, x = dense_model
    qmodel = kerasq.quantize_model(model)
    kerasq.calibrate(qmodel, x)
    labels = np.zeros(len(x), dtype="int64")
    dataset = tf.data.Dataset.from_tensor_slices((x, labels)).batch(32)
    from_arrays = report(qmodel, x, batch_size=32)
    from_dataset = report(qmodel, dataset)
    assert [r.to_dict() for r in from_dataset] == [r.to_dict() for r in from_arrays]
    limited = {(r.layer, r.tensor): r for r in report(qmodel, x, batch_size=32, steps=1)}
    assert limited[("d1", "output")].elements == 32 * 12


@pytest.mark.parametrize("first", ["import kerasq", "import kerasq.schemes.report, kerasq"])
def test_report_is_callable_and_has_format_report_whatever_the_import_order(first):
    import subprocess
    import sys

    code = (f"{first}\nr = kerasq.schemes.report\n"
            "assert callable(r) and callable(r.format_report) and callable(r.report)\n"
            "assert r.format_report([]) == 'no quantized tensors'\nprint('ok')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr


def test_accumulator_bias_is_reported_float_until_linked():
    import kerasq
    from kerasq._compat import keras
    from kerasq.schemes import align_for_int8, report

    model = keras.Sequential([keras.layers.Input((6,)), keras.layers.Dense(3)])
    x = np.random.RandomState(0).randn(16, 6).astype("float32")
    qmodel = kerasq.quantize_model(model)
    bias_rows = [r for r in report(qmodel) if r.tensor == "bias"]
    assert bias_rows and all(r.format == "float (acc)" and r.frac_bits is None for r in bias_rows)
    kerasq.calibrate(qmodel, x)  # calibration aligns for int8: the bias is linked
    linked = [r for r in report(qmodel) if r.tensor == "bias"]
    assert all(r.format == "dfp" and r.frac_bits is not None for r in linked)
    align_for_int8(qmodel)  # idempotent
    linked = [r for r in report(qmodel) if r.tensor == "bias"]
    assert all(r.format == "dfp" and r.frac_bits is not None for r in linked)
