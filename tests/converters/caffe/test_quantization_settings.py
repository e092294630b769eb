"""The converter's reader of caffe-jacinto / Ristretto quantization settings.

References: the settings written in the files (values chosen by hand in tests/schemes/data
and below), and ``QuantizationConfig.from_caffe`` on the same net given as separate files.
"""

from __future__ import annotations

import pathlib
import sys

import pytest

from kerasq.converters.caffe.quantization import (
    has_quantization_settings,
    read_quantization_settings,
)
from kerasq.converters.caffe.text_format import parse

DATA = pathlib.Path(__file__).resolve().parents[2] / "schemes" / "data"


def _solver_with_net_param(net_text: str, solver_text: str) -> str:
    """A caffe-jacinto 0.15 solver holding its net in ``net_param`` (no net file)."""
    body = "\n".join("  " + line for line in net_text.splitlines() if not line.startswith("#"))
    return solver_text.replace('net: "train_val.prototxt"', "") + "\nnet_param {\n" + body + "\n}\n"


def test_015_solver_holding_net_param_is_read_on_its_own(tmp_path):
    """The same settings as the net file + solver file given separately."""
    from kerasq.schemes import QuantizationConfig

    net, solver = DATA / "jacinto015_test.prototxt", DATA / "jacinto015_solver.prototxt"
    alone = tmp_path / "solver_net_param.prototxt"
    alone.write_text(_solver_with_net_param(net.read_text(), solver.read_text()))
    settings = read_quantization_settings(alone)
    assert settings.flavor == "jacinto-0.15" and settings.present
    # values written in the files: solver bw_weights 12, bw_layer_out 10, start 1500
    assert (settings.net["bitwidth_weights"], settings.net["bitwidth_activations"],
            settings.net["quantization_start"]) == (12, 10, 1500)
    assert QuantizationConfig.from_caffe(alone) == QuantizationConfig.from_caffe(net, solver)


def test_layers_carry_caffe_type_and_the_converters_keras_name(tmp_path):
    path = tmp_path / "r.prototxt"
    path.write_text(
        'layer { name: "conv1/dw" type: "ConvolutionRistretto"\n'
        "  quantization_param { bw_params: 6 fl_params: 5 bw_layer_out: 8 fl_layer_out: 3 } }\n"
        'layer { name: "fc" type: "FcRistretto" }\n'
        'layer { name: "relu" type: "ReLU" }\n'
    )
    settings = read_quantization_settings(path)
    assert settings.flavor == "ristretto"
    got = [(layer.name, layer.caffe_type, layer.keras_name) for layer in settings.layers]
    assert got == [("conv1/dw", "ConvolutionRistretto", "conv1_dw"),
                   ("fc", "FcRistretto", "fc")]
    conv = dict(settings.layers[0].fields)
    assert (conv["bitwidth_weights"], conv["frac_bits_weights"], conv["bitwidth_activations"],
            conv["frac_bits_activations"]) == (6, 5, 8, 3)
    assert settings.net["precision"] == "float"  # only *Ristretto layers are quantized


@pytest.mark.parametrize("text,present", [
    ('layer { name: "c" type: "Convolution" }', False),
    ('quantize: true\nlayer { name: "c" type: "Convolution" }', True),
    ('net_quantization_param { bitwidth_weights: 8 }', True),
    ('layer { name: "c" type: "Convolution" quantization_param { bw_weights: 8 } }', True),
    ('layer { name: "c" type: "ConvolutionRistretto" }', True),
    ('base_lr: 0.1\nnet_param { layer { name: "c" type: "Convolution" } }', False),
    ('insert_quantization_param: true\nnet_param { layer { name: "c" type: "Convolution" } }',
     True),
])
def test_has_quantization_settings(text, present):
    assert has_quantization_settings(parse(text)) is present


def test_plain_deploy_prototxt_has_no_settings_and_reads_as_float():
    from conftest import shared_path

    lenet = shared_path("caffe-models", "lenet-mnist", "lenet.prototxt")
    settings = read_quantization_settings(lenet)
    assert not settings.present and settings.net["precision"] == "float"
    assert settings.layers == ()


def test_reading_settings_does_not_load_tensorflow():
    import subprocess

    code = ("import sys; from kerasq.converters.caffe.quantization import "
            "read_quantization_settings as r; r(sys.argv[1]); "
            "assert 'tensorflow' not in sys.modules")
    subprocess.run([sys.executable, "-c", code, str(DATA / "jacinto017_test.prototxt")],
                   check=True)


def test_convert_joins_keras_layers_with_their_caffe_layer_and_settings(tmp_path):
    """``caffe.convert``: each Keras layer with its Caffe name, type and own settings, joined
    by the Keras name (which survives .h5 reload); the settings as written in the file."""
    from conftest import shared_path

    from kerasq._compat import keras
    from kerasq.converters import caffe

    folder = shared_path("caffe-models", "lenet-mnist")
    text = (folder / "lenet.prototxt").read_text().replace(
        'name: "conv1"\n  type: "Convolution"',
        'name: "conv1"\n  type: "ConvolutionRistretto"\n'
        "  quantization_param { bw_params: 6 fl_params: 7 bw_layer_out: 8 fl_layer_out: 2 }")
    assert "ConvolutionRistretto" in text
    prototxt = tmp_path / "lenet_r.prototxt"
    prototxt.write_text(text)
    net = caffe.convert(prototxt, folder / "lenet_iter_10000.caffemodel")
    assert net.quantization.flavor == "ristretto"
    conv1 = net.layers["conv1"]
    assert (conv1.name, conv1.caffe_type) == ("conv1", "Convolution")
    assert (conv1.quantization["bitwidth_weights"], conv1.quantization["frac_bits_weights"],
            conv1.quantization["frac_bits_activations"]) == (6, 7, 2)
    assert net.layers["ip1_flatten"].name == "ip1" and net.layers["ip2"].quantization == {}
    assert net.model.get_layer("conv1").caffe_type == "Convolution"
    path = tmp_path / "m.h5"
    net.model.save(path)
    reloaded = keras.models.load_model(path, custom_objects=caffe.custom_objects())
    assert set(net.layers) <= {layer.name for layer in reloaded.layers}


def test_detect_flavor_of_a_solver_holding_net_param():
    from kerasq.converters.caffe.quantization import detect_flavor

    solver = parse("insert_quantization_param: true\n"
                   'net_param { layer { name: "c" type: "Convolution" } }')
    assert detect_flavor(solver) == "jacinto-0.15"
    assert detect_flavor(parse('net_param { layer { name: "c" type: "Convolution" } }')) \
        == "jacinto-0.16"
