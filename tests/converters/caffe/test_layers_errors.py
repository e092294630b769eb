"""Bad hyper-parameters / weights of the activation, shape, normalization and resize layers give one-line KerasqErrors naming the file
and the layer (and, through the CLI, exit status 2 and no output file)."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import numpy as np
import pytest

from kerasq.errors import CaffeFormatError, UnsupportedLayerError

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from netbuilder import NetBuilder  # noqa: E402

X4 = (1, 6, 4, 5)

CASES = [
    # (layer type, param, tops, extra bottoms, blobs, error class, words in the reason)
    (
        "Slice",
        "slice_param { axis: 1 slice_point: 1 slice_point: 2 }",
        2,
        [],
        [],
        CaffeFormatError,
        "slice_point",
    ),
    ("Slice", "slice_param { axis: 2 }", 3, [], [], CaffeFormatError, "equally"),
    (
        "Slice",
        "slice_param { axis: 1 slice_point: 4 slice_point: 2 }",
        3,
        [],
        [],
        CaffeFormatError,
        "increasing",
    ),
    ("Slice", "slice_param { axis: 5 }", 2, [], [], CaffeFormatError, "out of range"),
    ("Crop", "crop_param { axis: 2 offset: 3 }", 1, ["ref"], [], CaffeFormatError, "exceeds"),
    (
        "Crop",
        "crop_param { axis: 1 offset: 1 offset: 2 }",
        1,
        ["ref"],
        [],
        CaffeFormatError,
        "offsets",
    ),
    ("Crop", "", 1, [], [], CaffeFormatError, "2 bottoms"),
    ("Tile", "tile_param { axis: 1 }", 1, [], [], CaffeFormatError, "tiles"),
    ("LRN", "lrn_param { local_size: 4 }", 1, [], [], CaffeFormatError, "odd"),
    (
        "Interp",
        "interp_param { zoom_factor: 2 pad_beg: 1 }",
        1,
        [],
        [],
        UnsupportedLayerError,
        "pad_beg",
    ),
    ("Interp", "", 1, [], [], CaffeFormatError, "zoom_factor"),
    ("Upsample", "upsample_param { scale: 2 }", 1, ["ref"], [], UnsupportedLayerError, "unpooling"),
    ("Upsample", "upsample_param { upsample_h: 8 }", 1, [], [], CaffeFormatError, "upsample_w"),
    ("PReLU", "", 1, [], [], CaffeFormatError, "missing weights"),
    ("PReLU", "", 1, [], [np.ones(4, np.float32)], CaffeFormatError, "shape mismatch"),
    ("Normalize", "", 1, [], [], CaffeFormatError, "missing weights"),
    (
        "Embed",
        "embed_param { input_dim: 5 num_output: 3 bias_term: false }",
        1,
        [],
        [np.ones((4, 3), np.float32)],
        CaffeFormatError,
        "shape mismatch",
    ),
    ("Bias", "", 1, [], [np.ones(5, np.float32)], CaffeFormatError, "shape mismatch"),
    ("ShuffleChannel", "shuffle_channel_param { group: 4 }", 1, [], [], CaffeFormatError, "group"),
    (
        "Permute",
        "permute_param { order: 0 order: 1 order: 1 }",
        1,
        [],
        [],
        CaffeFormatError,
        "order",
    ),
    ("ArgMax", "argmax_param { axis: 1 top_k: 7 }", 1, [], [], CaffeFormatError, "top_k"),
    ("Exp", "exp_param { base: -2 }", 1, [], [], CaffeFormatError, "base"),
    ("Log", "log_param { base: 1 }", 1, [], [], CaffeFormatError, "base"),
    ("Clip", "clip_param { min: 1 max: -1 }", 1, [], [], CaffeFormatError, "min"),
]


def _write(tmp_path, ltype, param, n_tops, extra, blobs):
    nb = NetBuilder("bad", seed=50)
    x = nb.input("data", X4)
    if extra:
        nb.input("ref", (1, 6, 3, 3))
    tops = [f"t{i}" for i in range(n_tops)]
    nb.add(ltype, [x] + extra, tops=tops, name="the_layer", param=param, blobs=blobs)
    return nb.write(tmp_path)


@pytest.mark.parametrize(
    "ltype,param,n_tops,extra,blobs,cls,words",
    CASES,
    ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)],
)
def test_bad_layer_raises_one_line_error(tmp_path, ltype, param, n_tops, extra, blobs, cls, words):
    from kerasq.converters.caffe import load

    proto, model = _write(tmp_path, ltype, param, n_tops, extra, blobs)
    with pytest.raises(cls) as info:
        load(proto, model)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{proto}: the_layer: "), message
    assert words in message, message


def test_cli_convert_reports_and_writes_nothing(tmp_path):
    proto, model = _write(tmp_path, "LRN", "lrn_param { local_size: 4 }", 1, [], [])
    out = tmp_path / "model.h5"
    run = subprocess.run(
        [sys.executable, "-m", "kerasq", "convert", proto, model, "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 2, run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert (
        lines[-1].startswith("kerasq: error: ") and "the_layer" in lines[-1] and "odd" in lines[-1]
    )
    assert not out.exists() and list(tmp_path.glob("model*")) == []
