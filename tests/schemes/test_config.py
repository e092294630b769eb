"""QuantizationConfig: validation names the field, JSON round trip, overrides resolution."""

from __future__ import annotations

import dataclasses

import pytest

from kerasq.errors import QuantizationConfigError
from kerasq.schemes.config import QuantizationConfig


@pytest.mark.parametrize(
    "field, value",
    [
        ("precision", "int8"),
        ("bitwidth_weights", 1),
        ("bitwidth_weights", 33),
        ("bitwidth_activations", 8.0),
        ("bitwidth_bias", True),
        ("rounding", "up"),
        ("train_rounding", "floor"),
        ("power2_range", 1),
        ("exp_bits", 0),
        ("mant_bits", -1),
        ("range_estimator", "mse"),
        ("percentile", 20.0),
        ("ema_update_factor", 0.0),
        ("range_expansion", 0.5),
        ("quantization_start", -1),
        ("unknown_layers", "crash"),
        ("frac_bits_weights", 1.5),
        ("ignored_layers", "conv1"),
    ],
)
def test_invalid_field_raises_naming_it(field, value):
    with pytest.raises(QuantizationConfigError) as info:
        QuantizationConfig(**{field: value})
    assert str(info.value).startswith(f"{field}=")
    assert "\n" not in str(info.value)


def test_pow2_exponent_order_is_checked():
    with pytest.raises(QuantizationConfigError, match="pow2_exp_min"):
        QuantizationConfig(pow2_exp_min=0, pow2_exp_max=-3)


def test_overrides_are_validated_and_name_the_key():
    with pytest.raises(QuantizationConfigError) as info:
        QuantizationConfig(overrides={"conv1": {"bitwidth_weights": 40}})
    assert info.value.layer == "conv1" and "bitwidth_weights=40" in str(info.value)
    with pytest.raises(QuantizationConfigError, match="unknown or non-overridable field 'bits'"):
        QuantizationConfig(overrides={"Dense": {"bits": 4}})


def test_unknown_field_in_replace_and_from_dict():
    with pytest.raises(QuantizationConfigError, match="bitwidth"):
        QuantizationConfig().replace(bitwidth=4)
    with pytest.raises(QuantizationConfigError, match="nonsense"):
        QuantizationConfig.from_dict({"nonsense": 1})


def test_defaults_are_kerasq_symmetric_pow2_dfp_8_8():
    c = QuantizationConfig()
    assert (c.precision, c.bitwidth_weights, c.bitwidth_activations) == ("dfp", 8, 8)
    assert c.power2_range and not c.apply_offset_weights and not c.apply_offset_activations
    # ties to even: TFLite's default int8 kernels (XNNPACK) requantize that way
    assert c.rounding == "nearest_even"
    assert c.train_weight_rounding == "stochastic" and c.train_activation_rounding == "nearest_even"
    assert c.quantize_inputs is True


def test_quantize_inputs_field():
    c = QuantizationConfig(quantize_inputs=False)
    assert QuantizationConfig.from_json(c.to_json()) == c and not c.to_dict()["quantize_inputs"]
    with pytest.raises(QuantizationConfigError, match="quantize_inputs"):
        QuantizationConfig(quantize_inputs="no")


def test_json_round_trip_and_immutability():
    c = QuantizationConfig(bitwidth_weights=4, ignored_layers=["fc"],
                           overrides={"Conv2D": {"rounding": "half_up"}})
    again = QuantizationConfig.from_json(c.to_json())
    assert again == c and hash(again) == hash(c)
    assert again.ignored_layers == ("fc",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.bitwidth_weights = 8
    with pytest.raises(TypeError):
        c.overrides["Conv2D"]["rounding"] = "nearest"  # read-only mapping


class _FakeLayer:
    def __init__(self, name, caffe_type=None):
        self.name = name
        if caffe_type:
            self.caffe_type = caffe_type


class Conv2D(_FakeLayer):
    pass


def test_for_layer_name_beats_type_and_caffe_type_is_a_type():
    c = QuantizationConfig(overrides={
        "Conv2D": {"bitwidth_weights": 4, "rounding": "half_up"},
        "Convolution": {"bitwidth_activations": 16},
        "conv1": {"bitwidth_weights": 6},
    })
    resolved = c.for_layer(Conv2D("conv1", caffe_type="Convolution"))
    assert (resolved.bitwidth_weights, resolved.rounding, resolved.bitwidth_activations) == (
        6, "half_up", 16)
    assert c.for_layer(Conv2D("conv2")).bitwidth_weights == 4
    assert c.for_layer(_FakeLayer("fc")) is c


def test_ignored_layer_resolves_to_float():
    c = QuantizationConfig(ignored_layers=("fc",))
    assert c.for_layer(_FakeLayer("fc")).precision == "float"
    assert c.is_ignored("fc") and not c.is_ignored("conv")


class Dense(_FakeLayer):
    pass


def test_caffe_type_of_stock_keras_layers_is_a_type_key():
    c = QuantizationConfig(overrides={"InnerProduct": {"bitwidth_weights": 4}})
    assert c.for_layer(Dense("ip1")).bitwidth_weights == 4
    assert c.for_layer(Conv2D("conv1")).bitwidth_weights == 8
