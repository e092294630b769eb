"""``kerasq inspect --report``: the run report's numbers against independent computations.

References: file sizes from the filesystem and Python's gzip, kernel SQNR from a numpy
DFP quantization of the kernel (ties to even, clamp to the signed 8-bit codes), sparsity
from counting zeros of the saved kernels, histogram counts from ``np.histogram`` of the
kernels and of the layer outputs computed by Keras, latency from the interpreter. The model
is a small CNN trained on scikit-learn's real digits, with one kernel half zeroed.
"""

from __future__ import annotations

import base64
import gzip
import json
import math
import re

import numpy as np
import pytest

from kerasq.cli import main


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from sklearn.datasets import load_digits

    import kerasq
    from kerasq._compat import keras

    root = tmp_path_factory.mktemp("report")
    data = load_digits()
    x = (data.images / 16.0).astype("float32")[..., None]
    y = data.target.astype("int64")
    keras.utils.set_random_seed(2)
    inp = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(8, 3, activation="relu", name="conv1")(inp)
    h = keras.layers.Flatten(name="flat")(h)
    h = keras.layers.Dense(16, activation="relu", name="fc1")(h)
    out = keras.layers.Dense(10, name="logits")(h)
    model = keras.Model(inp, out)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[:1200], y[:1200], epochs=2, batch_size=64, verbose=0)
    kernel, bias = model.get_layer("fc1").get_weights()
    kernel[:, ::2] = 0.0  # half the fc1 kernel is zero
    model.get_layer("fc1").set_weights([kernel, bias])
    model.save(root / "model.h5")
    config = kerasq.QuantizationConfig(per_channel_weights=False)
    qmodel = kerasq.calibrate(kerasq.quantize_model(model, config), x[:256])
    qmodel.save(root / "q.h5")
    kerasq.export.to_tflite(qmodel, str(root / "q.tflite"), target="int8",
                            representative_data=x[:256])
    np.save(root / "x.npy", x[1200:1500])
    return root, x[1200:1500]


def _dfp_sqnr(w, bits, fl):
    q = np.clip(np.round(w.astype(np.float64) * 2.0 ** fl), -(2 ** (bits - 1)),
                2 ** (bits - 1) - 1) / 2.0 ** fl  # np.round: ties to even
    return 10 * math.log10(np.sum(w.astype(np.float64) ** 2) / np.sum((w - q) ** 2))


def test_json_report_numbers_match_independent_computations(files, capsys):
    import kerasq
    from kerasq._compat import keras

    root, x = files
    path = root / "r.json"
    assert main(["inspect", str(root / "q.h5"), "--data", str(root / "x.npy"),
                 "--report", str(path), "--tflite", str(root / "q.tflite")]) == 0
    assert f"wrote {path}" in capsys.readouterr().out
    rep = json.loads(path.read_text())

    # files: plain and gzip -9 sizes
    for entry, name in zip(rep["files"], ("q.h5", "q.tflite")):
        content = (root / name).read_bytes()
        assert entry["bytes"] == len(content)
        assert entry["gzip_bytes"] == len(gzip.compress(content, compresslevel=9, mtime=0))
    # latency measured in the interpreter
    lat = rep["latency"]
    assert lat["runs"] == 50 and 0 < lat["min_us"] <= lat["median_us"] < 1e6

    # kernel SQNR and fl against numpy
    float_model = keras.models.load_model(root / "model.h5", compile=False)
    rows = {(r["layer"], r["tensor"]): r for r in rep["quantization"]}
    for layer in ("conv1", "fc1", "logits"):
        row = rows[(layer, "kernel")]
        assert row["format"] == "dfp" and row["bits"] == 8
        fl = row["frac_bits"][0]
        assert row["frac_bits"][0] == row["frac_bits"][1]  # per tensor
        w = float_model.get_layer(layer).get_weights()[0]
        # fl: the largest whose 8-bit range holds max |w| (no clipping of the largest weight)
        assert np.abs(w).max() <= 127 * 2.0 ** -fl and np.abs(w).max() > 127 * 2.0 ** -(fl + 1)
        assert row["sqnr_db"] == pytest.approx(_dfp_sqnr(w, 8, fl), abs=1e-6)
    # sparsity
    spars = {r["layer"]: r for r in rep["sparsity"]}
    fc1 = float_model.get_layer("fc1").get_weights()[0]
    assert spars["fc1"]["zeros"] == int(np.count_nonzero(fc1 == 0)) == fc1.size // 2
    assert rep["summary"]["kernel_sparsity"] == pytest.approx(
        sum(r["zeros"] for r in rep["sparsity"]) / sum(r["count"] for r in rep["sparsity"]))

    # weight histograms: np.histogram of the kernel over the same edges; grid from fl
    hist = {h["layer"]: h for h in rep["weight_histograms"]}
    w = float_model.get_layer("conv1").get_weights()[0]
    counts, _ = np.histogram(w, bins=np.asarray(hist["conv1"]["edges"]))
    assert hist["conv1"]["counts"] == counts.tolist() and sum(counts) == w.size
    grid = hist["conv1"]["grid"]
    fl = rows[("conv1", "kernel")]["frac_bits"][0]
    assert grid["step"] == 2.0 ** -fl and grid["low"] == -128 * 2.0 ** -fl
    assert grid["high"] == 127 * 2.0 ** -fl

    # activation histograms: the quantized model's layer outputs on the first samples
    qmodel = kerasq.load_model(root / "q.h5")
    acts = {h["layer"]: h for h in rep["activation_histograms"]}
    probe = keras.Model(qmodel.inputs, qmodel.get_layer("quant_conv1").output)
    out = probe.predict(x[:256], verbose=0)
    counts, _ = np.histogram(out, bins=np.asarray(acts["conv1"]["edges"]))
    assert acts["conv1"]["counts"] == counts.tolist() and sum(counts) == out.size
    step = acts["conv1"]["grid"]["step"]
    assert np.array_equal(out / step, np.round(out / step))  # the outputs are on the grid
    # each bin is centred on whole grid steps
    edges = np.asarray(acts["conv1"]["edges"]) / step + 0.5
    assert np.allclose(edges, np.round(edges))


def test_html_report_is_one_self_contained_page(files):
    root, _ = files
    path = root / "r.html"
    assert main(["inspect", str(root / "q.h5"), "--data", str(root / "x.npy"),
                 "--report", str(path), "--tflite", str(root / "q.tflite")]) == 0
    text = path.read_text()
    for section in ("files", "quant", "sqnr", "sparsity", "weights", "acts"):
        assert f'id="{section}"' in text
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', text)
    assert len(images) == 3  # SQNR bars, weight and activation histograms
    for data in images:
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
    assert not re.search(r'(src|href)="(https?:)?//', text)  # nothing loaded from elsewhere
    assert "<script" not in text
    for layer in ("conv1", "fc1", "logits"):
        assert f"<td class=\"l\">{layer}</td>" in text


def test_float_model_report_and_refused_arguments(files, capsys):
    root, _ = files
    path = root / "float.json"
    assert main(["inspect", str(root / "model.h5"), "--report", str(path)]) == 0
    rep = json.loads(path.read_text())
    assert rep["quantization"] == [] and rep["latency"] is None
    assert all(h["grid"] is None for h in rep["weight_histograms"])
    capsys.readouterr()
    # unknown report format, --tflite without --report, a bad .tflite: one line, no file
    bad = root / "r.pdf"
    assert main(["inspect", str(root / "q.h5"), "--report", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "name the file .html or .json" in err and err.count("\n") == 1
    assert not bad.exists()
    assert main(["inspect", str(root / "q.h5"), "--tflite", str(root / "q.tflite")]) == 2
    assert "--report" in capsys.readouterr().err
    target = root / "never.html"
    assert main(["inspect", str(root / "q.h5"), "--report", str(target),
                 "--tflite", str(root / "x.npy")]) == 2
    assert "not a TFLite file" in capsys.readouterr().err
    assert not target.exists() and not list(root.glob(".kerasq-tmp-*"))
