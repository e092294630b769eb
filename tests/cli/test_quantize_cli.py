"""``kerasq quantize``: PTQ from flags / prototxt / JSON, search, report, atomic one-line errors.

The reference for what the command writes is the Python API run in-process on the same
model and data (``quantize_model`` + ``calibrate``, themselves tested against
``kerasq.numerics``); the model is a small CNN trained on scikit-learn's real digits.
"""

from __future__ import annotations

import os
import pathlib

import numpy as np
import pytest

from kerasq.cli import main

DATA = pathlib.Path(__file__).resolve().parent.parent / "schemes" / "data"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    from sklearn.datasets import load_digits

    from kerasq._compat import keras

    root = tmp_path_factory.mktemp("quantize_cli")
    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")[..., None]
    y = digits.target.astype("int64")
    keras.utils.set_random_seed(1)
    inp = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(6, 3, activation="relu", name="conv1a")(inp)
    h = keras.layers.Flatten(name="flat")(h)
    out = keras.layers.Dense(10, name="fc")(h)
    model = keras.Model(inp, out)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[:1400], y[:1400], epochs=5, batch_size=64, verbose=0)
    model.save(root / "model.h5")
    np.save(root / "cal.npy", x[:128])
    np.savez(root / "val.npz", x=x[1400:], y=y[1400:])
    return root


def _reference(model_path, config, x_cal):
    import kerasq

    model = kerasq.load_model(model_path)
    qmodel = kerasq.quantize_model(model, config)
    kerasq.calibrate(qmodel, x_cal)
    return qmodel


def _bits(qmodel):
    from kerasq.schemes.report import report

    return {(r.layer, r.tensor): r for r in report(qmodel)}


def test_flags_and_calibration_match_the_python_api(workdir, capsys):
    import kerasq
    from kerasq.schemes import QuantizationConfig

    out = workdir / "q_flags.h5"
    status = main(["quantize", str(workdir / "model.h5"), "--bits-weights", "6",
                   "--bits-activations", "7", "--per-tensor", "--calibration",
                   str(workdir / "cal.npy"), "-o", str(out)])
    assert status == 0 and out.is_file()
    assert f"wrote {out}" in capsys.readouterr().out
    x_cal = np.load(workdir / "cal.npy")
    x_val = np.load(workdir / "val.npz")["x"]
    ref = _reference(workdir / "model.h5", QuantizationConfig(
        bitwidth_weights=6, bitwidth_activations=7, per_channel_weights=False), x_cal)
    written = kerasq.load_model(out)
    np.testing.assert_array_equal(written.predict(x_val, verbose=0), ref.predict(x_val, verbose=0))
    rows = _bits(written)
    assert rows[("conv1a", "kernel")].bits == 6
    assert rows[("conv1a", "kernel")].frac_bits[0] == rows[("conv1a", "kernel")].frac_bits[1]


def test_prototxt_config_with_overrides_and_saved_json(workdir):
    import kerasq
    from kerasq.schemes import QuantizationConfig

    out, saved = workdir / "q_caffe", workdir / "cfg.json"
    status = main(["quantize", str(workdir / "model.h5"), "--config",
                   str(DATA / "jacinto017_defaults.prototxt"), "--bits-activations", "9",
                   "--calibration", str(workdir / "cal.npy"), "--save-config", str(saved),
                   "-o", str(out)])
    assert status == 0 and out.is_dir()  # no extension: SavedModel directory
    expected = QuantizationConfig.from_caffe(DATA / "jacinto017_defaults.prototxt").replace(
        bitwidth_activations=9)
    assert QuantizationConfig.from_json(saved.read_text()) == expected
    rows = _bits(kerasq.load_model(out))
    assert rows[("conv1a", "kernel")].bits == 12  # caffe-jacinto 0.17 default
    assert rows[("conv1a", "kernel")].format == "affine"  # non-power-2 with offset
    # the JSON written by --save-config is accepted by --config
    out2 = workdir / "q_json.h5"
    assert main(["quantize", str(workdir / "model.h5"), "--config", str(saved),
                 "--calibration", str(workdir / "cal.npy"), "-o", str(out2)]) == 0
    x_val = np.load(workdir / "val.npz")["x"]
    np.testing.assert_array_equal(kerasq.load_model(out2).predict(x_val, verbose=0),
                                  kerasq.load_model(out).predict(x_val, verbose=0))


def test_search_and_report(workdir, capsys):
    out = workdir / "q_search.h5"
    status = main(["quantize", str(workdir / "model.h5"), "--search", "--eval",
                   str(workdir / "val.npz"), "--calibration", str(workdir / "cal.npy"),
                   "--candidates", "6", "--report", "-o", str(out)])
    captured = capsys.readouterr()
    text = captured.out
    assert status == 0 and out.is_file()
    assert "baseline" in text and "combined" in text and "SQNR dB" in text
    assert "search: float baseline:" in captured.err  # progress, one line per evaluation
    assert "search: activations 6 bit:" in captured.err
    assert "accuracy: float" in text


def test_minifloat_search(workdir, capsys):
    from kerasq.schemes.report import report

    import kerasq

    out = workdir / "q_minifloat.h5"
    status = main(["quantize", str(workdir / "model.h5"), "--search", "--search-mode",
                   "minifloat", "--candidates", "8", "--eval", str(workdir / "val.npz"),
                   "--calibration", str(workdir / "cal.npy"), "-o", str(out)])
    captured = capsys.readouterr()
    assert status == 0 and "minifloat" in captured.out and "search: minifloat 8 bit" in captured.err
    formats = {r.format for r in report(kerasq.load_model(out))}
    if "exp_bits 4, mant_bits 3" in captured.out:  # the 8-bit format passed the margin
        assert formats == {"minifloat E4M3"}
    else:
        assert "stays float" in captured.out and formats == set()


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--bits-weights", "40"], "bitwidth_weights=40"),
        (["--config", "{bad}"], "bad.prototxt: line 2: expected ':'"),
        (["--search"], "--search needs --eval"),
        (["--calibration", "{missing}"], "missing.npy: data not found"),
    ],
)
def test_errors_are_one_line_exit_2_and_leave_no_file(workdir, capsys, tmp_path, extra, needle):
    bad = tmp_path / "bad.prototxt"
    bad.write_text("quantize: true\nnet_quantization_param { bitwidth_weights 8 }\n")
    extra = [e.format(bad=bad, missing=tmp_path / "missing.npy") for e in extra]
    out = tmp_path / "never.h5"
    status = main(["quantize", str(workdir / "model.h5"), *extra, "-o", str(out)])
    err = capsys.readouterr().err.strip()
    assert status == 2 and err.startswith("kerasq: error: ") and "\n" not in err
    assert needle in err
    assert not out.exists() and os.listdir(tmp_path) == ["bad.prototxt"]


def test_quantized_input_model_is_rejected(workdir, tmp_path, capsys):
    first = tmp_path / "q.h5"
    assert main(["quantize", str(workdir / "model.h5"), "-o", str(first)]) == 0
    capsys.readouterr()
    status = main(["quantize", str(first), "-o", str(tmp_path / "qq.h5")])
    err = capsys.readouterr().err
    assert status == 2 and "already quantized" in err and not (tmp_path / "qq.h5").exists()


def test_missing_model_is_a_model_format_error(tmp_path, capsys):
    status = main(["quantize", str(tmp_path / "nope.h5"), "-o", str(tmp_path / "q.h5")])
    err = capsys.readouterr().err
    assert status == 2 and "nope.h5: no such file" in err
    assert not (tmp_path / "q.h5").exists()



def test_inspect_prints_the_quantization_table(workdir, capsys):
    from kerasq.schemes.report import format_report, report

    import kerasq

    out = workdir / "q_inspect.h5"
    assert main(["quantize", str(workdir / "model.h5"), "--calibration",
                 str(workdir / "cal.npy"), "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["inspect", str(out), "--data", str(workdir / "cal.npy")]) == 0
    text = capsys.readouterr().out
    # the same table as the Python API on the same data
    expected = format_report(report(kerasq.load_model(out), np.load(workdir / "cal.npy")))
    assert "quantization (" in text and expected in text
    assert main(["inspect", str(workdir / "model.h5")]) == 0
    assert "quantization (" not in capsys.readouterr().out  # float model: no table


def test_convert_quantize_applies_the_prototxt_settings(tmp_path, capsys):
    """``kerasq convert --quantize`` on the real LeNet with a caffe-jacinto 0.16 header."""
    from conftest import shared_path

    import kerasq
    from kerasq.converters import caffe
    from kerasq.schemes import QuantizationConfig

    folder = shared_path("caffe-models", "lenet-mnist")
    prototxt = tmp_path / "lenet_quantize.prototxt"
    prototxt.write_text(
        "quantize: true\nnet_quantization_param {\n  bitwidth_weights: 6\n"
        "  power2_range: true\n  apply_offset_weights: false\n}\n"
        + (folder / "lenet.prototxt").read_text()
    )
    weights = folder / "lenet_iter_10000.caffemodel"
    x = np.random.default_rng(0).uniform(0, 1, (16, 28, 28, 1)).astype("float32")
    np.save(tmp_path / "cal.npy", x)
    out = tmp_path / "lenet_q.h5"
    assert main(["convert", str(prototxt), str(weights), "--quantize", "--calibration",
                 str(tmp_path / "cal.npy"), "-o", str(out)]) == 0
    capsys.readouterr()
    config = QuantizationConfig.from_caffe(prototxt)
    assert (config.bitwidth_weights, config.power2_range) == (6, True)
    reference = kerasq.quantize_model(caffe.load(str(prototxt), str(weights)), config)
    kerasq.calibrate(reference, x)
    written = kerasq.load_model(out)
    np.testing.assert_array_equal(written.predict(x, verbose=0), reference.predict(x, verbose=0))
    rows = _bits(written)
    assert rows[("conv1", "kernel")].bits == 6 and rows[("ip2", "kernel")].bits == 6


def test_convert_with_a_ristretto_quantize_config(tmp_path, capsys):
    """The settings of a Ristretto-quantized LeNet (types *Ristretto, fixed bw/fl) land on
    the layers of the converted float LeNet by Caffe layer name."""
    import re

    from conftest import shared_path

    import kerasq

    folder = shared_path("caffe-models", "lenet-mnist")
    text = (folder / "lenet.prototxt").read_text()
    params = {"conv1": (8, 8, 4, 6), "conv2": (8, 6, 3, 7), "ip1": (6, 5, 5, 8),
              "ip2": (4, 4, 2, 5)}  # bw_params, bw_layer_out, fl_params, fl_layer_out

    def ristretto(match):
        name = match.group(1)
        bw, bw_out, fl, fl_out = params[name]
        kind = "ConvolutionRistretto" if name.startswith("conv") else "FcRistretto"
        return (f'name: "{name}"\n  type: "{kind}"\n  quantization_param {{ bw_params: {bw} '
                f"bw_layer_out: {bw_out} fl_params: {fl} fl_layer_out: {fl_out} "
                f"bw_layer_in: 8 fl_layer_in: 0 }}")

    ris = re.sub(r'name: "(conv1|conv2|ip1|ip2)"\s*type: "(?:Convolution|InnerProduct)"',
                 ristretto, text)
    assert ris.count("Ristretto\"") == 4
    (tmp_path / "ristretto.prototxt").write_text(ris)
    x = np.random.default_rng(1).uniform(0, 1, (8, 28, 28, 1)).astype("float32")
    np.save(tmp_path / "cal.npy", x)
    out = tmp_path / "lenet_ris.h5"
    assert main(["convert", str(folder / "lenet.prototxt"),
                 str(folder / "lenet_iter_10000.caffemodel"), "--quantize-config",
                 str(tmp_path / "ristretto.prototxt"), "--calibration", str(tmp_path / "cal.npy"),
                 "-o", str(out)]) == 0
    capsys.readouterr()
    rows = _bits(kerasq.load_model(out))
    for name, (bw, bw_out, fl, fl_out) in params.items():
        kernel = rows[(name, "kernel")]
        assert (kernel.bits, kernel.frac_bits) == (bw, (fl, fl)), name
        output = rows[(name, "output")]  # trimmed before the (float) ReLU, as in Ristretto
        assert (output.bits, output.frac_bits, output.signed) == (bw_out, (fl_out, fl_out),
                                                                  True), name
    assert ("pool1", "output") not in rows  # not a Ristretto layer: stays float


@pytest.mark.parametrize("strict", [False, True])
def test_search_missing_its_margin_warns_or_fails_with_strict(workdir, capsys, monkeypatch,
                                                             strict):
    import kerasq.cli.quantize as quantize_cli
    from kerasq.schemes.report import report

    def parts_penalty_eval(qmodel):  # 0.6 points per quantized part: alone each passes
        parts = {r.layer if r.tensor == "kernel" else "activations"
                 for r in report(qmodel) if r.tensor != "bias"}
        return 1.0 - 0.006 * len(parts)  # conv1a, fc, activations

    monkeypatch.setattr(quantize_cli, "accuracy_fn", lambda x, y: parts_penalty_eval)
    out = workdir / f"q_margin_{strict}.h5"
    status = main(["quantize", str(workdir / "model.h5"), "--search", "--eval",
                   str(workdir / "val.npz"), "--calibration", str(workdir / "cal.npy"),
                   "--candidates", "8", "-o", str(out)] + (["--strict"] if strict else []))
    err = capsys.readouterr().err
    assert "points below the float baseline" in err and "error margin" in err
    if strict:
        assert status == 2 and not out.exists()
        assert "kerasq: error:" in err and "--search" in err
    else:
        assert status == 0 and out.is_file() and "kerasq: warning:" in err
