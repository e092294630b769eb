"""The converter tags every layer with its Caffe type; the tag survives save and reload.

Reference: the layer types written in the prototxt. ``QuantizationConfig`` type overrides
(``{"Convolution": {...}}``) reach a converted model through the tag alone, with the
Keras-class table for plain Keras models emptied.
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np
import pytest

import kerasq
from kerasq._compat import keras
from kerasq.converters import caffe
from kerasq.schemes import config as config_module
from kerasq.schemes import slots
from kerasq.schemes.config import QuantizationConfig

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from netbuilder import NetBuilder  # noqa: E402

# Caffe layer name -> type, as written in the prototxt below
WRITTEN = {"conv1": "Convolution", "relu1": "ReLU", "dw": "Convolution", "ip1": "InnerProduct"}


def _net(tmp_path):
    nb = NetBuilder(seed=3)
    x = nb.input("data", (1, 3, 8, 8))
    x = nb.add("Convolution", [x], name="conv1", param="convolution_param { num_output: 4 "
               "kernel_size: 3 }", blobs=[nb.randn(4, 3, 3, 3), nb.randn(4)])
    x = nb.add("ReLU", [x], name="relu1")
    x = nb.add("Convolution", [x], name="dw", param="convolution_param { num_output: 4 "
               "kernel_size: 3 group: 4 }", blobs=[nb.randn(4, 1, 3, 3), nb.randn(4)])
    nb.add("InnerProduct", [x], name="ip1", param="inner_product_param { num_output: 5 }",
           blobs=[nb.randn(5, 64), nb.randn(5)])
    return caffe.load(*nb.write(tmp_path))


def _tags(model):
    return {layer.name: layer.caffe_type for layer in model.layers
            if isinstance(getattr(layer, "caffe_type", None), str)}


def _kernel_bits(qmodel):
    return {s.layer.name: s.base()[0].get_config()["bitwidth"]
            for s in slots.iter_slots(qmodel) if s.role == "kernel"}


@pytest.mark.parametrize("fmt", ["h5", "keras"])
def test_caffe_type_survives_save_and_reload_and_type_overrides_apply(tmp_path, fmt, monkeypatch):
    model = _net(tmp_path)
    tags = _tags(model)
    for name, caffe_type in WRITTEN.items():
        assert tags[name] == caffe_type
    assert tags["ip1_flatten"] == "InnerProduct"  # a helper layer: no Keras-class table has it
    path = tmp_path / f"net.{fmt}"
    model.save(path, save_format="h5" if fmt == "h5" else None)

    reloaded = kerasq.load_model(path)
    assert _tags(reloaded) == tags
    # the converter path does not use the table for plain Keras models
    monkeypatch.setattr(config_module, "CAFFE_TYPE_OF_KERAS_CLASS", {})
    cfg = QuantizationConfig(overrides={"Convolution": {"bitwidth_weights": 4}})
    assert _kernel_bits(kerasq.quantize_model(reloaded, cfg)) == {"conv1": 4, "dw": 4, "ip1": 8}
    # saved again from the reloaded model: still tagged
    again = tmp_path / f"again.{fmt}"
    reloaded.save(again, save_format="h5" if fmt == "h5" else None)
    assert _tags(kerasq.load_model(again)) == tags


def test_a_tagged_file_is_still_a_plain_keras_model(tmp_path):
    model = _net(tmp_path)
    model.save(tmp_path / "net.h5", save_format="h5")
    with kerasq.serialization.quantize_scope():
        plain = keras.models.load_model(tmp_path / "net.h5")
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype(np.float32)
    np.testing.assert_array_equal(plain.predict(x, verbose=0), model.predict(x, verbose=0))
    assert _tags(plain) == {}  # plain Keras ignores the tags; kerasq.load_model restores them


def test_a_file_cannot_set_other_layer_attributes(tmp_path):
    model = _net(tmp_path)
    kerasq.serialization.tag_layers(model, "call", {"conv1": "x"})
    model.save(tmp_path / "net.h5", save_format="h5")
    assert callable(kerasq.load_model(tmp_path / "net.h5").get_layer("conv1").call)
