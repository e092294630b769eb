"""Proves the numpy Caffe reference (caffe_reference.py) on outputs of real Caffe.

Every case of shared/caffe-golden (real BVLC Caffe) and the weight-free Caffe-computed
OpenCV layer oracles are re-run through the reference; every dumped top must match. Only then
is the reference trusted as the oracle for the synthetic per-layer tests.
"""

from __future__ import annotations

import json
import pathlib
import sys

import numpy as np
import pytest
from conftest import SHARED, shared_path

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import caffe_reference as ref  # noqa: E402

GOLDEN = SHARED / "caffe-golden"
CASES = (
    sorted(p.name for p in GOLDEN.iterdir() if (p / "deploy.prototxt").exists())
    if GOLDEN.exists()
    else []
)


def assert_caffe_close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    """atol 1e-5 * max(1, |ref|max) + rtol 1e-4 (the issue's tolerance)."""
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    atol = 1e-5 * max(1.0, float(np.abs(want).max(initial=0.0)))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=atol, err_msg=what)


def load_params(case: pathlib.Path) -> dict:
    params: dict = {}
    for f in sorted((case / "params").glob("*.npy")) if (case / "params").exists() else []:
        layer, idx = f.stem.rsplit("__", 1)
        params.setdefault(layer, {})[int(idx)] = np.load(f)
    return {k: [v[i] for i in sorted(v)] for k, v in params.items()}


@pytest.mark.parametrize("case", CASES)
def test_reference_matches_real_caffe(case: str) -> None:
    folder = shared_path("caffe-golden", case)
    meta = json.loads((folder / "meta.json").read_text())
    x = np.load(folder / "input.npy")
    out = ref.run_net(
        (folder / "deploy.prototxt").read_text(), load_params(folder), {meta["input"]["blob"]: x}
    )
    dumped = sorted((folder / "blobs").glob("*.npy"))
    assert dumped, "case without dumped blobs"
    for f in dumped:
        assert f.stem in out, f"reference did not produce top {f.stem}"
        assert_caffe_close(out[f.stem], np.load(f), f"{case}/{f.stem}")


OPENCV_WEIGHTLESS = [
    "layer_lrn_spatial",
    "layer_lrn_channels",
    "layer_mvn",
    "layer_interp",
    "layer_softmax",
    "layer_pooling_max",
    "layer_pooling_ave",
    "layer_eltwise",
    "layer_relu",
    "layer_dropout",
    "layer_concat",
]


@pytest.mark.parametrize("name", OPENCV_WEIGHTLESS)
def test_reference_matches_caffe_computed_opencv_oracles(name: str) -> None:
    folder = shared_path("caffe-models", "opencv-layers")
    own_input = folder / f"{name}.input.npy"
    x = np.load(own_input if own_input.exists() else folder / "blob.npy")
    out = ref.run_net((folder / f"{name}.prototxt").read_text(), {}, {"input": x})
    assert_caffe_close(out["output"], np.load(folder / f"{name}.npy"), name)


def test_mvn_eps_is_outside_the_sqrt_on_caffe_data() -> None:
    """The eps 0.1 oracle separates BVLC's (sqrt(var)+eps) from OpenCV's sqrt(var+eps)."""
    folder = shared_path("caffe-models", "opencv-layers")
    x = np.load(folder / "blob.npy").astype(np.float64)
    want = np.load(folder / "layer_mvn.npy")
    mean = x.mean(axis=(2, 3), keepdims=True)
    var = x.var(axis=(2, 3), keepdims=True)
    inside = (x - mean) / np.sqrt(var + 0.1)
    assert not np.allclose(inside, want, rtol=1e-4, atol=1e-5)
    assert_caffe_close(ref.mvn(x, True, False, 0.1).astype(np.float32), want, "mvn")


OPENCV_WEIGHTED = [
    "layer_convolution",
    "layer_deconvolution",
    "layer_inner_product",
    "layer_batch_norm",
    "layer_batch_norm_local_stats",
    "layer_prelu",
    "layer_prelu_fc",
    "layer_concat_optim",
    "layer_concat_shared_input",
]


@pytest.mark.parametrize("name", OPENCV_WEIGHTED)
def test_reference_matches_caffe_computed_oracles_with_weights(name: str) -> None:
    """Weights decoded by netbuilder's own wire-format reader (independent of kerasq)."""
    from netbuilder import read_caffemodel_blobs

    folder = shared_path("caffe-models", "opencv-layers")
    own_input = folder / f"{name}.input.npy"
    x = np.load(own_input if own_input.exists() else folder / "blob.npy")
    params = read_caffemodel_blobs(folder / f"{name}.caffemodel")
    out = ref.run_net((folder / f"{name}.prototxt").read_text(), params, {"input": x})
    assert_caffe_close(out["output"], np.load(folder / f"{name}.npy"), name)


def test_reference_reads_v1_legacy_binary_blobs() -> None:
    """The V1 caffemodel (legacy num/channels/height/width blobs) gives the golden outputs."""
    from netbuilder import read_caffemodel_blobs

    folder = shared_path("caffe-golden", "v1_legacy_layers")
    params = read_caffemodel_blobs(folder / "model.caffemodel")
    assert params["ip1"][0].shape == (1, 1, 32, 192)
    out = ref.run_net(
        (folder / "deploy.prototxt").read_text(), params, {"data": np.load(folder / "input.npy")}
    )
    assert_caffe_close(out["prob"], np.load(folder / "blobs" / "prob.npy"), "prob")
