"""Reader: every shared prototxt/caffemodel parses; text quirks; legacy blobs; big binaries."""

from __future__ import annotations

import pathlib as _pathlib
import sys as _sys

_sys.path.insert(0, str(_pathlib.Path(__file__).resolve().parent))  # netbuilder (sibling)

import logging
import os
import struct

import numpy as np
import pytest

from conftest import shared_path


def _shared_files(pattern):
    root = shared_path()
    return sorted(
        str(p) for sub in ("caffe-models", "caffe-golden") for p in (root / sub).rglob(pattern)
    )


def test_every_shared_prototxt_parses(caplog):
    from kerasq.converters.caffe.reader import read_prototxt

    # solver files (caffe-jacinto's nets keep theirs beside the net) are not nets
    files = [f for f in _shared_files("*.prototxt") if not os.path.basename(f).startswith("solver")]
    assert len(files) > 60
    # caffe-jacinto's train/test nets carry data and evaluation layer fields of their forks
    # (dropped with their layers in the TEST net): skipped with a warning naming them
    fork_data_fields = {"annotated_data_param", "crop_h", "crop_w", "detection_evaluate_param",
                        "image_label_data_param", "parser_threads", "resize_param", "threads"}
    for path in files:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="kerasq"):
            net = read_prototxt(path)
        assert net.layer or net.layers or net.input, path
        messages = [r.getMessage() for r in caplog.records]
        if "/jacinto/" in path and messages:
            named = messages[0].rsplit(": ", 1)[-1].split(", ")
            assert len(messages) == 1 and set(named) <= fork_data_fields, messages
        else:
            assert not messages, messages


def test_every_shared_caffemodel_parses():
    from kerasq.converters.caffe.reader import read_caffemodel, weights_by_layer

    files = _shared_files("*.caffemodel")
    assert len(files) > 50
    with_blobs = 0
    for path in files:
        weights = read_caffemodel(path)
        layers = list(weights.layer) + list(weights.layers)
        assert layers, path
        table = weights_by_layer(weights, path)
        with_blobs += bool(table)
        n_blobs = sum(len(layer.blobs) for layer in layers)
        assert sum(len(v[0]) for v in table.values()) <= n_blobs, path
    assert with_blobs > 35


def test_golden_params_match_caffe_dumps():
    """Blobs as read equal the params/<layer>__<i>.npy arrays Caffe itself dumped."""
    from kerasq.converters.caffe.reader import read_caffemodel, weights_by_layer

    root = shared_path("caffe-golden")
    checked = 0
    for case in sorted(p for p in root.iterdir() if (p / "params").is_dir()):
        table = weights_by_layer(read_caffemodel(case / "model.caffemodel"))
        for dump in (case / "params").glob("*.npy"):
            layer, index = dump.stem.rsplit("__", 1)
            want = np.load(dump)
            got = table[layer][0][int(index)]
            assert got.size == want.size, (case.name, dump.name)
            np.testing.assert_array_equal(got.reshape(want.shape), want)
            checked += 1
    assert checked > 80


def test_v1_binary_with_legacy_dims():
    from kerasq.converters.caffe.reader import fit_blob_shape, read_caffemodel, weights_by_layer

    path = shared_path("caffe-models", "cifar10-quick-v1", "cifar10_quick_iter_5000.caffemodel")
    table = weights_by_layer(read_caffemodel(path))
    assert table["ip1"][0][0].shape == (1, 1, 64, 1024)
    assert fit_blob_shape(table["ip1"][0][0], (64, 1024)).shape == (64, 1024)
    assert fit_blob_shape(table["conv1"][0][1], (32,)).shape == (32,)


def test_binaryproto_mean_matches_raw_floats():
    """Decode the packed data run independently (tag 0x2a, varint length, float32 LE)."""
    from kerasq.converters.caffe.reader import read_binaryproto

    path = shared_path("caffe-models", "mean-binaryproto", "mean.binaryproto")
    raw = path.read_bytes()
    mean = read_binaryproto(path)
    assert mean.shape == (1, 3, 32, 32)
    start = raw.index(bytes([0x2A, 0x80, 0x60]))  # field 5, length 12288 = 3072 floats
    values = np.frombuffer(raw[start + 3 : start + 3 + 12288], dtype="<f4")
    np.testing.assert_array_equal(mean.ravel(), values)


def test_text_quirks_semicolons_quotes_comments_braces():
    from kerasq.converters.caffe.reader import parse_prototxt_text

    text = """# comment
    name: 'quirky' ;
    layer
    {
      name: 'lrn'; type: "LRN" ; bottom: "x" top: "y"
      lrn_param { norm_region: WITHIN_CHANNEL; local_size: 3 }  # trailing
    }
    """
    net = parse_prototxt_text(text)
    assert net.name == "quirky"
    assert net.layer[0].lrn_param.local_size == 3
    assert net.layer[0].lrn_param.norm_region == 1


def test_unknown_fields_are_skipped_with_a_warning(caplog):
    from kerasq.converters.caffe.reader import parse_prototxt_text

    text = """layer { name: "c" type: "Convolution" bottom: "x" top: "c"
      convolution_param { num_output: 4 kernel_size: 3 fork_only_field: 7 }
      mystery_param { a: 1 b { c: "d" } } }"""
    with caplog.at_level(logging.WARNING, logger="kerasq"):
        net = parse_prototxt_text(text, "fork.prototxt")
    assert net.layer[0].convolution_param.num_output == 4
    message = " ".join(r.getMessage() for r in caplog.records)
    assert "fork_only_field" in message and "mystery_param" in message


@pytest.mark.slow
def test_caffemodel_over_64_mb(tmp_path):
    """protobuf's default 64 MB message limit must not apply."""
    from netbuilder import NetBuilder

    from kerasq.converters.caffe.reader import read_caffemodel, weights_by_layer

    nb = NetBuilder("big")
    x = nb.input("data", (1, 4096, 1, 1))
    big = np.arange(4096 * 4500, dtype=np.float32).reshape(4500, 4096) * 1e-6
    nb.add(
        "InnerProduct",
        [x],
        param="inner_product_param { num_output: 4500 bias_term: false }",
        blobs=[big],
    )
    _, model = nb.write(tmp_path)
    assert (tmp_path / "big.caffemodel").stat().st_size > 70 * 2**20
    table = weights_by_layer(read_caffemodel(model))
    np.testing.assert_array_equal(table["innerproduct1"][0][0], big)


def test_struct_sanity_of_float_packing():
    # guards the independent decoder above: little-endian float32
    assert struct.pack("<f", 1.0) == b"\x00\x00\x80?"
