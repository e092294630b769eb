"""kerasq.integer.run: a calibrated DFP model executed in integers equals the fake-quant model.

The reference is the fake-quantized Keras model itself (kerasq.quantize_model +
kerasq.calibrate, evaluated with training=False), i.e. the float simulation of
kerasq.numerics; the integer run goes through the kerasq.ops integer kernels (both the
C++ and the fallback path) and must give the same values bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest

from kerasq._compat import keras
import kerasq
import kerasq.integer
from kerasq.errors import UnsupportedLayerError


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images[..., None] / 16.0).astype(np.float32)


def _sequential_cnn():
    keras.utils.set_random_seed(1)
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
        keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2),
        keras.layers.ReLU(),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(16, 3, strides=2, padding="same"),
        keras.layers.Flatten(),
        keras.layers.Dense(10),
    ])


def _residual_cnn():
    keras.utils.set_random_seed(2)
    inp = keras.Input((8, 8, 1))
    x = keras.layers.ZeroPadding2D(1)(inp)
    x = keras.layers.Conv2D(12, 3, activation="relu")(x)
    y = keras.layers.Conv2D(12, 3, padding="same")(x)
    y = keras.layers.BatchNormalization()(y)
    x = keras.layers.Add()([x, y])
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(6, 1)(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inp, keras.layers.Dense(10)(x))


@pytest.fixture(params=["custom", "fallback"])
def ops_mode(request, monkeypatch):
    import kerasq.ops

    if request.param == "fallback":
        monkeypatch.setenv("KERASQ_PY_OPS", "1")
    elif not kerasq.ops.custom_kernels_loaded():
        pytest.skip(f"C++ ops not available: {kerasq.ops.fallback_reason()}")
    return request.param


@pytest.mark.parametrize("build,config", [
    (_sequential_cnn, {}),
    (_sequential_cnn, {"bitwidth_weights": 4, "bitwidth_bias": 16}),
    (_sequential_cnn, {"rounding": "nearest_even", "bitwidth_activations": 6}),
    (_residual_cnn, {}),
    (_residual_cnn, {"bitwidth_activations": 12, "bitwidth_weights": 10, "rounding": "half_up"}),
])
def test_integer_run_equals_fake_quant_model(ops_mode, digits, build, config):
    qmodel = kerasq.quantize_model(build(), config)
    kerasq.calibrate(qmodel, digits[:256])
    x = digits[256:556]
    expected = qmodel(x, training=False).numpy()
    actual = kerasq.integer.run(qmodel, x)
    assert actual.dtype == np.float32
    np.testing.assert_array_equal(actual, expected)
    assert len(np.unique(actual)) > 20  # a real output, not saturated or constant


def test_integer_outputs_are_integers_on_the_grid(digits):
    qmodel = kerasq.quantize_model(_sequential_cnn())
    kerasq.calibrate(qmodel, digits[:128])
    out = kerasq.integer.run(qmodel, digits[:64], return_integers=True)
    assert out.values.dtype == np.int64
    assert -128 <= out.values.min() and out.values.max() <= 127
    np.testing.assert_array_equal(out.to_float(), kerasq.integer.run(qmodel, digits[:64]))


def test_minifloat_model_is_rejected_with_the_layer_name(digits):
    qmodel = kerasq.quantize_model(_sequential_cnn(), {"precision": "minifloat"})
    kerasq.calibrate(qmodel, digits[:32])
    with pytest.raises(UnsupportedLayerError, match="conv2d|input"):
        kerasq.integer.run(qmodel, digits[:8])


def test_integer_run_with_biases_on_the_accumulator_grid(digits):
    """TFLite-style int32 biases (kerasq.schemes.shared_grids.link_accumulator_biases)."""
    from kerasq.schemes.shared_grids import link_accumulator_biases

    qmodel = kerasq.quantize_model(_residual_cnn())
    kerasq.calibrate(qmodel, digits[:256])
    if not link_accumulator_biases(qmodel):
        pytest.skip("no accumulator-grid bias quantizer in this scheme configuration")
    x = digits[256:456]
    np.testing.assert_array_equal(kerasq.integer.run(qmodel, x), qmodel(x, training=False).numpy())


# ------------------------------------------------------------------ layers of converted Caffe nets


def _pooled_cnn():
    keras.utils.set_random_seed(3)
    inp = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(10, 3, padding="same", activation="relu")(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(10)(x)
    return keras.Model(inp, keras.layers.Softmax()(x))


@pytest.mark.parametrize("rounding", ["nearest", "nearest_even", "half_up"])
def test_global_average_pooling_and_softmax(ops_mode, digits, rounding):
    qmodel = kerasq.quantize_model(_pooled_cnn(), {"rounding": rounding})
    kerasq.calibrate(qmodel, digits[:256])
    x = digits[256:556]
    np.testing.assert_array_equal(kerasq.integer.run(qmodel, x), qmodel(x, training=False).numpy())


def test_mean_requantize_matches_a_fraction_reference():
    """One rounding of sum·2^-frac / count onto the output grid, against Python fractions."""
    from fractions import Fraction

    from kerasq.integer import _mean_requantize
    from kerasq.numerics.grid import GridSpec

    rng = np.random.default_rng(0)
    sums = rng.integers(-5000, 5000, 400).astype(np.int64)
    sums[:6] = [49, -49, 147, -147, 0, 98]  # 49/98 = 0.5: ties at count 49, frac = out_frac
    for rounding in ("nearest", "nearest_even", "half_up"):
        for frac, out_frac in ((3, 3), (5, 2), (1, 4)):
            spec = GridSpec(kind="dfp", bitwidth=8, frac_bits=out_frac, signed=True,
                            rounding=rounding)
            got = _mean_requantize(sums, 98, frac, spec)
            assert got.frac == out_frac
            for s, g in zip(sums.tolist(), got.values.tolist()):
                q = Fraction(s, 98) * Fraction(2) ** (out_frac - frac)
                low = q.numerator // q.denominator
                rest = q - low
                if rest > Fraction(1, 2):
                    want = low + 1
                elif rest < Fraction(1, 2):
                    want = low
                elif rounding == "half_up":
                    want = low + 1
                elif rounding == "nearest_even":
                    want = low + (low % 2)
                else:
                    want = low + 1 if q > 0 else low
                assert g == min(max(want, -128), 127), (s, frac, out_frac, rounding)


def test_constant_bias_layer(ops_mode, digits):
    from kerasq.converters.caffe.keras_layers.affine import ConstantBias

    keras.utils.set_random_seed(4)
    inp = keras.Input((8, 8, 1))
    biased = ConstantBias(bias_shape=(1, 1, 1, 1), name="data_bias")
    x = biased(inp)
    x = keras.layers.Conv2D(6, 3, activation="relu")(x)
    model = keras.Model(inp, keras.layers.Dense(4)(keras.layers.Flatten()(x)))
    biased.set_weights([np.full((1, 1, 1, 1), -0.5, np.float32)])
    qmodel = kerasq.quantize_model(model)
    kerasq.calibrate(qmodel, digits[:256])
    x = digits[256:456]
    np.testing.assert_array_equal(kerasq.integer.run(qmodel, x), qmodel(x, training=False).numpy())


# ------------------------------------------------------------------ real converted nets


def _mobilenet(tmp_path_factory):
    import subprocess
    import sys

    from conftest import shared_path
    from kerasq.converters import caffe

    net = shared_path("caffe-models", "jacinto", "imagenet-mobilenet0.5")
    weights = tmp_path_factory.mktemp("mobilenet") / "mobilenet0.5.caffemodel"
    subprocess.run([sys.executable, str(net.parent / "make_weights.py"),
                    str(net / "deploy.prototxt"), str(weights), "5", "new"],
                   check=True, capture_output=True)
    return caffe.load(str(net / "deploy.prototxt"), str(weights),
                      input_shape={"data": [1, 3, 64, 64]}), (64, 64, 3)


def _jacintonet11(tmp_path_factory):
    """caffe-jacinto's JacintoNet11 (CIFAR-10): Bias, grouped (4) convolutions, BatchNorm."""
    import subprocess
    import sys

    from conftest import shared_path
    from kerasq.converters import caffe

    net = shared_path("caffe-models", "jacinto", "cifar10-jnet11v2")
    weights = tmp_path_factory.mktemp("jnet11") / "jacintonet11.caffemodel"
    subprocess.run([sys.executable, str(net.parent / "make_weights.py"),
                    str(net / "deploy.prototxt"), str(weights), "1", "new"],
                   check=True, capture_output=True)
    return caffe.load(str(net / "deploy.prototxt"), str(weights),
                      input_shape={"data": [1, 3, 32, 32]}), (32, 32, 3)


def _resnet20(tmp_path_factory):
    from conftest import shared_path
    from kerasq.converters import caffe

    net = shared_path("caffe-models", "resnet20-cifar10")
    return caffe.load(str(net / "deploy_generated.prototxt"), str(net / "ResNet_20.caffemodel"),
                      input_shape={"Data1": [1, 3, 32, 32]}), (32, 32, 3)


@pytest.fixture(scope="module", params=["mobilenet0.5", "resnet20", "jacintonet11"])
def real_net(request, tmp_path_factory):
    """A converted Caffe net, quantized with kerasq's default scheme and calibrated on
    0..255 pixels; calibration on 4 copies of one image (the whole-net benchmark's setup)
    for ResNet-20 gives first-layer weight grids whose aligned accumulator exceeds int32."""
    build = {"mobilenet0.5": _mobilenet, "resnet20": _resnet20,
             "jacintonet11": _jacintonet11}[request.param]
    model, shape = build(tmp_path_factory)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (3,) + shape).astype(np.float32)
    qmodel = kerasq.quantize_model(model)
    kerasq.calibrate(qmodel, np.concatenate([x[:1]] * 4), batch_size=4)
    return request.param, qmodel, x


@pytest.mark.slow
def test_integer_run_on_converted_caffe_nets(ops_mode, real_net):
    name, qmodel, x = real_net
    expected = qmodel(x, training=False).numpy()
    actual = kerasq.integer.run(qmodel, x)
    np.testing.assert_array_equal(actual, expected, err_msg=name)
    assert len(np.unique(actual)) > 5, name  # real outputs, not one saturated value


def test_prepared_program_equals_the_model_on_every_batch(digits):
    qmodel = kerasq.quantize_model(_residual_cnn())
    kerasq.calibrate(qmodel, digits[:256])
    program = kerasq.integer.prepare(qmodel)
    for batch in (digits[256:300], digits[300:301], digits[301:500]):
        np.testing.assert_array_equal(program(batch), qmodel(batch, training=False).numpy())
    ints = program(digits[:16], return_integers=True)
    np.testing.assert_array_equal(ints.to_float(), kerasq.integer.run(qmodel, digits[:16]))


def test_convolution_fused_with_the_relu_quantizer_that_follows(ops_mode, digits):
    """Conv2D (no output quantizer) -> quantized ReLU runs as one kernel call, same integers."""
    from kerasq.integer import _graph, _relu_fusions

    keras.utils.set_random_seed(5)
    inp = keras.Input((8, 8, 1))
    x = keras.layers.ReLU()(keras.layers.Conv2D(8, 3, padding="same")(inp))
    x = keras.layers.ReLU()(keras.layers.Conv2D(8, 3, strides=2)(x))
    model = keras.Model(inp, keras.layers.Dense(10)(keras.layers.Flatten()(x)))
    for rounding in ("nearest", "nearest_even", "half_up"):
        qmodel = kerasq.quantize_model(model, {"rounding": rounding})
        kerasq.calibrate(qmodel, digits[:128])
        inbound, _, outputs = _graph(qmodel)
        assert len(_relu_fusions(qmodel, inbound, outputs)) == 2
        batch = digits[128:328]
        np.testing.assert_array_equal(kerasq.integer.run(qmodel, batch),
                                      qmodel(batch, training=False).numpy())


def _grouped_cnn():
    """Grouped convolutions as caffe-jacinto's JacintoNet uses them (Caffe ``group``)."""
    keras.utils.set_random_seed(6)
    inp = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    x = keras.layers.Conv2D(12, 3, padding="same", groups=4, activation="relu")(x)
    x = keras.layers.ReLU()(keras.layers.Conv2D(8, 3, strides=2, groups=2)(x))
    x = keras.layers.Conv2D(6, 1, groups=2)(x)
    return keras.Model(inp, keras.layers.Dense(10)(keras.layers.Flatten()(x)))


@pytest.mark.parametrize("config", [{}, {"bitwidth_weights": 6, "rounding": "half_up", "per_channel_weights": False}])
def test_grouped_convolutions_run_per_group_exactly(ops_mode, digits, config):
    qmodel = kerasq.quantize_model(_grouped_cnn(), config)
    kerasq.calibrate(qmodel, digits[:256])
    x = digits[256:456]
    expected = qmodel(x, training=False).numpy()
    np.testing.assert_array_equal(kerasq.integer.run(qmodel, x), expected)
    assert len(np.unique(expected)) > 20


# ------------------------------------------------------------------ the compiled program


@pytest.mark.parametrize("build", [_sequential_cnn, _residual_cnn, _pooled_cnn, _grouped_cnn])
def test_compiled_program_equals_the_eager_path_and_the_model(ops_mode, digits, build):
    """One traced graph for every batch size; integers, fractional lengths and floats equal
    the layer-by-layer numpy path and the fake-quant Keras model."""
    qmodel = kerasq.quantize_model(build())
    kerasq.calibrate(qmodel, digits[:256])
    program = kerasq.integer.prepare(qmodel)
    for batch in (digits[256:257], digits[257:400], digits[400:403]):
        compiled = program(batch, return_integers=True)
        eager = program.run_eager(batch, return_integers=True)
        if isinstance(eager, kerasq.integer.IntTensor):
            assert compiled.frac == eager.frac
            assert compiled.values.dtype == np.int64
            np.testing.assert_array_equal(compiled.values, eager.values)
        np.testing.assert_array_equal(program(batch), program.run_eager(batch))
        np.testing.assert_array_equal(program(batch), qmodel(batch, training=False).numpy())
    assert len(program._compiled) == 1  # traced once, for any batch size


def test_compiled_program_against_the_int8_tflite_file(digits):
    """The TFLite interpreter running the model's int8 file (an independent integer
    runtime; the default scheme is made so that its default XNNPACK kernels compute what
    the model computes) gives the compiled program's values bit for bit."""
    from ai_edge_litert.interpreter import Interpreter

    from kerasq.export import export_tflite
    from kerasq.export.tensor_io import from_tensor, to_tensor

    qmodel = kerasq.quantize_model(_residual_cnn())
    kerasq.calibrate(qmodel, digits[:256])
    x = digits[256:656]
    ours = kerasq.integer.prepare(qmodel)(x, return_integers=True)
    np.testing.assert_array_equal(ours.to_float(), qmodel(x, training=False).numpy())
    result = export_tflite(qmodel, target="int8", representative_data=digits[:256])
    interp = Interpreter(model_content=result.content)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    got = []
    for sample in x:
        interp.set_tensor(inp["index"], to_tensor(sample[None], inp))
        interp.invoke()
        got.append(from_tensor(interp.get_tensor(out["index"]), out))
    got = np.concatenate(got)
    np.testing.assert_array_equal(got, ours.to_float())
    assert len(np.unique(got)) > 20  # real logits, not one saturated value


def test_run_reuses_its_program_until_a_variable_changes(digits):
    qmodel = kerasq.quantize_model(_residual_cnn())
    kerasq.calibrate(qmodel, digits[:256])
    x = digits[256:300]
    first = kerasq.integer.run(qmodel, x)
    program = kerasq.integer._cached_program(qmodel)
    assert kerasq.integer._cached_program(qmodel) is program
    kernel = next(v for v in qmodel.trainable_variables if "kernel" in v.name)
    kernel.assign(kernel * -1.0)
    assert kerasq.integer._cached_program(qmodel) is not program
    changed = kerasq.integer.run(qmodel, x)
    np.testing.assert_array_equal(changed, qmodel(x, training=False).numpy())
    assert not np.array_equal(first, changed)
    kerasq.calibrate(qmodel, digits[:64] * 0.25)  # new ranges: the grids change
    np.testing.assert_array_equal(kerasq.integer.run(qmodel, x), qmodel(x, training=False).numpy())


def test_compiled_run_time_check_raises_the_eager_paths_error():
    """An operand whose static bounds exceed int16 reaches a kernel through a run-time
    range check in the graph: in range it passes unchanged (the int16 extremes included),
    out of range the program raises UnsupportedLayerError naming the layer, as the eager
    path does for the same data."""
    from kerasq._compat import tf
    from kerasq.integer import _GInt, _g_kernel_operand, _runtime_error

    operand = tf.function(lambda t: _g_kernel_operand(_GInt(t, 0, -70000, 70000), "conv_x"),
                          input_signature=[tf.TensorSpec([None], tf.int32)])
    np.testing.assert_array_equal(operand(tf.constant([1, -32768, 32767])).numpy(),
                                  [1, -32768, 32767])
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        operand(tf.constant([1, 40000]))
    err = _runtime_error(info.value)
    assert isinstance(err, UnsupportedLayerError)
    assert "conv_x" in str(err) and "operand does not fit int16" in str(err)
    assert "Condition" not in str(err)
