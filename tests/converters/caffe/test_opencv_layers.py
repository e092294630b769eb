"""OpenCV's Caffe-computed single-layer oracles (shared/caffe-models/opencv-layers).

Each ``layer_*.prototxt`` was run by real Caffe on ``<name>.input.npy`` (else ``blob.npy``)
fed to blob ``input``; blob ``output`` was saved as ``<name>.npy``. The three weight-free
plumbing nets without stored outputs are checked against numpy.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import SHARED, shared_path

FOLDER = SHARED / "caffe-models" / "opencv-layers"
CASES = (
    sorted(p.stem for p in FOLDER.glob("layer_*.prototxt") if (FOLDER / f"{p.stem}.npy").exists())
    if FOLDER.exists()
    else []
)


def assert_caffe_close(got, want, what):
    assert got.shape == want.shape, f"{what}: shape {got.shape} != Caffe {want.shape}"
    atol = 1e-5 * max(1.0, float(np.abs(want).max(initial=0.0)))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=atol, err_msg=what)


def test_cases_found():
    shared_path("caffe-models", "opencv-layers")
    assert len(CASES) == 20


@pytest.mark.parametrize("case", CASES)
def test_caffe_computed_layer(case):
    from kerasq.converters.caffe import forward

    folder = shared_path("caffe-models", "opencv-layers")
    own_input = folder / f"{case}.input.npy"
    x = np.load(own_input if own_input.exists() else folder / "blob.npy")
    model = folder / f"{case}.caffemodel"
    got = forward(
        folder / f"{case}.prototxt",
        model if model.exists() else None,
        {"input": x},
        blobs=["output"],
    )
    assert_caffe_close(got["output"], np.load(folder / f"{case}.npy"), case)


def test_reshape_and_slice_routines_give_back_the_input():
    """Split/Slice/Concat/Reshape(axis, num_axes)/Flatten reassemble the 6x12 input."""
    from kerasq.converters.caffe import forward

    folder = shared_path("caffe-models", "opencv-layers")
    x = np.random.RandomState(0).randn(6, 12).astype(np.float32)
    got = forward(folder / "reshape_and_slice_routines.prototxt", None, {"input": x})
    np.testing.assert_array_equal(got["output"], x)
    assert got["dummy_reshape"].shape == (6, 12, 1, 1, 1, 1)
    sigmoid = 1.0 / (1.0 + np.exp(-x[:, 2:].astype(np.float64)))
    np.testing.assert_allclose(got["dummy_slice_1_2"], sigmoid, rtol=1e-6, atol=1e-7)


def test_net_input_all_spellings():
    """Legacy input+input_dim mixed with Input layers whose top differs from the name."""
    from kerasq.converters.caffe import forward, load

    folder = shared_path("caffe-models", "opencv-layers")
    rng = np.random.RandomState(1)
    inputs = {
        "old_style_input_blue_green": rng.randn(1, 2, 10, 11).astype(np.float32),
        "old_style_input_red": rng.randn(1, 1, 10, 11).astype(np.float32),
        "different_name_for_red": rng.randn(1, 1, 10, 11).astype(np.float32),
        "input_layer_blue_green": rng.randn(1, 2, 10, 11).astype(np.float32),
    }
    got = forward(folder / "net_input.prototxt", None, inputs)
    want = np.concatenate(
        [inputs["old_style_input_blue_green"], inputs["different_name_for_red"]], 1
    ) + np.concatenate([inputs["input_layer_blue_green"], inputs["old_style_input_red"]], 1)
    np.testing.assert_allclose(got["output"], want, rtol=1e-6, atol=1e-6)
    model = load(folder / "net_input.prototxt")
    assert sorted(model.input_names) == sorted(inputs)
    assert model.output_names == ["output"]


def test_shared_weights_and_duplicate_layer_names():
    """Two layers named "conv" (and two "sum") each get weights; sum_k = sum(conv_k)."""
    from kerasq.converters.caffe import forward
    from kerasq.converters.caffe.reader import read_caffemodel, weights_by_layer

    folder = shared_path("caffe-models", "opencv-layers")
    table = weights_by_layer(read_caffemodel(folder / "shared_weights.caffemodel"))
    assert len(table["conv"]) == 2 and len(table["sum"]) == 2
    rng = np.random.RandomState(2)
    x1, x2 = rng.randn(3, 1, 2, 2).astype(np.float32), rng.randn(3, 1, 2, 2).astype(np.float32)
    got = forward(
        folder / "shared_weights.prototxt",
        folder / "shared_weights.caffemodel",
        {"input_1": x1, "input_2": x2},
    )
    (w1, b1), (w2, b2) = table["conv"]
    (v1, c1), (v2, c2) = table["sum"]
    want1 = (x1 * w1.ravel()[0] + b1[0]).reshape(3, 4) @ v1.reshape(1, 4).T + c1
    want2 = (x2 * w2.ravel()[0] + b2[0]).reshape(3, 4) @ v2.reshape(1, 4).T + c2
    np.testing.assert_allclose(got["sum"], np.concatenate([want1, want2], 1), rtol=1e-5, atol=1e-6)
