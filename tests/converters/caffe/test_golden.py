"""All 43 caffe-golden cases (outputs of real BVLC Caffe) through ``forward``.

Every dumped top must match within atol 1e-5·max(1, max|ref|) + rtol 1e-4. Cases with
BatchNorm run twice: folded (the default) and unfolded.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import SHARED, shared_path

GOLDEN = SHARED / "caffe-golden"
CASES = (
    sorted(p.name for p in GOLDEN.iterdir() if (p / "deploy.prototxt").exists())
    if GOLDEN.exists()
    else []
)


def assert_caffe_close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert got.shape == want.shape, f"{what}: shape {got.shape} != Caffe {want.shape}"
    atol = 1e-5 * max(1.0, float(np.abs(want).max(initial=0.0)))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=atol, err_msg=what)


def run_case(case: str, **options):
    from kerasq.converters.caffe import forward

    folder = shared_path("caffe-golden", case)
    x = np.load(folder / "input.npy")
    got = forward(folder / "deploy.prototxt", folder / "model.caffemodel", {"data": x}, **options)
    dumps = sorted((folder / "blobs").glob("*.npy"))
    assert dumps
    for dump in dumps:
        assert dump.stem in got, f"{case}: forward() did not return top {dump.stem!r}"
        assert_caffe_close(got[dump.stem], np.load(dump), f"{case}/{dump.stem}")
    return got


def test_all_43_cases_present():
    shared_path("caffe-golden")
    assert len(CASES) == 43


@pytest.mark.parametrize("case", CASES)
def test_golden_case(case):
    run_case(case)


@pytest.mark.parametrize("case", ["batchnorm_scale", "resnet_block"])
def test_golden_unfolded_batchnorm(case):
    run_case(case, fold_batchnorm=False)


def test_in_place_chain_is_folded_and_still_exact():
    """resnet_block's conv-BN-Scale chains are in place: the pass folds them."""
    from kerasq.converters.caffe import load

    folder = shared_path("caffe-golden", "resnet_block")
    model = load(folder / "deploy.prototxt", folder / "model.caffemodel")
    kinds = {type(layer).__name__ for layer in model.layers}
    assert "BatchNormalization" not in kinds and "DepthwiseConv2D" not in kinds
    unfolded = load(folder / "deploy.prototxt", folder / "model.caffemodel", fold_batchnorm=False)
    assert "BatchNormalization" in {type(layer).__name__ for layer in unfolded.layers}
    x = np.load(folder / "input.npy").transpose(0, 2, 3, 1)
    want = np.load(folder / "blobs" / "res_sum.npy").transpose(0, 2, 3, 1)
    for m in (model, unfolded):
        assert m.output_names == ["res_sum"]
        assert_caffe_close(np.asarray(m(x, training=False)), want, "res_sum")


@pytest.mark.parametrize("case", CASES)
def test_load_model_outputs(case):
    """load(): outputs named after Caffe tops, shapes as Caffe's, values as Caffe's."""
    from kerasq.converters.caffe import load

    folder = shared_path("caffe-golden", case)
    meta = json.loads((folder / "meta.json").read_text())
    model = load(folder / "deploy.prototxt", folder / "model.caffemodel")
    x = np.load(folder / "input.npy")
    feed = x.transpose(0, 2, 3, 1) if x.ndim == 4 else x
    outputs = model(feed, training=False)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    for name, tensor in zip(model.output_names, outputs):
        want = np.load(folder / "blobs" / f"{name}.npy")
        assert tuple(meta["tops"][name]) == want.shape
        got = np.asarray(tensor)
        if got.ndim == 4:
            got = got.transpose(0, 3, 1, 2)
        assert_caffe_close(got, want, f"{case}/{name}")


def test_batch_and_spatial_size_other_than_declared():
    """As after Caffe's reshape: batch 3 and a bigger image through a net declared 1x3x17x19."""
    from kerasq.converters.caffe import forward

    folder = shared_path("caffe-golden", "conv_pad_stride")
    x = np.load(folder / "input.npy")
    big = np.random.RandomState(5).randn(3, 3, 25, 30).astype(np.float32)
    big[1:2, :, :17, :19] = x
    got = forward(folder / "deploy.prototxt", folder / "model.caffemodel", {"data": big})
    assert got["conv"].shape == (3, 8, 13, 15)
    want = np.load(folder / "blobs" / "conv.npy")
    # The top-left 9x10 outputs only see the copied 17x19 region (k3 s2 p1, the window
    # of output 8 ends at row 17 = zero pad in the small image, real data in the big one).
    assert_caffe_close(got["conv"][1:2, :, :8, :9], want[:, :, :8, :9], "conv crop")


def test_ristretto_layer_types_read_as_float_layers(tmp_path, caplog):
    """A Ristretto-quantized prototxt (ConvolutionRistretto/FcRistretto + quantization_param)
    with the float caffemodel computes the float net (quantization is kerasq.schemes' job)."""
    import logging

    folder = shared_path("caffe-golden", "lenet")
    text = (folder / "deploy.prototxt").read_text()
    text = text.replace('"Convolution"', '"ConvolutionRistretto"').replace(
        '"InnerProduct"', '"FcRistretto"'
    )
    text = text.replace(
        "convolution_param {",
        "quantization_param { bw_params: 4 fl_params: 3 }\n  convolution_param {",
        1,
    )
    assert "ConvolutionRistretto" in text and "FcRistretto" in text
    proto = tmp_path / "ristretto.prototxt"
    proto.write_text(text)
    from kerasq.converters.caffe import forward

    with caplog.at_level(logging.WARNING, logger="kerasq"):
        got = forward(proto, folder / "model.caffemodel", {"data": np.load(folder / "input.npy")})
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    for dump in sorted((folder / "blobs").glob("*.npy")):
        assert_caffe_close(got[dump.stem], np.load(dump), dump.stem)
