"""Layer names in a QuantizationConfig (``ignored_layers``, ``overrides`` keys) must name
something of the model: a layer, a converted layer's Caffe name, a Caffe layer the converter
folded away (BatchNorm/Scale into a conv), or a layer type. Real converted nets: LeNet
(BVLC caffemodel) and caffe-jacinto's JacintoNet11 v2 (BatchNorm folded, its own
quantization settings)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from kerasq.errors import QuantizationConfigError
from kerasq.schemes.config import QuantizationConfig
from tests.conftest import shared_path

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCHEME_DATA = os.path.join(REPO, "tests", "schemes", "data")


def _run_cli(*args: str, cwd: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-m", "kerasq", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def jacinto(tmp_path_factory):
    """JacintoNet11 v2 converted to .h5 (seeded weights), and a copy of its test.prototxt
    whose quantization settings name the folded BatchNorm ``conv1a/bn`` and ``conv1a/relu``."""
    net = shared_path("caffe-models", "jacinto", "cifar10-jnet11v2")
    work = tmp_path_factory.mktemp("jacinto")
    caffemodel = work / "w.caffemodel"
    subprocess.run([sys.executable, str(net.parent / "make_weights.py"), str(net / "deploy.prototxt"),
                    str(caffemodel), "1", "new"], check=True, capture_output=True, timeout=600)
    done = _run_cli("convert", str(net / "deploy.prototxt"), str(caffemodel), "-o", "j.h5",
                    cwd=str(work))
    assert done.returncode == 0, done.stderr
    text = (net / "test.prototxt").read_text()
    setting = ("  quantization_param { precision: QuantizationParameter_Precision_DYNAMIC_FIXED_POINT"
               " qparam_out { bitwidth: 6 } }\n")
    for name, kind in (("conv1a/bn", "BatchNorm"), ("conv1a/relu", "ReLU")):
        head = f'  name: "{name}"\n  type: "{kind}"\n'
        assert head in text
        text = text.replace(head, head + setting)
    (work / "test_bn.prototxt").write_text(text)
    np.save(work / "cal.npy", np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3))
            .astype(np.float32))
    return work, net


def test_folded_caffe_layer_names_are_accepted(jacinto):
    import kerasq

    work, net = jacinto
    model = kerasq.load_model(str(work / "j.h5"))
    # the folded BatchNorm is no Keras layer, but the converter recorded it (saved in the .h5)
    assert "conv1a/bn" in getattr(model.get_layer("conv1a"), "caffe_folded", "").split(",")
    assert "conv1a_bn" not in {layer.name for layer in model.layers}
    config = QuantizationConfig.from_caffe(str(work / "test_bn.prototxt"))
    assert {"conv1a/bn", "conv1a_bn", "conv1a/relu"} <= set(config.overrides)
    config.check_layer_names(model)
    qmodel = kerasq.quantize_model(model, config)
    assert len(qmodel.layers) > len(model.layers) / 2
    for prototxt in (net / "test.prototxt", work / "test_bn.prototxt"):
        done = _run_cli("quantize", "j.h5", "--config", str(prototxt), "--calibration", "cal.npy",
                        "-o", "q.h5", cwd=str(work))
        assert done.returncode == 0, done.stderr
        assert (work / "q.h5").is_file()
        os.remove(work / "q.h5")


def test_config_of_another_net_is_refused(jacinto):
    import kerasq

    work, _ = jacinto
    model = kerasq.load_model(str(work / "j.h5"))
    lenet_config = QuantizationConfig.from_caffe(
        os.path.join(SCHEME_DATA, "ristretto_lenet_quantized.prototxt"))
    with pytest.raises(QuantizationConfigError) as info:
        kerasq.quantize_model(model, lenet_config)
    message = str(info.value)
    assert "\n" not in message and message.startswith("overrides: no layer or layer type named")
    assert any(repr(key) in message for key in lenet_config.overrides), message
    done = _run_cli("quantize", "j.h5", "--config",
                    os.path.join(SCHEME_DATA, "ristretto_lenet_quantized.prototxt"),
                    "-o", "q.h5", cwd=str(work))
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("kerasq: error:")]
    assert len(errors) == 1 and "no layer or layer type named 'conv1'" in errors[0], done.stderr
    assert "Traceback" not in done.stderr
    assert not (work / "q.h5").exists()


def test_lenet_with_its_ristretto_settings_and_typos(tmp_path):
    import kerasq
    from kerasq.converters import caffe

    lenet = shared_path("caffe-models", "lenet-mnist")
    model = caffe.load(str(lenet / "lenet.prototxt"), str(lenet / "lenet_iter_10000.caffemodel"))
    config = QuantizationConfig.from_caffe(
        os.path.join(SCHEME_DATA, "ristretto_lenet_quantized.prototxt"))
    kerasq.quantize_model(model, config)  # every layer it names exists
    kerasq.quantize_model(model, QuantizationConfig(
        ignored_layers=("ip2",), overrides={"Convolution": {"bitwidth_weights": 4},
                                            "Dense": {"bitwidth_weights": 6},
                                            "LSTM": {"bitwidth_weights": 6}}))
    cases = [
        (QuantizationConfig(ignored_layers=("ip3",)), "ignored_layers: no layer named 'ip3'",
         "'ip1'"),
        (QuantizationConfig(overrides={"conv_1": {"bitwidth_weights": 4}}),
         "overrides: no layer or layer type named 'conv_1'", "'conv1'"),
        (QuantizationConfig(overrides={"Convolutoin": {"bitwidth_weights": 4}}),
         "'Convolutoin'", "'Convolution'"),
        (QuantizationConfig(overrides={"zzz": {"bitwidth_weights": 4}}), "'zzz'", ""),
    ]
    for config, start, hint in cases:
        with pytest.raises(QuantizationConfigError) as info:
            kerasq.quantize_model(model, config)
        message = str(info.value)
        assert "\n" not in message and start in message and hint in message, message
    path = tmp_path / "lenet.h5"
    model.save(str(path))
    (tmp_path / "cfg.json").write_text(QuantizationConfig(ignored_layers=("ip9",)).to_json())
    for args in (["--ignore", "typo"], ["--config", "cfg.json"]):
        done = _run_cli("quantize", "lenet.h5", *args, "-o", "q.h5", cwd=str(tmp_path))
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1, done.stderr
        assert lines[0].startswith("kerasq: error:") and "no layer named" in lines[0]
        assert "Traceback" not in done.stderr and not (tmp_path / "q.h5").exists()
