"""caffe.proto: generated module up to date, BVLC field numbers, fork text fields."""

from __future__ import annotations

import pathlib as _pathlib
import sys as _sys

_sys.path.insert(0, str(_pathlib.Path(__file__).resolve().parent))  # netbuilder (sibling)

import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[3]
PROTO_DIR = REPO / "converters" / "caffe" / "proto"


def test_generated_module_is_up_to_date(tmp_path):
    pytest.importorskip("grpc_tools")
    (tmp_path / "caffe" / "proto").mkdir(parents=True)
    (tmp_path / "caffe" / "proto" / "caffe.proto").write_bytes(
        (PROTO_DIR / "caffe.proto").read_bytes()
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{tmp_path}",
            f"--python_out={tmp_path}",
            str(tmp_path / "caffe" / "proto" / "caffe.proto"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    fresh = (tmp_path / "caffe" / "proto" / "caffe_pb2.py").read_text()
    committed = (PROTO_DIR / "caffe_pb2.py").read_text()
    assert fresh == committed, "caffe_pb2.py is stale: regenerate it (see caffe.proto header)"


# Field numbers from BVLC/caffe src/caffe/proto/caffe.proto @ 9b89154
# (as tabulated in shared/reference/caffe-semantics.md §6).
BVLC_NUMBERS = {
    "NetParameter": {
        "name": 1,
        "input": 3,
        "input_shape": 8,
        "input_dim": 4,
        "layer": 100,
        "layers": 2,
        "state": 6,
    },
    "BlobProto": {
        "shape": 7,
        "data": 5,
        "diff": 6,
        "double_data": 8,
        "num": 1,
        "channels": 2,
        "height": 3,
        "width": 4,
    },
    "LayerParameter": {
        "name": 1,
        "type": 2,
        "bottom": 3,
        "top": 4,
        "phase": 10,
        "blobs": 7,
        "include": 8,
        "exclude": 9,
        "param": 6,
        "argmax_param": 103,
        "batch_norm_param": 139,
        "bias_param": 141,
        "clip_param": 148,
        "concat_param": 104,
        "convolution_param": 106,
        "crop_param": 144,
        "dropout_param": 108,
        "eltwise_param": 110,
        "elu_param": 140,
        "embed_param": 137,
        "exp_param": 111,
        "flatten_param": 135,
        "inner_product_param": 117,
        "input_param": 143,
        "log_param": 134,
        "lrn_param": 118,
        "mvn_param": 120,
        "pooling_param": 121,
        "power_param": 122,
        "prelu_param": 131,
        "reduction_param": 136,
        "relu_param": 123,
        "reshape_param": 133,
        "scale_param": 142,
        "slice_param": 126,
        "softmax_param": 125,
        "swish_param": 147,
        "threshold_param": 128,
        "tile_param": 138,
    },
    "V1LayerParameter": {
        "bottom": 2,
        "top": 3,
        "name": 4,
        "type": 5,
        "blobs": 6,
        "include": 32,
        "param": 1001,
        "convolution_param": 10,
        "pooling_param": 19,
        "inner_product_param": 17,
        "relu_param": 30,
        "lrn_param": 18,
        "layer": 1,
    },
    "ConvolutionParameter": {
        "num_output": 1,
        "bias_term": 2,
        "pad": 3,
        "kernel_size": 4,
        "stride": 6,
        "dilation": 18,
        "pad_h": 9,
        "pad_w": 10,
        "kernel_h": 11,
        "kernel_w": 12,
        "stride_h": 13,
        "stride_w": 14,
        "group": 5,
        "axis": 16,
    },
    "PoolingParameter": {
        "pool": 1,
        "pad": 4,
        "pad_h": 9,
        "pad_w": 10,
        "kernel_size": 2,
        "kernel_h": 5,
        "kernel_w": 6,
        "stride": 3,
        "stride_h": 7,
        "stride_w": 8,
        "global_pooling": 12,
        "round_mode": 13,
    },
    "InnerProductParameter": {"num_output": 1, "bias_term": 2, "axis": 5, "transpose": 6},
    "BatchNormParameter": {"use_global_stats": 1, "moving_average_fraction": 2, "eps": 3},
    "ScaleParameter": {"axis": 1, "num_axes": 2, "filler": 3, "bias_term": 4},
    "EltwiseParameter": {"operation": 1, "coeff": 2},
    "ReshapeParameter": {"shape": 1, "axis": 2, "num_axes": 3},
    "NetStateRule": {"phase": 1, "min_level": 2, "max_level": 3, "stage": 4, "not_stage": 5},
}


@pytest.mark.parametrize("message", sorted(BVLC_NUMBERS))
def test_field_numbers_match_bvlc(message):
    from kerasq.converters.caffe.proto import caffe_pb2

    fields = getattr(caffe_pb2, message).DESCRIPTOR.fields_by_name
    got = {name: fields[name].number for name in BVLC_NUMBERS[message]}
    assert got == BVLC_NUMBERS[message]


def test_v1_layer_type_enum_matches_bvlc():
    from kerasq.converters.caffe.proto import caffe_pb2

    enum = caffe_pb2.V1LayerParameter.LayerType
    expected = {
        "CONVOLUTION": 4,
        "POOLING": 17,
        "INNER_PRODUCT": 14,
        "RELU": 18,
        "SOFTMAX": 20,
        "LRN": 15,
        "DROPOUT": 6,
        "CONCAT": 3,
        "ELTWISE": 25,
        "SPLIT": 22,
        "SLICE": 33,
        "DECONVOLUTION": 39,
        "ABSVAL": 35,
        "SILENCE": 36,
        "SOFTMAX_LOSS": 21,
    }
    assert {k: enum.Value(k) for k in expected} == expected


def test_fork_text_fields_parse():
    from kerasq.converters.caffe.reader import parse_prototxt_text

    text = """
    layer { name: "p" type: "Permute" bottom: "x" top: "p"
            permute_param { order: 0 order: 2 order: 3 order: 1 } }
    layer { name: "n" type: "Normalize" bottom: "x" top: "n"
            norm_param { across_spatial: false channel_shared: false
                         scale_filler { type: "constant" value: 20 } } }
    layer { name: "i" type: "Interp" bottom: "x" top: "i" interp_param { zoom_factor: 2 } }
    layer { name: "u" type: "Upsample" bottom: "x" top: "u" upsample_param { scale: 2 } }
    layer { name: "s" type: "ShuffleChannel" bottom: "x" top: "s"
            shuffle_channel_param { group: 3 } }
    layer { name: "q" type: "Pooling" bottom: "x" top: "q"
            pooling_param { pool: MAX kernel_size: 2 ceil_mode: false } }
    """
    net = parse_prototxt_text(text)
    assert list(net.layer[0].permute_param.order) == [0, 2, 3, 1]
    assert net.layer[1].norm_param.channel_shared is False
    assert net.layer[2].interp_param.zoom_factor == 2
    assert net.layer[3].upsample_param.scale == 2
    assert net.layer[4].shuffle_channel_param.group == 3
    assert net.layer[5].pooling_param.ceil_mode is False


def test_weights_message_reads_only_names_types_and_blobs():
    """A caffemodel whose hyper-parameter fields hold fork data (wrong types) still reads."""
    from netbuilder import _len_field, _int_field

    from kerasq.converters.caffe.reader import parse_caffemodel_bytes

    blob = _len_field(7, _len_field(1, bytes([2]))) + _len_field(5, b"\x00\x00\x80?\x00\x00\x00@")
    # field 147 is BVLC swish_param (a message) but holds a varint here, 202 a string.
    layer = (
        _len_field(1, b"conv")
        + _len_field(2, b"Convolution")
        + _int_field(147, 5)
        + _len_field(202, b"fork garbage")
        + _len_field(7, blob)
    )
    weights = parse_caffemodel_bytes(_len_field(100, layer))
    assert weights.layer[0].name == "conv"
    assert list(weights.layer[0].blobs[0].data) == [1.0, 2.0]
