"""Caffe input preprocessing (``kerasq convert --mean/--scale/--swap-rb``) in int8 files,
through the command line: the file, run by ai-edge-litert's default interpreter, equals the
reloaded ``q.h5`` bit for bit on held-out inputs, and the preprocessing runs in int8 (the
only float operators are the Softmax island kept on purpose). Preprocessing without an
exact int8 form is refused with an error naming the layer and the ways out.
"""

from __future__ import annotations

import dataclasses

import pytest
from conftest import shared_path
from export import real_net_matrix as matrix

from kerasq.export.graph import FLOAT_ISLAND
from kerasq.export.verify import op_table

LENET = matrix.BY_NAME["lenet"]
CIFAR = matrix.BY_NAME["cifar10-quick"]


def _float_ops(content: bytes) -> list[tuple[str, str]]:
    """(op, output names) of every operator computing in float, QUANTIZE/DEQUANTIZE aside."""
    import numpy as np

    found = []
    for op in op_table(content):
        if op["op"] in ("QUANTIZE", "DEQUANTIZE"):
            continue
        if any(d == np.float32 for d in op["inputs"] + op["outputs"] if d is not None):
            found.append((op["op"], ",".join(op.get("output_names", []))))
    return found


CASES = [
    # (net, convert arguments, input range)
    pytest.param(LENET, ("--scale", "0.00390625", "--mean", "32"), (0.0, 255.0),
                 id="lenet-mean-scale"),
    pytest.param(CIFAR, ("--mean", "125,123,114", "--swap-rb"), (0.0, 255.0),
                 id="cifar10-mean-swap"),
]


@pytest.mark.parametrize("net,extra,limits", CASES)
def test_preprocessing_exports_bit_identical(net, extra, limits, tmp_path):
    shared_path("caffe-models", net.prototxt)
    net = dataclasses.replace(net, extra=net.extra + extra, low=limits[0], high=limits[1])
    result = matrix.run_net(net, tmp_path)
    assert result.stage == "done", result.line()
    for output in result.outputs:
        assert output.max_steps == 0 and output.exact_fraction == 1.0, result.line()
    float_ops = _float_ops((tmp_path / "q.tflite").read_bytes())
    # only the Softmax output runs in float (on purpose); the preprocessing is int8
    assert all(FLOAT_ISLAND in names and "_preprocess" not in names
               for _, names in float_ops), float_ops


def test_inexact_preprocessing_names_layer_and_fix(tmp_path):
    shared_path("caffe-models", CIFAR.prototxt)
    net = dataclasses.replace(CIFAR, extra=("--mean", "123.68,116.78,103.94",
                                            "--scale", "0.017"), low=0.0, high=255.0)
    result = matrix.run_net(net, tmp_path, verify=False)
    assert result.stage == "export"
    assert "data_preprocess" in result.message
    assert "0.017 is not a power of two" in result.message
    assert "--target float" in result.message
    assert not (tmp_path / "q.tflite").exists()
