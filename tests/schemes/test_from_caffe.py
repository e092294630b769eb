"""QuantizationConfig.from_caffe on caffe-jacinto 0.15/0.16/0.17 and Ristretto prototxts.

The prototxts in tests/schemes/data were written from the field lists and defaults of the
respective caffe.proto files (quant-schemes.md §2.1, §3.1, §4.1, §5.1); every expected value
below is the value the spec gives for that field (or the source's default when absent).
"""

from __future__ import annotations

import logging
import pathlib

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
import pytest

from kerasq.errors import CaffeFormatError, QuantizationConfigError
from kerasq.schemes import QuantizationConfig
from kerasq.converters.caffe.text_format import Identifier, parse, parse_file
from kerasq.schemes.config import config_from_caffe
from kerasq.schemes.from_caffe import detect_flavor

DATA = pathlib.Path(__file__).resolve().parent / "data"

# Fields that follow from the dialect, not from the file: caffe-jacinto's per-tensor
# ranges over the whole blob and its unsigned range for non-negative tensors.
JACINTO_COMMON = dict(
    per_channel_weights=False, unsigned_activations=True, range_estimator="ema",
    train_rounding="stochastic",
)


def _assert_fields(cfg: QuantizationConfig, expected: dict) -> None:
    got = {name: getattr(cfg, name) for name in expected}
    assert got == expected


def _write(tmp_path: pathlib.Path, text: str, name: str = "net.prototxt") -> pathlib.Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ------------------------------------------------------------------------ caffe-jacinto 0.16
def test_jacinto016_only_quantize_true_gives_016_defaults():
    cfg = QuantizationConfig.from_caffe(DATA / "jacinto016_defaults.prototxt")
    _assert_fields(cfg, dict(
        JACINTO_COMMON,
        precision="dfp", rounding="nearest", bitwidth_weights=12, bitwidth_activations=8,
        bitwidth_bias=32, quantize_weights=True, quantize_activations=True,
        power2_range=False, apply_offset_weights=True, apply_offset_activations=False,
        quantization_start=1, ema_update_factor=0.1, range_expansion=1.2,
        ignored_layers=(), frac_bits_weights=None, frac_bits_activations=None,
    ))
    assert dict(cfg.overrides) == {}


def test_jacinto016_explicit_fields_prefixed_enums_and_minifloat_layer(caplog):
    with caplog.at_level(logging.DEBUG, logger="kerasq.converters.caffe.quantization"):
        cfg = QuantizationConfig.from_caffe(DATA / "jacinto016_test.prototxt")
    _assert_fields(cfg, dict(
        JACINTO_COMMON,
        precision="dfp", rounding="stochastic", bitwidth_weights=8, bitwidth_activations=10,
        bitwidth_bias=32, quantize_weights=True, quantize_activations=True,
        power2_range=False, apply_offset_weights=False, apply_offset_activations=True,
        quantization_start=3, ema_update_factor=0.1, range_expansion=1.2,
    ))
    assert {k: dict(v) for k, v in cfg.overrides.items()} == {
        "conv1a": {"precision": "minifloat", "mant_bits": 5, "exp_bits": 2},
        "fc": {"precision": "float", "rounding": "nearest"},
    }
    conv = cfg.for_layer("conv1a")
    assert (conv.precision, conv.mant_bits, conv.exp_bits, conv.bitwidth_activations) == (
        "minifloat", 5, 2, 10)
    # unknown fields are ignored, with a debug line naming them and their line
    assert any("some_future_field (line 18)" in r.getMessage() for r in caplog.records)


def test_jacinto016_power2_range_uses_unexpanded_ema_and_drops_weight_offset(tmp_path, caplog):
    path = _write(tmp_path, "quantize: true\nnet_quantization_param { power2_range: true }\n")
    with caplog.at_level(logging.WARNING, logger="kerasq.schemes.from_caffe"):
        cfg = config_from_caffe(path)
    # 0.16 default apply_offset_weights: true cannot be combined with a symmetric pow2 grid
    assert (cfg.power2_range, cfg.apply_offset_weights, cfg.range_expansion) == (True, False, 1.0)
    assert any("apply_offset_weights" in r.getMessage() for r in caplog.records)


def test_jacinto016_fixed_qparams_pin_fractional_lengths_when_not_inserted():
    cfg = config_from_caffe(DATA / "jacinto016_fixed_qparams.prototxt")
    _assert_fields(cfg, dict(power2_range=True, apply_offset_weights=False, range_expansion=1.0))
    assert {k: dict(v) for k, v in cfg.overrides.items()} == {
        "conv1": {
            "precision": "dfp", "power2_range": True,
            "quantize_weights": True, "bitwidth_weights": 8, "frac_bits_weights": 7,
            "quantize_activations": True, "bitwidth_activations": 8, "frac_bits_activations": 4,
            "unsigned_activations": True,
        },
        "pool1": {"power2_range": True, "quantize_activations": False},
    }


def test_jacinto016_without_quantize_true_is_float(tmp_path):
    path = _write(tmp_path, "net_quantization_param { bitwidth_weights: 8 }\n")
    cfg = config_from_caffe(path)
    assert (cfg.precision, cfg.bitwidth_weights) == ("float", 8)
    path = _write(tmp_path, "quantize: true net_quantization_param { quantization_start: 0 }")
    assert config_from_caffe(path).precision == "float"  # 0.16: quantize && start > 0


# ------------------------------------------------------------------------ caffe-jacinto 0.17
def test_jacinto017_names_and_ignored_layers():
    cfg = QuantizationConfig.from_caffe(DATA / "jacinto017_test.prototxt")
    assert detect_flavor(parse_file(DATA / "jacinto017_test.prototxt")) == "jacinto-0.17"
    _assert_fields(cfg, dict(
        JACINTO_COMMON,
        precision="dfp", rounding="nearest", bitwidth_weights=6, bitwidth_activations=12,
        bitwidth_bias=24, quantize_weights=True, quantize_activations=False,
        power2_range=True, apply_offset_weights=False, apply_offset_activations=False,
        quantization_start=5, ema_update_factor=0.05, range_expansion=1.5,
        ignored_layers=("conv1", "fc8"),
    ))
    assert {k: dict(v) for k, v in cfg.overrides.items()} == {"conv2": {"power2_range": False}}
    assert cfg.for_layer("fc8").precision == "float"


def test_jacinto017_defaults():
    cfg = config_from_caffe(DATA / "jacinto017_defaults.prototxt")
    _assert_fields(cfg, dict(
        JACINTO_COMMON,
        precision="dfp", rounding="nearest", bitwidth_weights=12, bitwidth_activations=8,
        bitwidth_bias=16, power2_range=False, apply_offset_weights=True,
        apply_offset_activations=False, quantization_start=1, ema_update_factor=0.01,
        range_expansion=1.25, ignored_layers=(),
    ))


# ------------------------------------------------------------------------ caffe-jacinto 0.15
def test_jacinto015_layer_params_and_solver():
    net, solver = DATA / "jacinto015_test.prototxt", DATA / "jacinto015_solver.prototxt"
    assert detect_flavor(parse_file(net)) == "jacinto-0.15"
    cfg = QuantizationConfig.from_caffe(net, solver=solver)
    _assert_fields(cfg, dict(
        JACINTO_COMMON,
        precision="dfp", rounding="stochastic", bitwidth_weights=12, bitwidth_activations=10,
        bitwidth_bias=32, power2_range=True, apply_offset_weights=False,
        apply_offset_activations=False, quantization_start=1500, ema_update_factor=0.01,
        range_expansion=1.0,
    ))
    # insert_quantization_param: true -> fractional lengths are recomputed from the ranges;
    # only the per-layer precision / rounding / minifloat format survive.
    assert {k: dict(v) for k, v in cfg.overrides.items()} == {
        "conv1": {"precision": "dfp", "rounding": "nearest"},
        "ip1": {"precision": "minifloat", "rounding": "stochastic", "mant_bits": 4,
                "exp_bits": 3},
    }


def test_jacinto015_without_solver_uses_layer_params_as_given():
    cfg = config_from_caffe(DATA / "jacinto015_test.prototxt")
    # no solver: nothing inserted, layers without a quantization_param stay float
    _assert_fields(cfg, dict(precision="float", quantization_start=0, power2_range=True))
    assert {k: dict(v) for k, v in cfg.overrides.items()} == {
        "conv1": {
            "precision": "dfp", "rounding": "nearest",
            "quantize_weights": True, "bitwidth_weights": 6, "frac_bits_weights": 7,
            "quantize_activations": True, "bitwidth_activations": 8, "frac_bits_activations": 3,
            "unsigned_activations": True,
        },
        # proto defaults: bw 8, fl 16, quantize_layer_out false, unsigned_layer_out false
        "ip1": {
            "precision": "minifloat", "rounding": "stochastic", "mant_bits": 4, "exp_bits": 3,
            "quantize_weights": True, "bitwidth_weights": 8, "frac_bits_weights": 16,
            "quantize_activations": False, "bitwidth_activations": 8,
            "frac_bits_activations": 16, "unsigned_activations": False,
        },
    }
    conv1 = cfg.for_layer("conv1")
    assert (conv1.precision, conv1.frac_bits_weights) == ("dfp", 7)


def test_jacinto015_solver_default_start_iter(tmp_path):
    solver = _write(tmp_path, "insert_quantization_param: true\n", "solver.prototxt")
    cfg = config_from_caffe(DATA / "jacinto015_test.prototxt", solver)
    assert (cfg.quantization_start, cfg.precision, cfg.bitwidth_weights) == (2000, "dfp", 8)


# ------------------------------------------------------------------------ Ristretto
def test_ristretto_quantized_lenet():
    path = DATA / "ristretto_lenet_quantized.prototxt"
    assert detect_flavor(parse_file(path)) == "ristretto"
    cfg = QuantizationConfig.from_caffe(path)
    _assert_fields(cfg, dict(
        precision="float", rounding="nearest", train_rounding=None, unsigned_activations=False,
        per_channel_weights=False, range_estimator="max_abs", power2_range=True,
    ))
    assert {k: dict(v) for k, v in cfg.overrides.items()} == {
        "conv1": {"precision": "dfp", "rounding": "nearest", "bitwidth_weights": 2,
                  "frac_bits_weights": 3, "bitwidth_bias": 2, "bitwidth_activations": 8,
                  "frac_bits_activations": 4},
        "ip1": {"precision": "dfp", "rounding": "nearest", "bitwidth_weights": 4,
                "frac_bits_weights": 7, "bitwidth_bias": 4, "bitwidth_activations": 8,
                "frac_bits_activations": 3},
        # absent fields: Ristretto's proto defaults bw 32 / fl 16; negative fl is legal
        "ip2": {"precision": "dfp", "rounding": "nearest", "bitwidth_weights": 4,
                "frac_bits_weights": -1, "bitwidth_bias": 4, "bitwidth_activations": 32,
                "frac_bits_activations": 16},
    }
    assert cfg.for_layer("pool1").precision == "float"


def test_ristretto_minifloat_pow2_and_lrn():
    cfg = config_from_caffe(DATA / "ristretto_mixed.prototxt")
    assert {k: dict(v) for k, v in cfg.overrides.items()} == {
        "conv1": {"precision": "minifloat", "rounding": "stochastic", "mant_bits": 10,
                  "exp_bits": 5},
        "norm1": {"precision": "minifloat", "rounding": "nearest", "mant_bits": 3, "exp_bits": 4},
        "conv2": {"precision": "pow2_weights", "rounding": "nearest", "pow2_exp_min": -6,
                  "pow2_exp_max": 0, "bitwidth_activations": 8, "frac_bits_activations": 2},
        "fc": {"precision": "minifloat", "rounding": "nearest", "mant_bits": 23, "exp_bits": 8},
    }


def test_ristretto_lrn_must_be_minifloat(tmp_path):
    path = _write(tmp_path, 'layer { name: "n" type: "LRNRistretto" }\n')
    with pytest.raises(QuantizationConfigError, match="LRNRistretto supports MINIFLOAT only") as e:
        config_from_caffe(path)
    assert e.value.layer == "n" and e.value.file == str(path)


# ------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    "text, line, reason",
    [
        ("quantize: true\nnet_quantization_param {\n bitwidth_weights: 8\n", 3, "missing '}'"),
        ("quantize: true\nnet_quantization_param { bitwidth_weights 8 }", 2, "expected ':'"),
        ('layer {\n name: "a\n}', 2, "unterminated string"),
        ("quantize: true\n\n\n@", 4, "unexpected character"),
    ],
)
def test_malformed_prototxt_raises_caffe_format_error_with_line(tmp_path, text, line, reason):
    path = _write(tmp_path, text)
    with pytest.raises(CaffeFormatError) as exc:
        config_from_caffe(path)
    msg = str(exc.value)
    assert msg.startswith(f"{path}: line {line}") and reason in msg and "\n" not in msg


@pytest.mark.parametrize(
    "body, field, line",
    [
        ("bitwidth_weights: 40", "bitwidth_weights", 2),
        ("bitwidth_activations: 1", "bitwidth_activations", 2),
        ("precision: QuantizationParameter_Precision_HALF", "precision", 2),
        ("rounding_scheme: 7", "rounding_scheme", 2),
        ("power2_range: maybe", "power2_range", 2),
        ("bitwidth_weights: 8.5", "bitwidth_weights", 2),
    ],
)
def test_invalid_values_raise_quantization_config_error_naming_field(tmp_path, body, field, line):
    path = _write(tmp_path, f"quantize: true\nnet_quantization_param {{ {body} }}\n")
    with pytest.raises(QuantizationConfigError) as exc:
        config_from_caffe(path)
    msg = str(exc.value)
    assert msg.startswith(f"{path}: ") and f"net_quantization_param.{field}" in msg
    assert f"line {line}" in msg


def test_invalid_layer_value_names_layer(tmp_path):
    path = _write(tmp_path, 'quantize: true\nlayer { name: "c1" type: "Convolution"\n'
                  "quantization_param { precision: MINIFLOAT mant_bits: 30 exp_bits: 8 } }\n")
    with pytest.raises(QuantizationConfigError) as exc:
        config_from_caffe(path)
    assert exc.value.layer == "c1" and "mant_bits" in str(exc.value)


def test_missing_file_and_unknown_flavor(tmp_path):
    with pytest.raises(CaffeFormatError, match="prototxt not found"):
        config_from_caffe(tmp_path / "absent.prototxt")
    with pytest.raises(QuantizationConfigError, match="flavor"):
        config_from_caffe(DATA / "jacinto016_defaults.prototxt", flavor="caffe-2")


def test_forced_flavor_reads_017_defaults_from_a_bare_file():
    cfg = config_from_caffe(DATA / "jacinto016_defaults.prototxt", flavor="jacinto-0.17")
    assert (cfg.bitwidth_bias, cfg.ema_update_factor, cfg.range_expansion) == (16, 0.01, 1.25)


def test_solver_quantization_start_overrides_net(tmp_path):
    solver = _write(tmp_path, "base_lr: 0.1\nquantization_start: 100\n", "solver.prototxt")
    cfg = config_from_caffe(DATA / "jacinto017_test.prototxt", solver=solver)
    assert cfg.quantization_start == 100


# ------------------------------------------------------------------------ the text reader
def test_text_reader_syntax():
    msg = parse(
        "a: 1; b: -2.5e-1, c: 0x1F d: 'it\\'s' \"\\x41\\101\\n\" e: [1, 2, 3] f < g: inf >"
        " h: { i: -inf } j: ENUM_NAME # comment\n k: true"
    )
    assert msg.get("a") == 1 and msg.get("b") == -0.25 and msg.get("c") == 31
    assert msg.get("d") == "it'sAA\n" and msg.getall("e") == [1, 2, 3]
    assert msg.get("f").get("g") == float("inf") and msg.get("h").get("i") == float("-inf")
    assert isinstance(msg.get("j"), Identifier) and msg.get("j") == "ENUM_NAME"
    assert msg.get("k") == "true" and msg.line_of("k") == 2


def test_text_reader_binary_file(tmp_path):
    path = tmp_path / "model.caffemodel"
    path.write_bytes(b"\n\x05conv1\xff\xfe\x00")
    with pytest.raises(CaffeFormatError, match="line 2: not UTF-8"):
        parse_file(path)


# ------------------------------------------------------------------------ end to end
def _round_away(y):
    return np.sign(y) * np.floor(np.abs(y) + 0.5)


def _ristretto_dfp(x, bw, fl):
    """Ristretto Trim2FixedPoint (NEAREST), quant-schemes.md §2.2."""
    scale = 2.0 ** fl
    return np.clip(_round_away(np.asarray(x, np.float64) * scale), -2 ** (bw - 1),
                   2 ** (bw - 1) - 1) / scale


def _ristretto_net(use_bias):
    import kerasq
    from kerasq._compat import keras

    rng = np.random.default_rng(0)
    inp = keras.Input((20,))
    h = keras.layers.Dense(16, name="ip1", use_bias=use_bias)(inp)
    h = keras.layers.ReLU(name="relu1")(h)
    out = keras.layers.Dense(10, name="ip2", use_bias=use_bias)(h)
    model = keras.Model(inp, out)
    w1, b1 = rng.normal(0, 0.3, (20, 16)), rng.normal(0, 0.5, 16)
    w2, b2 = rng.normal(0, 3.0, (16, 10)), rng.normal(0, 4.0, 10)
    model.get_layer("ip1").set_weights([w1, b1][: 1 + use_bias])
    model.get_layer("ip2").set_weights([w2, b2][: 1 + use_bias])
    x = rng.normal(size=(64, 20)).astype("float32")
    cfg = QuantizationConfig.from_caffe(DATA / "ristretto_lenet_quantized.prototxt")
    # the file is LeNet; this net has its ip1/relu1/ip2 part only (conv1, conv2 settings
    # would be refused by quantize_model as naming no layer of the model)
    names = {layer.name for layer in model.layers}
    cfg = QuantizationConfig.from_dict(
        {**cfg.to_dict(), "overrides": {k: dict(v) for k, v in cfg.overrides.items()
                                        if k in names}})
    qmodel = kerasq.quantize_model(model, cfg)
    kerasq.calibrate(qmodel, x)
    weights = [layer.get_weights() for layer in (model.get_layer("ip1"), model.get_layer("ip2"))]
    return qmodel, x, weights


def _ristretto_forward(x, weights, use_bias):
    """The file's FcRistretto layers: ip1 bw_params 4 fl_params 7, output bw 8 fl 3;
    ReLU in float; ip2 bw_params 4 fl_params -1, output Ristretto defaults bw 32 fl 16.
    Bias: the weights' bw_params and fl_params (§2.5)."""
    (w1, *b1), (w2, *b2) = weights
    h = x @ _ristretto_dfp(w1, 4, 7).astype(np.float32)
    if use_bias:
        h = h + _ristretto_dfp(b1[0], 4, 7).astype(np.float32)
    h = np.maximum(_ristretto_dfp(h, 8, 3), 0.0).astype(np.float32)
    o = h @ _ristretto_dfp(w2, 4, -1).astype(np.float32)
    if use_bias:
        o = o + _ristretto_dfp(b2[0], 4, -1).astype(np.float32)
    return _ristretto_dfp(o, 32, 16)


def test_ristretto_prototxt_reproduces_ristretto_forward_pass():
    qmodel, x, weights = _ristretto_net(use_bias=False)
    expected = _ristretto_forward(x, weights, use_bias=False)
    np.testing.assert_array_equal(qmodel.predict(x, verbose=0), expected.astype(np.float32))


def test_ristretto_bias_uses_the_weights_fractional_length():
    qmodel, x, weights = _ristretto_net(use_bias=True)
    expected = _ristretto_forward(x, weights, use_bias=True)
    np.testing.assert_array_equal(qmodel.predict(x, verbose=0), expected.astype(np.float32))


def test_text_reader_agrees_with_protobuf_on_every_shared_prototxt():
    """The schema-less reader against protobuf's own text_format parser (BVLC schema) on the
    real prototxts in ../shared: same layers, types, bottoms and tops, in the same order."""
    from conftest import shared_path
    from google.protobuf import text_format

    from kerasq.converters.caffe.proto import caffe_pb2
    from kerasq.converters.caffe.quantization import has_quantization_settings

    files = sorted(shared_path().rglob("*.prototxt"))
    assert len(files) > 20
    for path in files:
        mine = parse_file(path)
        ref = text_format.Parse(path.read_text(), caffe_pb2.NetParameter(),
                                allow_unknown_field=True)
        got = [(m.get("name"), m.get("type"), m.getall("bottom"), m.getall("top"))
               for m in mine.getall("layer")]
        want = [(lay.name, lay.type, list(lay.bottom), list(lay.top)) for lay in ref.layer]
        assert got == want, path
        if not has_quantization_settings(mine):  # plain Caffe: no quantize: true
            assert config_from_caffe(path).precision == "float"
        else:  # caffe-jacinto's own nets (`quantize: true`)
            assert config_from_caffe(path).precision == "dfp"


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list('ab_1:{}<>[];,#"\'\\\n .-eEx0')), max_size=60))
def test_text_reader_never_fails_with_anything_but_caffe_format_error(text):
    try:
        parse(text, "fuzz.prototxt")
    except CaffeFormatError as err:
        assert str(err).startswith("fuzz.prototxt: line ") and "\n" not in str(err)


def test_jacinto017_stored_qparams_per_blob(tmp_path):
    path = _write(tmp_path, """quantize: true
net_quantization_param { update_quantization_param: false power2_scale_weights: true
                         power2_scale_activations: true apply_offset_weights: false }
layer { name: "conv1" type: "Convolution"
  quantization_param {
    power2_scale_weights: true power2_scale_activations: true
    qparam_w { quantize: true bitwidth: 8 fracbits: 6 }
    qparam_w { quantize: true bitwidth: 16 fracbits: 12 }
    qparam_out { quantize: true bitwidth: 8 fracbits: 3 unsigned_data: false }
  }
}
""")
    cfg = config_from_caffe(path)
    assert detect_flavor(parse_file(path)) == "jacinto-0.17"
    assert dict(cfg.overrides["conv1"]) == {
        "power2_range": True, "quantize_weights": True, "bitwidth_weights": 8,
        "frac_bits_weights": 6, "bitwidth_bias": 16, "quantize_activations": True,
        "bitwidth_activations": 8, "frac_bits_activations": 3, "unsigned_activations": False,
    }


def test_overrides_also_reach_layers_renamed_by_the_converter(tmp_path):
    # keyed by the converter's own sanitizer (one implementation, no copy to keep in step)
    from kerasq.converters.caffe.graph import sanitize_name

    assert sanitize_name("conv1/dw") == "conv1_dw"
    path = _write(tmp_path, 'layer { name: "conv1/dw" type: "ConvolutionRistretto"\n'
                  "  quantization_param { bw_params: 6 fl_params: 5 } }\n")
    cfg = config_from_caffe(path)
    assert set(cfg.overrides) == {"conv1/dw", "conv1_dw"}
    assert cfg.for_layer("conv1_dw").frac_bits_weights == 5
