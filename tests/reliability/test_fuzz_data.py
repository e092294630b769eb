"""Fuzzing the array and model-file readers (``kerasq.data``) and the CLI arguments.

Property: every input is either accepted or refused with a one-line ``KerasqError``; no
other exception, no hang (SIGALRM watchdog, 20 s per example), and for the CLI exit status
0, 1 or 2 with at most one ``kerasq: error:`` line. Inputs: byte-level mutations
(truncation, bit flips, splices, header edits) of real ``.npy``/``.npz``/``.h5``/``.keras``
files written here, and token soups of the subcommands' options and hostile values.
``KERASQ_FUZZ_EXAMPLES`` sets the example count of the ``slow`` run.
"""

from __future__ import annotations

import io
import os
import signal
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kerasq.errors import KerasqError

LONG = int(os.environ.get("KERASQ_FUZZ_EXAMPLES", "2000"))
COMMON = dict(deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))


class _Hang(Exception):
    pass


def _watchdog(fn, *args):
    def on_alarm(signum, frame):
        raise _Hang("no result after 20 s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(20)
    try:
        return fn(*args)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


SEEDS_ARRAYS = [
    _npy_bytes(np.arange(24, dtype="f4").reshape(2, 3, 4)),
    _npy_bytes(np.arange(6, dtype="i8")),
    _npz_bytes(x=np.ones((2, 4, 4, 1), "f4"), y=np.arange(2)),
]


def _h5_bytes() -> bytes:
    import h5py

    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.attrs["model_config"] = '{"class_name": "Sequential", "config": {"layers": []}}'
        f.create_dataset("model_weights/d/kernel:0", data=np.ones((4, 3), "f4"))
    return buf.getvalue()


def _keras_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("config.json", '{"module": "keras", "class_name": "Sequential", '
                                   '"config": {"layers": []}}')
        zf.writestr("metadata.json", "{}")
    return buf.getvalue()


@st.composite
def mutated(draw, seeds):
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "splice", "insert", "digits"]))
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[i:]
        elif op == "splice":
            data[i:i + draw(st.integers(1, 16))] = draw(st.binary(max_size=16))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=32))
        else:  # header numbers: shapes and lengths
            data[i:i + 1] = str(draw(st.integers(0, 10**12))).encode()
    return bytes(data)


def _check_array_bytes(tmp_path, blob: bytes) -> None:
    from kerasq.data import load_arrays

    path = tmp_path / "x.npy"
    path.write_bytes(blob)
    try:
        arrays = _watchdog(load_arrays, str(path))
    except KerasqError as err:
        assert "\n" not in str(err)
        return
    for value in arrays.values():  # accepted: numbers, finite, non-empty
        assert value.dtype.kind in "biuf" and value.size > 0
        assert value.dtype.kind != "f" or np.isfinite(value).all()


def _check_model_bytes(tmp_path, blob: bytes, name: str) -> None:
    from kerasq.data import check_model_file

    path = tmp_path / name
    path.write_bytes(blob)
    try:
        _watchdog(check_model_file, str(path))
    except KerasqError as err:
        assert "\n" not in str(err)


@settings(max_examples=150, **COMMON)
@given(blob=mutated(SEEDS_ARRAYS))
def test_array_reader_fuzz(tmp_path_factory, blob):
    _check_array_bytes(tmp_path_factory.mktemp("a"), blob)


@settings(max_examples=60, **COMMON)
@given(data=st.data())
def test_model_file_checks_fuzz(tmp_path_factory, data):
    seeds = [_h5_bytes(), _keras_bytes()]
    blob = data.draw(mutated(seeds))
    name = "m.keras" if blob[:2] == b"PK" else "m.h5"
    _check_model_bytes(tmp_path_factory.mktemp("m"), blob, name)


@pytest.mark.slow
@settings(max_examples=LONG, **COMMON)
@given(blob=mutated(SEEDS_ARRAYS))
def test_array_reader_fuzz_long(tmp_path_factory, blob):
    _check_array_bytes(tmp_path_factory.mktemp("a"), blob)


# ------------------------------------------------------------------ CLI arguments
VALUES = ["0", "-1", "nan", "inf", "1e400", "8", "abc", "", ",", "data:1,1,8,8", "x=y",
          "/dev/zero", "/dev/null", ".", "/", "{W}/m.h5", "{W}/m.tflite", "{W}/x.onnx",
          "{W}/bad.npy", "{W}/none.npy", "{W}/fifo", "\n", "--", "-o"]
FLAGS = ["-o", "--calibration", "--data", "--eval", "--batch-size", "--steps", "--mean",
         "--scale", "--input-shape", "--outputs", "--ignore", "--layout", "--target",
         "--bits-weights", "--config", "--reference", "--input", "--tflite", "--save-config"]


@st.composite
def argv(draw):
    cmd = draw(st.sampled_from(["convert", "quantize", "export", "inspect", "compare"]))
    first = {"convert": "{W}/bad.prototxt", "compare": "{W}/bad.prototxt"}.get(cmd, "{W}/m.h5")
    tokens = [cmd, draw(st.sampled_from([first, "/dev/zero", "{W}/fifo", "."]))]
    for _ in range(draw(st.integers(0, 6))):
        tokens.append(draw(st.sampled_from(FLAGS)))
        tokens.append(draw(st.sampled_from(VALUES)))
    return tokens


@settings(max_examples=60, **COMMON)
@given(args=argv())
def test_cli_argument_fuzz(tmp_path_factory, capfd, args):
    from kerasq.cli import main

    work = str(tmp_path_factory.mktemp("cli"))
    with open(os.path.join(work, "bad.prototxt"), "w") as f:
        f.write('layer { name: "a" type: "ReLU" bottom: "nope" top: "a" }\n')
    with open(os.path.join(work, "m.h5"), "wb") as f:
        f.write(b"\x89HDF\r\n\x1a\n" + b"\x00" * 64)
    with open(os.path.join(work, "bad.npy"), "wb") as f:
        f.write(_npy_bytes(np.full((2, 2), np.nan, "f4")))
    os.mkfifo(os.path.join(work, "fifo"))
    capfd.readouterr()
    before = sorted(os.listdir(work))
    try:
        status = _watchdog(main, [a.replace("{W}", work) for a in args])
    except SystemExit as exc:
        status = exc.code
    err = capfd.readouterr().err
    assert status in (0, 1, 2), (args, status, err[-1000:])
    assert "Traceback" not in err, (args, err[-2000:])
    assert len([line for line in err.splitlines() if line.startswith("kerasq: error:")]) <= 1
    if status == 2:
        assert sorted(os.listdir(work)) == before, args
