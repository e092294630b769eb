"""``kerasq quantize --int8`` / ``kerasq convert --quantize [--int8]`` on real LeNet.

References: the Python API run in-process on the same model and data (``quantize_model`` +
``calibrate`` with ``QuantizationConfig()`` or ``int8_deployable(from_caffe(...))``), and the
TFLite interpreter through ``--tflite`` verification.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from kerasq.cli import main


@pytest.fixture(scope="module")
def lenet(tmp_path_factory):
    from conftest import shared_path

    folder = shared_path("caffe-models", "lenet-mnist")
    root = tmp_path_factory.mktemp("lenet_int8")
    x = np.random.default_rng(0).uniform(0, 1, (16, 28, 28, 1)).astype("float32")
    np.save(root / "cal.npy", x)
    jacinto = root / "lenet_jacinto.prototxt"
    jacinto.write_text("quantize: true\n" + (folder / "lenet.prototxt").read_text())
    return {"root": root, "x": x, "prototxt": folder / "lenet.prototxt", "jacinto": jacinto,
            "weights": folder / "lenet_iter_10000.caffemodel"}


def _reference(prototxt, weights, config, x):
    import kerasq
    from kerasq.converters import caffe

    return kerasq.calibrate(kerasq.quantize_model(caffe.load(str(prototxt), str(weights)),
                                                  config), x)


def test_convert_quantize_without_settings_uses_the_default_config(lenet, capsys):
    """A plain deploy prototxt: kerasq's default (DFP 8/8), said on stderr; the int8 file is
    written and verified (it failed with `quantized weights need more than 32 bits`)."""
    import kerasq
    from kerasq.schemes import QuantizationConfig

    out, tfl = lenet["root"] / "default_q.h5", lenet["root"] / "default.tflite"
    assert main(["convert", str(lenet["prototxt"]), str(lenet["weights"]), "--quantize",
                 "--calibration", str(lenet["root"] / "cal.npy"), "--tflite", str(tfl),
                 "--verify"]) == 0
    captured = capsys.readouterr()
    assert "no caffe-jacinto or Ristretto quantization settings; using kerasq's default " \
           "config (int8-exact DFP 8/8" in captured.err
    assert "leave every layer in float" not in captured.err
    assert "100.00% identical" in captured.out and tfl.exists()
    # the saved model (without --tflite: the export aligns grids of the model it is given)
    assert main(["convert", str(lenet["prototxt"]), str(lenet["weights"]), "--quantize",
                 "--calibration", str(lenet["root"] / "cal.npy"), "-o", str(out)]) == 0
    reference = _reference(lenet["prototxt"], lenet["weights"], QuantizationConfig(), lenet["x"])
    written = kerasq.load_model(out)
    np.testing.assert_array_equal(written.predict(lenet["x"], verbose=0),
                                  reference.predict(lenet["x"], verbose=0))


def test_convert_quantize_with_settings_says_which(lenet, capsys):
    out = lenet["root"] / "jacinto_q.h5"
    assert main(["convert", str(lenet["jacinto"]), str(lenet["weights"]), "--quantize",
                 "--calibration", str(lenet["root"] / "cal.npy"), "-o", str(out)]) == 0
    assert "using its jacinto-0.16 quantization settings" in capsys.readouterr().err


def test_quantize_int8_prints_the_changes_and_matches_the_api(lenet, capsys):
    import kerasq
    from kerasq.schemes import QuantizationConfig
    from kerasq.schemes.deployable import int8_deployable

    model = lenet["root"] / "float.h5"
    assert main(["convert", str(lenet["prototxt"]), str(lenet["weights"]), "-o",
                 str(model)]) == 0
    capsys.readouterr()
    out, saved = lenet["root"] / "int8_q.h5", lenet["root"] / "int8.json"
    assert main(["quantize", str(model), "--config", str(lenet["jacinto"]), "--int8",
                 "--calibration", str(lenet["root"] / "cal.npy"), "-o", str(out),
                 "--save-config", str(saved)]) == 0
    err = capsys.readouterr().err
    expected, changes = int8_deployable(QuantizationConfig.from_caffe(lenet["jacinto"]))
    assert changes and all(f"int8: {line}" in err for line in changes)
    assert "int8: net: weights 12 -> 8 bits" in err
    assert QuantizationConfig.from_json(saved.read_text()) == expected
    assert json.loads(saved.read_text())["power2_range"] is True
    reference = _reference(lenet["prototxt"], lenet["weights"], expected, lenet["x"])
    written = kerasq.load_model(out)
    np.testing.assert_array_equal(written.predict(lenet["x"], verbose=0),
                                  reference.predict(lenet["x"], verbose=0))


def test_quantize_int8_on_a_config_that_fits_says_so(lenet, capsys):
    model = lenet["root"] / "float2.h5"
    assert main(["convert", str(lenet["prototxt"]), str(lenet["weights"]), "-o",
                 str(model)]) == 0
    capsys.readouterr()
    assert main(["quantize", str(model), "--int8", "--calibration",
                 str(lenet["root"] / "cal.npy"), "-o", str(lenet["root"] / "fits.h5")]) == 0
    assert "int8: the config already fits TFLite int8 (nothing changed)" in capsys.readouterr().err


def test_caffe_jacinto_mobilenet_with_its_own_settings_to_bit_identical_int8(tmp_path, capsys):
    """caffe-jacinto's MobileNet-0.5 (`quantize: true`, 12-bit weights with offsets,
    non-power-of-two scales): `convert --quantize --int8 --tflite --verify` gives an int8 file
    equal to the Keras model in the TFLite interpreter (0 output steps)."""
    import subprocess
    import sys

    from conftest import shared_path

    folder = shared_path("caffe-models", "jacinto", "imagenet-mobilenet0.5")
    weights = tmp_path / "mobilenet.caffemodel"
    subprocess.run([sys.executable, str(folder.parent / "make_weights.py"),
                    str(folder / "deploy.prototxt"), str(weights), "5", "new"],
                   check=True, capture_output=True)
    x = np.random.default_rng(0).uniform(0, 255, (8, 64, 64, 3)).astype("float32")
    np.save(tmp_path / "cal.npy", x)
    tflite = tmp_path / "mobilenet.tflite"
    assert main(["convert", str(folder / "deploy.prototxt"), str(weights), "--input-shape",
                 "data:1,3,64,64", "--quantize", "--int8", "--calibration",
                 str(tmp_path / "cal.npy"), "--tflite", str(tflite), "--verify"]) == 0
    captured = capsys.readouterr()
    assert "using its jacinto-0.16 quantization settings" in captured.err
    assert "int8: net: weights 12 -> 8 bits" in captured.err
    assert "max error 0 output steps" in captured.out and "100.00% identical" in captured.out


def test_quantize_config_without_settings_and_int8_uses_the_default_config(lenet, capsys):
    """`kerasq quantize --config deploy.prototxt --int8` on a prototxt with no quantization
    settings (caffe-jacinto 0.15 test files are like this): kerasq's default config, said on
    stderr, and the saved model equals the API run with `QuantizationConfig()` (it stayed
    float and failed with `quantized weights need more than 32 bits`)."""
    import kerasq
    from kerasq.schemes import QuantizationConfig

    root = lenet["root"]
    model, out = root / "plain.h5", root / "plain_q.h5"
    assert main(["convert", str(lenet["prototxt"]), str(lenet["weights"]), "-o",
                 str(model)]) == 0
    capsys.readouterr()
    assert main(["quantize", str(model), "--config", str(lenet["prototxt"]), "--int8",
                 "--calibration", str(root / "cal.npy"), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "using kerasq's default config" in err and "nothing changed" in err
    reference = _reference(lenet["prototxt"], lenet["weights"], QuantizationConfig(), lenet["x"])
    np.testing.assert_array_equal(kerasq.load_model(out).predict(lenet["x"], verbose=0),
                                  reference.predict(lenet["x"], verbose=0))
