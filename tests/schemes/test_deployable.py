"""``int8_deployable``: caffe-jacinto / Ristretto settings made deployable as TFLite int8.

References: the TFLite converter and interpreter (``ai_edge_litert``) through kerasq's int8
export (the original caffe-jacinto config is refused, the changed one exports and runs), and
the quantized kernels checked with numpy to lie on a symmetric power-of-two 8-bit grid.
"""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

from kerasq.schemes.config import QuantizationConfig
from kerasq.schemes.deployable import int8_deployable

DATA = pathlib.Path(__file__).resolve().parent / "data"


def test_jacinto_016_defaults_become_power_of_two_symmetric_8_bit():
    config = QuantizationConfig.from_caffe(DATA / "jacinto016_defaults.prototxt")
    assert (config.bitwidth_weights, config.power2_range, config.apply_offset_weights) == (
        12, False, True)
    deployable, changes = int8_deployable(config)
    assert (deployable.bitwidth_weights, deployable.bitwidth_activations,
            deployable.power2_range, deployable.apply_offset_weights,
            deployable.apply_offset_activations, deployable.rounding,
            deployable.quantize_inputs) == (8, 8, True, False, False, "nearest_even", True)
    # kept: what int8 holds
    for name in ("per_channel_weights", "range_estimator", "ema_update_factor",
                 "range_expansion", "unsigned_activations", "bitwidth_bias", "train_rounding"):
        assert getattr(deployable, name) == getattr(config, name), name
    assert changes == [
        "net: weights 12 -> 8 bits",
        "net: non-power-of-two scales -> power-of-two (DFP) scales",
        "net: weights offset -> symmetric range",
        "net: rounding nearest (ties away from zero) -> nearest_even (ties to even, as "
        "TFLite's int8 kernels)",
        "net: float network input -> quantized (the int8 file's input)",
    ]
    again, more = int8_deployable(deployable)
    assert again == deployable and more == []


def test_ristretto_layers_are_changed_and_named_once(tmp_path):
    path = tmp_path / "r.prototxt"
    path.write_text(
        'layer { name: "conv1/a" type: "ConvolutionRistretto" quantization_param {\n'
        "  precision: MINIFLOAT mant_bits: 10 exp_bits: 5 } }\n"
        'layer { name: "conv2" type: "ConvolutionRistretto" quantization_param {\n'
        "  precision: INTEGER_POWER_OF_2_WEIGHTS exp_min: -6 exp_max: 0 } }\n"
        'layer { name: "fc" type: "FcRistretto" quantization_param {\n'
        "  bw_params: 16 fl_params: 12 bw_layer_out: 8 fl_layer_out: 4 } }\n"
    )
    config = QuantizationConfig.from_caffe(path)
    deployable, changes = int8_deployable(config)
    conv1 = deployable.for_layer("conv1_a")
    assert (conv1.precision, conv1.bitwidth_weights, conv1.bitwidth_activations) == ("dfp", 8, 8)
    assert deployable.for_layer("conv2").precision == "dfp"
    fc = deployable.for_layer("fc")
    # 16-bit weights with fl 12 -> 8 bits, fl calibrated; the 8-bit output keeps fl 4
    assert (fc.bitwidth_weights, fc.frac_bits_weights, fc.bitwidth_activations,
            fc.frac_bits_activations) == (8, None, 8, 4)
    assert deployable.for_layer("relu_elsewhere").precision == "float"  # float stays float
    assert "conv1/a: minifloat E5M10 -> DFP 8-bit weights and activations" in changes
    assert "conv2: power-of-two weights (2^-6..2^0) -> DFP 8-bit weights" in changes
    assert "fc: weights 16 -> 8 bits" in changes
    assert "fc: weights fractional length 12 (pinned for 16 bits) -> calibrated" in changes
    assert not any(line.startswith("conv1_a:") for line in changes)  # Keras alias: once


def test_kerasq_default_config_is_unchanged():
    assert int8_deployable(QuantizationConfig()) == (QuantizationConfig(), [])


@pytest.fixture(scope="module")
def lenet_jacinto(tmp_path_factory):
    from conftest import shared_path

    folder = shared_path("caffe-models", "lenet-mnist")
    root = tmp_path_factory.mktemp("lenet_jacinto")
    prototxt = root / "lenet.prototxt"
    prototxt.write_text("quantize: true\n" + (folder / "lenet.prototxt").read_text())
    x = np.random.default_rng(0).uniform(0, 1, (32, 28, 28, 1)).astype("float32")
    return prototxt, folder / "lenet_iter_10000.caffemodel", x


def _quantized(prototxt, weights, x, config):
    import kerasq
    from kerasq.converters import caffe

    return kerasq.calibrate(kerasq.quantize_model(caffe.load(prototxt, weights), config), x)


def test_jacinto_config_is_refused_by_int8_export_and_the_deployable_one_runs(
        lenet_jacinto, tmp_path):
    from kerasq.errors import ExportError
    from kerasq.export.tflite import export_tflite

    prototxt, weights, x = lenet_jacinto
    config = QuantizationConfig.from_caffe(prototxt)
    with pytest.raises(ExportError):
        export_tflite(_quantized(prototxt, weights, x, config), str(tmp_path / "a.tflite"),
                      target="int8", representative_data=x)
    deployable, _ = int8_deployable(config)
    qmodel = _quantized(prototxt, weights, x, deployable)
    result = export_tflite(qmodel, str(tmp_path / "b.tflite"), target="int8",
                           representative_data=x, verify_data=x, verify=False)
    assert result.report is not None
    assert result.report.top1_agreement >= 0.9, result.report.describe()
    kernels = [r for r in _rows(qmodel) if r.tensor == "kernel"]
    assert kernels and all(r.format == "dfp" and r.bits <= 8 for r in kernels)
    # the convolutions' int8 tensors in the file: power-of-two scales, weights zero point 0
    scales = _int8_scales(tmp_path / "b.tflite")
    conv = {name: s for name, s in scales.items() if "/conv" in name}
    assert conv and all(_power_of_two(s) for s in conv.values()), conv


def test_deployable_jacinto_lenet_is_bit_identical_in_int8(lenet_jacinto, tmp_path):
    from kerasq.export.tflite import export_tflite

    prototxt, weights, x = lenet_jacinto
    deployable, _ = int8_deployable(QuantizationConfig.from_caffe(prototxt))
    result = export_tflite(_quantized(prototxt, weights, x, deployable),
                           str(tmp_path / "c.tflite"), target="int8", representative_data=x,
                           verify_data=x, verify=False)
    scales = _int8_scales(tmp_path / "c.tflite")
    assert all(_power_of_two(s) for s in scales.values()), scales
    assert result.report.max_error_steps == 0, result.report.describe()


def _int8_scales(path):
    from ai_edge_litert.interpreter import Interpreter

    details = Interpreter(model_path=str(path)).get_tensor_details()
    return {t["name"]: t["quantization_parameters"]["scales"] for t in details
            if t["dtype"] == np.int8}


def _power_of_two(scales) -> bool:
    return bool(scales.size) and bool(np.all(np.exp2(np.round(np.log2(scales))) == scales))


def _rows(qmodel):
    from kerasq.schemes.report import report

    return report(qmodel)
