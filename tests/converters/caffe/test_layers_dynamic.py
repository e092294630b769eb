"""Activation, shape, normalization and resize layers in fully convolutional models (``load(..., dynamic_spatial=True)``): one Keras
model, run on several spatial sizes, must match the numpy reference at each size."""

from __future__ import annotations

import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import caffe_reference as ref  # noqa: E402
from netbuilder import NetBuilder, assert_caffe_close  # noqa: E402


def test_spatially_dynamic_model_matches_reference_at_several_sizes(tmp_path):
    from kerasq.converters.caffe import load

    nb = NetBuilder("fcn", seed=60)
    x = nb.input("data", (1, 4, 6, 5))
    layers = {
        "zoom": ("Interp", "interp_param { zoom_factor: 2 }"),
        "shrink": ("Interp", "interp_param { shrink_factor: 2 }"),
        "fixed": ("Interp", "interp_param { height: 7 width: 9 }"),
        "up": ("Upsample", "upsample_param { scale_h: 2 scale_w: 3 }"),
        "up_to": ("Upsample", "upsample_param { upsample_h: 11 upsample_w: 10 }"),
        "lrn_a": ("LRN", "lrn_param { local_size: 3 alpha: 0.4 k: 1.5 }"),
        "lrn_w": ("LRN", "lrn_param { norm_region: WITHIN_CHANNEL local_size: 3 alpha: 0.4 }"),
        "mvn": ("MVN", "mvn_param { across_channels: true }"),
        "tile": ("Tile", "tile_param { axis: 2 tiles: 2 }"),
        "red": ("Reduction", "reduction_param { operation: MEAN axis: 2 }"),
        "am": ("ArgMax", "argmax_param { axis: 1 top_k: 2 }"),
        "shuf": ("ShuffleChannel", "shuffle_channel_param { group: 2 }"),
        "pw": ("Power", "power_param { power: 2 shift: 1 }"),
    }
    for name, (ltype, param) in layers.items():
        nb.add(ltype, [x], name=name, param=param)
    nb.add(
        "Normalize",
        [x],
        name="norm",
        param="norm_param { across_spatial: true channel_shared: false }",
        blobs=[nb.randn(4) + 3],
    )
    nb.add(
        "Slice",
        [x],
        tops=["s0", "s1"],
        name="slice",
        param="slice_param { axis: 1 slice_point: 3 }",
    )
    proto, weights = nb.write(tmp_path)
    model = load(proto, weights, dynamic_spatial=True)
    assert model.input_shape == (None, None, None, 4)
    outputs = dict(zip(model.output_names, model.outputs))
    for h, w in [(6, 5), (9, 12), (4, 4)]:
        data = nb.randn(2, 4, h, w)
        want = ref.run_net(nb.prototxt(), nb.params, {"data": data})
        got = model(np.transpose(data, (0, 2, 3, 1)))
        for name, value in zip(outputs, got):
            value = np.asarray(value)
            if value.ndim == 4:
                value = np.transpose(value, (0, 3, 1, 2))
            assert_caffe_close(value, want[name], f"{name} at {h}x{w}")
