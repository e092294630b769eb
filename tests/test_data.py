"""kerasq.data: checked array loading, NaN/Inf refusal, NCHW/NHWC layout resolution, and
kerasq._io output checks (unit level; the CLI-level sweep is tests/reliability)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from kerasq import _io
from kerasq.data import (
    check_finite,
    load_arrays,
    load_inputs_and_labels,
    match_layout,
)
from kerasq.errors import DataError, OutputError


def test_nchw_data_is_transposed_to_the_model_layout():
    x = np.random.RandomState(0).rand(5, 3, 4, 6).astype("f4")  # N, C, H, W
    got = match_layout(x, (None, 4, 6, 3))
    np.testing.assert_array_equal(got, np.einsum("nchw->nhwc", x))  # independent transpose
    assert match_layout(got, (None, 4, 6, 3)) is not None  # NHWC stays as it is
    np.testing.assert_array_equal(match_layout(got, (None, 4, 6, 3)), got)


def test_caffe_side_takes_nhwc_and_gives_nchw():
    x = np.random.RandomState(1).rand(2, 4, 6, 3).astype("f4")  # NHWC
    got = match_layout(x, (None, 3, 4, 6), expected_layout="nchw")
    np.testing.assert_array_equal(got, np.einsum("nhwc->nchw", x))


def test_ambiguous_shape_is_refused_unless_the_flag_decides():
    x = np.random.RandomState(2).rand(2, 8, 8, 8).astype("f4")
    with pytest.raises(DataError, match="--layout nchw or --layout nhwc"):
        match_layout(x, (None, 8, 8, 8))
    np.testing.assert_array_equal(match_layout(x, (None, 8, 8, 8), "nhwc"), x)
    np.testing.assert_array_equal(match_layout(x, (None, 8, 8, 8), "nchw"),
                                  np.einsum("nchw->nhwc", x))


def test_wrong_shapes_and_flags_are_one_line_errors():
    x = np.zeros((2, 1, 28, 28), "f4")
    with pytest.raises(DataError, match="is not NHWC"):
        match_layout(x, (None, 28, 28, 1), "nhwc")
    with pytest.raises(DataError, match="fits neither"):
        match_layout(np.zeros((2, 5, 5, 5)), (None, 28, 28, 1))
    assert match_layout(np.zeros((28, 28, 1)), (None, 28, 28, 1)).shape == (1, 28, 28, 1)


def test_first_non_finite_index_is_named():
    x = np.zeros((3, 4), "f4")
    x[2, 1] = np.inf
    x[1, 3] = np.nan
    with pytest.raises(DataError, match=r"x: holds nan at index \(1, 3\)"):
        check_finite(x, "x")


def test_npy_header_larger_than_the_file_is_refused_before_allocation(tmp_path):
    path = tmp_path / "big.npy"
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1000, 1000), }"
    header = header.ljust(118) + "\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little")
                     + header.encode() + b"\x00" * 16)
    with pytest.raises(DataError, match="header claims shape"):
        load_arrays(path)


def test_labels_are_checked(tmp_path):
    path = tmp_path / "e.npz"
    np.savez(path, x=np.zeros((4, 2), "f4"), y=np.array(["a", "b", "c", "d"]))
    with pytest.raises(DataError, match="expected numbers"):
        load_inputs_and_labels(path, need_labels=True)
    np.savez(path, x=np.zeros((4, 2), "f4"), y=np.arange(3))
    with pytest.raises(DataError, match="3 labels for 4 inputs"):
        load_inputs_and_labels(path, need_labels=True)
    np.savez(path, x=np.zeros((4, 2), "f4"), y=np.arange(4))
    x, y = load_inputs_and_labels(path, need_labels=True)
    assert x.dtype == np.float32 and list(y) == [0, 1, 2, 3]


def test_output_checks(tmp_path):
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "a.txt").write_text("a")
    with pytest.raises(OutputError, match="not a SavedModel"):
        _io.check_output(keep, "savedmodel")
    with pytest.raises(OutputError, match="unsupported output extension '.onnx'"):
        _io.output_kind(tmp_path / "x.onnx", ("h5", "keras", "savedmodel"))
    text = tmp_path / "t.tflite"
    text.write_text("precious")
    with pytest.raises(OutputError, match="not a TFLite file"):
        _io.write_bytes_atomic(text, b"1234TFL3")
    assert text.read_text() == "precious"
    _io.protect_inputs([tmp_path / "in.h5"])
    try:
        with pytest.raises(OutputError, match="input of this command"):
            _io.check_output(tmp_path / "in.h5", "h5")
    finally:
        _io.clear_protected()
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with pytest.raises(OutputError, match="current directory"):
            _io.check_output(".", "savedmodel")
    finally:
        os.chdir(cwd)
    # a SavedModel directory is replaced as a whole, atomically
    sm = tmp_path / "sm"
    sm.mkdir()
    (sm / "saved_model.pb").write_bytes(b"old")
    with _io.atomic_output(sm, kind="savedmodel") as tmp:
        os.mkdir(tmp)
        with open(os.path.join(tmp, "saved_model.pb"), "wb") as f:
            f.write(b"new")
    assert (sm / "saved_model.pb").read_bytes() == b"new"
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".kerasq-tmp-")]
