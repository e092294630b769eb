"""The numpy preprocessing of ``kerasq.export.preprocessing`` against the converter's own
``CaffePreprocess`` Keras layer (bit for bit, float32), and the sidecar files: written
where promised, nothing else left in the directory, read back to the same numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kerasq.errors import ExportError
from kerasq.export.preprocessing import (
    Preprocessing,
    load_preprocessing,
    sidecar_path,
    write_sidecar,
)
from kerasq.numerics.grid import GridSpec

CASES = [
    # (mean, scale, swap): a mean image, a non-power-of-two scale, per-channel values
    pytest.param("image", 1 / 58.8, True, id="mean-image-swap"),
    pytest.param([123.68, 116.78, 103.94], 0.017, False, id="values-0.017"),
    pytest.param(None, 0.0125, True, id="scale-only-swap"),
]


def _mean(kind, rng):
    if kind == "image":
        return rng.uniform(0, 255, (6, 5, 3)).astype(np.float32)
    return None if kind is None else np.float32(kind)


@pytest.mark.parametrize("mean_kind,scale,swap", CASES)
def test_apply_equals_the_keras_layer_bit_for_bit(mean_kind, scale, swap):
    from kerasq.converters.caffe.keras_layers import CaffePreprocess

    rng = np.random.default_rng(0)
    mean = _mean(mean_kind, rng)
    x = np.round(rng.uniform(0, 255, (4, 6, 5, 3))).astype(np.float32)
    layer = CaffePreprocess(None if mean is None else mean.shape, scale, swap)
    layer.build(x.shape)
    if mean is not None:
        layer.set_weights([mean])
    want = np.asarray(layer(x))
    got = Preprocessing("data", "data_preprocessed", "p", swap, mean, scale).apply(x)
    assert got.dtype == np.float32 and np.array_equal(got, want)


def test_input_grid_rounds_as_the_quantizer_would():
    grid = GridSpec(kind="dfp", bitwidth=8, frac_bits=0, signed=False, rounding="nearest_even")
    prep = Preprocessing("data", "data_preprocessed", "p", False, None, 0.5, grid)
    x = np.float32([[-3.0, 0.5, 1.5, 2.4, 254.5, 300.0]])
    # round half to even on step 1, clipped to [0, 255], then times 0.5
    assert np.array_equal(prep.apply(x), np.float32([[0, 0, 1, 1, 127, 127.5]]))


def test_sidecar_with_mean_image_round_trips(tmp_path):
    rng = np.random.default_rng(1)
    mean = rng.uniform(0, 255, (4, 4, 3)).astype(np.float32)
    grid = GridSpec(kind="dfp", bitwidth=8, frac_bits=0, signed=False, rounding="nearest_even")
    prep = Preprocessing("data", "data_preprocessed", "data_preprocess", True, mean, 0.017,
                         grid)
    out = tmp_path / "m.tflite"
    written = write_sidecar(out, prep)
    assert written == [sidecar_path(out), f"{out}.preprocessing.mean.npy"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "m.tflite.preprocessing.json", "m.tflite.preprocessing.mean.npy"]
    data = json.loads((tmp_path / "m.tflite.preprocessing.json").read_text())
    assert data["file_input"] == "data_preprocessed" and data["swap_rb"] is True
    assert data["mean"] is None and data["mean_image"]["shape"] == [4, 4, 3]
    assert data["input_grid"] == {"step": 1.0, "min": 0.0, "max": 255.0,
                                  "rounding": "nearest_even"}
    back = load_preprocessing(written[0])
    x = rng.uniform(-10, 300, (2, 4, 4, 3)).astype(np.float32)
    assert np.array_equal(back.apply(x), prep.apply(x))


def test_broken_sidecar_is_a_one_line_export_error(tmp_path):
    bad = tmp_path / "m.tflite.preprocessing.json"
    bad.write_text('{"input": "data"}')
    with pytest.raises(ExportError, match="cannot read the preprocessing sidecar"):
        load_preprocessing(bad)
