"""Malformed input: one line ``kerasq: error: <file>: <layer>: <reason>``, exit 2, no output."""

from __future__ import annotations

import os
import pathlib
import sys

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from netbuilder import NetBuilder  # noqa: E402

from conftest import shared_path  # noqa: E402


def _conv_net(tmp_path, weights=None, name="net"):
    nb = NetBuilder(name)
    x = nb.input("data", (1, 3, 8, 8))
    w = weights if weights is not None else nb.randn(4, 3, 3, 3)
    nb.add(
        "Convolution",
        [x],
        name="conv1",
        param="convolution_param { num_output: 4 kernel_size: 3 bias_term: false }",
        blobs=[w],
    )
    return nb.write(tmp_path)


def _convert(capsys, tmp_path, *args):
    from kerasq.cli import main

    out = tmp_path / "out" / "model.h5"
    status = main(["convert", *map(str, args), "-o", str(out)])
    err = capsys.readouterr().err.strip()
    return status, err, out


def _assert_clean_failure(status, err, out, *fragments):
    assert status == 2, err
    assert err.startswith("kerasq: error: "), err
    assert "\n" not in err and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err
    assert not out.exists()
    if out.parent.exists():
        assert not [p for p in os.listdir(out.parent) if p.startswith(".kerasq-tmp")]


def test_missing_prototxt(capsys, tmp_path):
    status, err, out = _convert(capsys, tmp_path, tmp_path / "nope.prototxt")
    _assert_clean_failure(status, err, out, "nope.prototxt", "not found")


def test_missing_caffemodel(capsys, tmp_path):
    proto, _ = _conv_net(tmp_path)
    status, err, out = _convert(capsys, tmp_path, proto, tmp_path / "nope.caffemodel")
    _assert_clean_failure(status, err, out, "nope.caffemodel", "not found")


def test_syntax_error(capsys, tmp_path):
    bad = tmp_path / "bad.prototxt"
    bad.write_text('layer { name: "a" type: "ReLU" bottom: "x" top: "y" \n layer {')
    status, err, out = _convert(capsys, tmp_path, bad)
    _assert_clean_failure(status, err, out, "bad.prototxt", "syntax error")


@pytest.mark.parametrize("content", ["", "   \n# only a comment\n"])
def test_empty_prototxt(capsys, tmp_path, content):
    empty = tmp_path / "empty.prototxt"
    empty.write_text(content)
    status, err, out = _convert(capsys, tmp_path, empty)
    _assert_clean_failure(status, err, out, "empty.prototxt", "no layers")


def test_binary_given_as_prototxt(capsys, tmp_path):
    _, model = _conv_net(tmp_path)
    status, err, out = _convert(capsys, tmp_path, model)
    _assert_clean_failure(status, err, out, "net.caffemodel")


def test_empty_caffemodel(capsys, tmp_path):
    proto, model = _conv_net(tmp_path)
    pathlib.Path(model).write_bytes(b"")
    status, err, out = _convert(capsys, tmp_path, proto, model)
    _assert_clean_failure(status, err, out, "net.caffemodel", "empty")


@pytest.mark.parametrize("cut", [0.3, 0.7, 0.999])
def test_truncated_caffemodel(capsys, tmp_path, cut):
    proto, model = _conv_net(tmp_path)
    data = pathlib.Path(model).read_bytes()
    pathlib.Path(model).write_bytes(data[: int(len(data) * cut)])
    status, err, out = _convert(capsys, tmp_path, proto, model)
    _assert_clean_failure(status, err, out, "net.caffemodel")


@pytest.mark.parametrize("seed", range(4))
def test_random_binary_caffemodel(capsys, tmp_path, seed):
    proto, model = _conv_net(tmp_path)
    pathlib.Path(model).write_bytes(np.random.RandomState(seed).bytes(4096))
    status, err, out = _convert(capsys, tmp_path, proto, model)
    _assert_clean_failure(status, err, out, "net.caffemodel")


def test_unknown_layer_type(capsys, tmp_path):
    nb = NetBuilder("unknown")
    x = nb.input("data", (1, 3, 8, 8))
    nb.add("FancyFork", [x], name="fancy1")
    proto, model = nb.write(tmp_path)
    status, err, out = _convert(capsys, tmp_path, proto, model)
    _assert_clean_failure(
        status, err, out, "unknown.prototxt: fancy1:", "FancyFork", "not supported"
    )


def test_weight_shape_mismatch(capsys, tmp_path):
    proto, model = _conv_net(tmp_path, weights=np.zeros((4, 3, 5, 5), np.float32))
    status, err, out = _convert(capsys, tmp_path, proto, model)
    _assert_clean_failure(
        status, err, out, "conv1:", "shape mismatch", "[4, 3, 3, 3]", "[4, 3, 5, 5]"
    )


def test_missing_weights(capsys, tmp_path):
    proto, _ = _conv_net(tmp_path)
    other = NetBuilder("other")
    x = other.input("data", (1, 3, 8, 8))
    other.add("ReLU", [x], name="relu")
    _, other_model = other.write(tmp_path)
    status, err, out = _convert(capsys, tmp_path, proto, other_model)
    _assert_clean_failure(status, err, out, "conv1:", "missing weights")


def test_bottom_never_produced(capsys, tmp_path):
    bad = tmp_path / "dangling.prototxt"
    bad.write_text(
        'input: "data" input_dim: 1 input_dim: 3 input_dim: 4 input_dim: 4\n'
        'layer { name: "r" type: "ReLU" bottom: "nothing" top: "r" }'
    )
    status, err, out = _convert(capsys, tmp_path, bad)
    _assert_clean_failure(status, err, out, "dangling.prototxt: r:", "'nothing'")


def test_data_layer_without_input_shape(capsys, tmp_path):
    proto = shared_path("caffe-models", "resnet20-cifar10", "res20_cifar_train_test.prototxt")
    status, err, out = _convert(capsys, tmp_path, proto)
    _assert_clean_failure(status, err, out, "Data1", "--input-shape")


def test_bad_input_shape_option(capsys, tmp_path):
    proto, model = _conv_net(tmp_path)
    status, err, out = _convert(capsys, tmp_path, proto, model, "--input-shape", "data=1,3")
    _assert_clean_failure(status, err, out, "--input-shape")
    status, err, out = _convert(capsys, tmp_path, proto, model, "--input-shape", "image:1,3,8,8")
    _assert_clean_failure(status, err, out, "image")


def test_existing_output_survives_a_failed_conversion(capsys, tmp_path):
    from kerasq.cli import main

    proto, model = _conv_net(tmp_path)
    out = tmp_path / "keep.h5"
    out.write_bytes(b"previous model")
    pathlib.Path(model).write_bytes(b"\x0a\xff")
    assert main(["convert", proto, model, "-o", str(out)]) == 2
    assert out.read_bytes() == b"previous model"


def test_api_errors_are_kerasq_errors(tmp_path):
    from kerasq.converters.caffe import forward, load
    from kerasq.errors import CaffeFormatError, KerasqError

    proto, model = _conv_net(tmp_path)
    with pytest.raises(CaffeFormatError, match="no input array"):
        forward(proto, model, {})
    with pytest.raises(CaffeFormatError, match="no top named"):
        forward(proto, model, {"data": np.zeros((1, 3, 8, 8), np.float32)}, blobs=["zz"])
    with pytest.raises(KerasqError):
        load(proto, None)
