"""Fuzzing: corrupted caffemodels and prototxts give a KerasqError (or a working model),
never another exception type."""

from __future__ import annotations

import pathlib
import sys
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from netbuilder import NetBuilder  # noqa: E402

FAST = settings(
    max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
SLOW = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _net() -> NetBuilder:
    nb = NetBuilder("fuzz", seed=3)
    x = nb.input("data", (1, 2, 5, 5))
    c = nb.add(
        "Convolution",
        [x],
        name="conv",
        param="convolution_param { num_output: 2 kernel_size: 3 pad: 1 }",
        blobs=[nb.randn(2, 2, 3, 3), nb.randn(2)],
    )
    b = nb.add(
        "BatchNorm",
        [c],
        name="bn",
        blobs=[nb.randn(2), np.ones(2, np.float32), np.ones(1, np.float32)],
    )
    p = nb.add(
        "Pooling", [b], name="pool", param="pooling_param { pool: AVE kernel_size: 2 stride: 2 }"
    )
    nb.add(
        "InnerProduct",
        [p],
        name="fc",
        param="inner_product_param { num_output: 3 }",
        blobs=[nb.randn(3, 18), nb.randn(3)],
    )
    return nb


def _load_or_kerasq_error(proto_text: str, model_bytes: bytes) -> None:
    from kerasq.converters.caffe import load
    from kerasq.errors import KerasqError

    with tempfile.TemporaryDirectory() as folder:
        proto = pathlib.Path(folder) / "n.prototxt"
        model = pathlib.Path(folder) / "n.caffemodel"
        proto.write_bytes(proto_text.encode("utf-8", "replace"))
        model.write_bytes(model_bytes)
        try:
            load(proto, model)
        except KerasqError as err:
            assert "\n" not in str(err)


@st.composite
def corrupted_bytes(draw):
    data = bytearray(_net().caffemodel_bytes())
    for _ in range(draw(st.integers(1, 6))):
        pos = draw(st.integers(0, len(data) - 1))
        data[pos] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


@st.composite
def corrupted_text(draw):
    text = _net().prototxt()
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(text) - 1))
        length = draw(st.integers(0, 6))
        junk = draw(st.text(alphabet='{}:";#-0123456789abcxyz_ \n', max_size=6))
        text = text[:pos] + junk + text[pos + length :]
    return text


@FAST
@given(corrupted_bytes())
def test_corrupted_caffemodel(data):
    _load_or_kerasq_error(_net().prototxt(), data)


@FAST
@given(corrupted_text())
def test_corrupted_prototxt(text):
    _load_or_kerasq_error(text, _net().caffemodel_bytes())


@pytest.mark.slow
@SLOW
@given(corrupted_bytes(), corrupted_text())
def test_corrupted_both_long(data, text):
    _load_or_kerasq_error(text, data)
