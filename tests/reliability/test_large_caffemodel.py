"""Big caffemodels: streamed reading, bounded memory, progress, correct outputs.

- The streaming reader (kerasq.converters.caffe.stream_reader) returns exactly what the
  protobuf library parses, for every caffemodel of the shared corpora (real BVLC files,
  V1 legacy binaries, real public models).
- A synthetic VGG-style caffemodel (tools/make_large_caffemodel.py, written streaming in
  the protobuf wire format) converts in a fresh process with peak RSS over the
  post-import baseline under 2.5x the file size, reports progress for every layer, and
  its output equals OpenCV's independent Caffe implementation (cv2.dnn).
  Default: 150 MiB. Slow: 1 GiB and 2.1 GiB (over protobuf's 2 GB message limit):

      pytest tests/reliability/test_large_caffemodel.py -m slow -q
"""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil

import numpy as np
import pytest

from conftest import REPO_ROOT, SHARED, shared_path
from kerasq.errors import CaffeFormatError

MAX_RATIO = 2.5


def _load(name: str, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _load("large_caffemodel_bench", REPO_ROOT / "benchmarks" / "large_caffemodel.py")
gen = _load("make_large_caffemodel", REPO_ROOT / "tools" / "make_large_caffemodel.py")


def test_stream_reader_equals_protobuf_on_every_shared_caffemodel():
    from kerasq.converters.caffe import reader
    from kerasq.converters.caffe.stream_reader import read_caffemodel_table

    shared_path("caffe-golden")
    files = sorted(glob.glob(str(SHARED / "**" / "*.caffemodel"), recursive=True))
    assert len(files) >= 40
    for path in files:
        expected = reader.weights_by_layer(reader.read_caffemodel(path), path)
        got = read_caffemodel_table(path)
        assert list(got) == list(expected), path
        for name, entries in expected.items():
            assert len(got[name]) == len(entries), (path, name)
            for want_blobs, got_blobs in zip(entries, got[name]):
                assert len(got_blobs) == len(want_blobs)
                for want, have in zip(want_blobs, got_blobs):
                    assert have.dtype == np.float32 and have.shape == want.shape, (path, name)
                    np.testing.assert_array_equal(have, want, err_msg=f"{path}: {name}")


def test_stream_reader_rejects_broken_files(tmp_path):
    from kerasq.converters.caffe.stream_reader import read_caffemodel_table

    good = shared_path("caffe-golden", "lenet", "model.caffemodel").read_bytes()
    cases = {
        "truncated": good[: len(good) // 2],
        "empty": b"",
        "huge_length": b"\xa2\x06" + b"\xff\xff\xff\xff\x0f" + b"\x00" * 64,  # 4 GB layer
        "bad_wire_type": b"\x0f" + b"\x00" * 8,
        "text": b'name: "net"\nlayer { name: "x" }\n',
    }
    for label, data in cases.items():
        path = tmp_path / f"{label}.caffemodel"
        path.write_bytes(data)
        with pytest.raises(CaffeFormatError) as info:
            read_caffemodel_table(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value), label


def _convert_and_check(tmp_path, size_mb: float) -> dict:
    cv2 = pytest.importorskip("cv2")
    need = 1.3 * size_mb * 2**20
    free = shutil.disk_usage(tmp_path).free
    if free < need:
        pytest.skip(f"needs {need / 2**30:.1f} GiB free disk in {tmp_path}, has {free / 2**30:.1f}")
    paths = gen.write_vgg_caffemodel(str(tmp_path / "net"), int(size_mb * 2**20), seed=3)
    size = os.path.getsize(paths["caffemodel"])
    assert abs(size - size_mb * 2**20) < 0.02 * size_mb * 2**20
    out = str(tmp_path / "keras_prob.npy")
    report = bench.measure(paths["prototxt"], paths["caffemodel"], out)

    layers_in_prototxt = gen.prototxt_text(int(paths["width"])).count("layer {") - 1  # Input
    assert report["progress_calls"] == layers_in_prototxt
    assert f"[{layers_in_prototxt}/{layers_in_prototxt}] prob" in report["stderr"]
    ratio = report["ratio"]
    assert ratio < MAX_RATIO, (
        f"conversion peak {ratio:.2f}x the file size ({size / 2**20:.0f} MiB file, "
        f"peak {(report['peak_kib'] - report['baseline_kib']) / 1024:.0f} MiB over baseline)"
    )

    # Independent reference: OpenCV's Caffe importer and forward pass.
    x = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype(np.float32)
    net = cv2.dnn.readNetFromCaffe(paths["prototxt"], paths["caffemodel"])
    net.setInput(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    want = net.forward("prob")
    del net
    got = np.load(out, allow_pickle=False)
    np.testing.assert_allclose(got, want.reshape(got.shape), rtol=1e-3, atol=1e-5)
    assert np.all(np.argmax(got, 1) == np.argmax(want.reshape(got.shape), 1))
    return report


def test_150mib_vgg_converts_in_bounded_memory(tmp_path):
    _convert_and_check(tmp_path, 150)


@pytest.mark.slow
def test_1gib_vgg_converts_in_bounded_memory(tmp_path):
    _convert_and_check(tmp_path, 1024)


@pytest.mark.slow
def test_over_2gb_caffemodel_is_streamed(tmp_path):
    """Over protobuf's 2 GB message limit: streamed, converted and correct, not a crash."""
    report = _convert_and_check(tmp_path, 2150)
    assert report["file_bytes"] > 2**31
