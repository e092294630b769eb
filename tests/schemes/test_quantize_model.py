"""quantize_model end to end: save/load round trips, fit, BN folding, unknown layers,
sparsity, bad input."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import kerasq
from kerasq._compat import keras
from kerasq.errors import ModelFormatError, UnsupportedLayerError
from kerasq.schemes.config import QuantizationConfig


def _cnn(seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(6, 3, padding="same", name="conv1")(inp)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    y = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = keras.layers.Add(name="add")([x, y])
    x = keras.layers.AveragePooling2D(name="pool")(x)
    x = keras.layers.Flatten(name="flat")(x)
    x = keras.layers.Dense(10, name="fc")(x)
    out = keras.layers.Softmax(name="prob")(x)
    model = keras.Model(inp, out)
    bn = model.get_layer("bn1")  # non-trivial statistics so folding is really exercised
    rng = np.random.RandomState(seed)
    bn.set_weights([rng.uniform(0.5, 2, 6), rng.normal(0, 0.3, 6), rng.normal(0, 0.2, 6),
                    rng.uniform(0.2, 3, 6)])
    return model


def _kernel(qmodel, name):
    """The float (shadow) kernel variable of a wrapped layer."""
    for weight, _, _ in qmodel.get_layer("quant_" + name)._weight_vars:
        if "kernel" in weight.name:
            return weight.numpy()
    raise AssertionError(name)


def _data(n=64, seed=1):
    return np.random.RandomState(seed).rand(n, 8, 8, 1).astype(np.float32)


def test_batchnorm_folding_matches_the_float_model():
    from kerasq.schemes.transforms import fold_batchnorm

    model, x = _cnn(), _data()
    folded, names = fold_batchnorm(model)
    assert names == {"conv1": "bn1"}
    assert "bn1" not in [l.name for l in folded.layers]
    np.testing.assert_allclose(folded(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-6)
    q = kerasq.quantize_model(model, QuantizationConfig(precision="float"))
    np.testing.assert_allclose(q(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-6)


def test_ptq_8bit_is_close_and_configs_are_the_families():
    from kerasq.schemes import quantize_configs as C

    model, x = _cnn(), _data()
    q = kerasq.calibrate(kerasq.quantize_model(model), x)
    kinds = {l.layer.name: type(l.quantize_config).__name__
             for l in q.layers if hasattr(l, "quantize_config")}
    assert kinds["conv1"] == C.FoldedConvQuantizeConfig.__name__
    assert kinds["dw"] == C.DepthwiseConvQuantizeConfig.__name__
    assert kinds["fc"] == C.DenseQuantizeConfig.__name__
    assert kinds["add"] == kinds["relu1"] == kinds["prob"] == C.OutputQuantizeConfig.__name__
    assert kinds["flat"] == C.NoOpQuantizeConfig.__name__
    conv_cfg = q.get_layer("quant_conv1").quantize_config
    assert conv_cfg.get_output_quantizers(None) == []  # ReLU quantizes instead
    diff = np.abs(q.predict(x, verbose=0) - model.predict(x, verbose=0)).max()
    assert 0 < diff < 0.05


@pytest.mark.parametrize("fmt", ["h5", "savedmodel"])
def test_save_load_round_trip_identical_outputs(tmp_path, fmt):
    model, x = _cnn(), _data()
    cfg = QuantizationConfig(bitwidth_weights=6, overrides={
        "fc": {"precision": "minifloat", "exp_bits": 4, "mant_bits": 3},
        "dw": {"precision": "pow2_weights"},
        "conv1": {"bitwidth_bias": 16, "range_estimator": "ema"},
        "add": {"power2_range": False, "apply_offset_activations": True}})
    q = kerasq.calibrate(kerasq.quantize_model(model, cfg), x)
    path = str(tmp_path / ("q.h5" if fmt == "h5" else "q_saved"))
    q.save(path)
    again = kerasq.load_model(path)
    np.testing.assert_array_equal(again.predict(x, verbose=0), q.predict(x, verbose=0))
    names = sorted(v.name for v in again.variables if "frac_bits" in v.name)
    assert names == sorted(v.name for v in q.variables if "frac_bits" in v.name)
    if fmt == "h5":
        ours = [l.quantize_config for l in again.layers if hasattr(l, "quantize_config")]
        theirs = [l.quantize_config for l in q.layers if hasattr(l, "quantize_config")]
        assert ours == theirs


def test_load_model_errors_name_the_file(tmp_path):
    with pytest.raises(ModelFormatError, match="no such file"):
        kerasq.load_model(tmp_path / "missing.h5")
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(ModelFormatError) as info:
        kerasq.load_model(bad)
    assert str(bad) in str(info.value)


def test_fit_trains_from_calibrated_ranges():
    model, x = _cnn(), _data(128)
    y = (x.reshape(len(x), -1).mean(1) * 20).astype(np.int64) % 10
    q = kerasq.calibrate(kerasq.quantize_model(model, QuantizationConfig(bitwidth_weights=4)), x)
    kernel_before = _kernel(q, "fc").copy()
    q.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    history = q.fit(x, y, batch_size=32, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert not np.array_equal(_kernel(q, "fc"), kernel_before)
    count = next(v for v in q.variables if v.name.endswith("image_quantize_count:0"))
    assert int(count.numpy()) == 4 + 8  # 4 calibration batches + 8 training steps


class Scale2(keras.layers.Layer):
    """A layer kerasq has no rule for."""

    def call(self, inputs):
        return inputs * 2.0


def test_unknown_layers_policy():
    inp = keras.Input((4,))
    x = Scale2(name="scale2")(keras.layers.Dense(3, name="fc")(inp))
    model = keras.Model(inp, x)
    with keras.utils.custom_object_scope({"Scale2": Scale2}):
        q = kerasq.quantize_model(model)  # default: kept in float, with a warning
        assert type(q.get_layer("quant_scale2").quantize_config).__name__ == "NoOpQuantizeConfig"
        q2 = kerasq.quantize_model(model, QuantizationConfig(unknown_layers="quantize_outputs"))
        assert len(q2.get_layer("quant_scale2").quantize_config.get_output_quantizers(None)) == 1
        with pytest.raises(UnsupportedLayerError) as info:
            kerasq.quantize_model(model, QuantizationConfig(unknown_layers="error"))
    assert info.value.layer == "scale2"


def test_bad_models_raise_model_format_error():
    class Sub(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ModelFormatError, match="subclassed"):
        kerasq.quantize_model(Sub())
    with pytest.raises(ModelFormatError, match="tf_keras Model"):
        kerasq.quantize_model("model.h5")


def test_preserve_sparsity_keeps_zeros_through_qat():
    inp = keras.Input((16,))
    out = keras.layers.Dense(8, name="fc")(inp)
    model = keras.Model(inp, out)
    w, b = model.get_layer("fc").get_weights()
    w[::2] = 0.0
    model.get_layer("fc").set_weights([w, b])
    q = kerasq.quantize_model(model, QuantizationConfig(bitwidth_weights=4))  # auto: zeros found
    x = np.random.RandomState(0).normal(size=(64, 16)).astype(np.float32)
    q.compile("sgd", "mse")
    q.fit(x, np.random.RandomState(1).normal(size=(64, 8)), epochs=2, verbose=0)
    kernel = _kernel(q, "fc")
    assert np.all(kernel[::2] == 0) and np.all(kernel[1::2] != 0)


def test_mirrored_strategy_scope_fit_and_predict():
    """Two logical CPUs in a fresh process (devices must be configured before TF starts)."""
    code = textwrap.dedent("""
        import numpy as np
        from kerasq._compat import tf, keras
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import kerasq
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        x = np.random.RandomState(0).rand(64, 6).astype("float32")
        y = (x.sum(1) > 3).astype("int64")
        with strategy.scope():
            inp = keras.Input((6,))
            h = keras.layers.Dense(8, activation="relu")(inp)
            model = keras.Model(inp, keras.layers.Dense(2)(h))
            q = kerasq.quantize_model(model, kerasq.QuantizationConfig(bitwidth_weights=4))
            kerasq.calibrate(q, x)
            q.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        h = q.fit(x, y, batch_size=16, epochs=1, verbose=0)
        out = q.predict(x, verbose=0)
        assert np.all(np.isfinite(out)) and np.isfinite(h.history["loss"][-1])
        print("replicas", strategy.num_replicas_in_sync)
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "replicas 2" in proc.stdout


def test_converted_caffe_lenet_against_opencv():
    """A real Caffe LeNet (converted by kerasq) quantizes; 16-bit DFP matches OpenCV's
    independent Caffe forward, 8-bit keeps its decisions."""
    import cv2
    from sklearn.datasets import load_digits

    from conftest import shared_path
    from kerasq.converters import caffe

    proto = str(shared_path("caffe-models", "lenet-mnist", "lenet.prototxt"))
    weights = str(shared_path("caffe-models", "lenet-mnist", "lenet_iter_10000.caffemodel"))
    digits = load_digits().images[:64] / 16.0
    x = np.stack([cv2.resize(d, (20, 20), interpolation=cv2.INTER_LINEAR) for d in digits])
    x = np.pad(x, ((0, 0), (4, 4), (4, 4))).astype(np.float32)  # MNIST-like 28x28 framing
    net = cv2.dnn.readNetFromCaffe(proto, weights)
    net.setInput(x[:, None])
    reference = net.forward()
    model = caffe.load(proto, weights)
    q16 = kerasq.calibrate(kerasq.quantize_model(
        model, QuantizationConfig(bitwidth_weights=16, bitwidth_activations=16)), x[..., None])
    np.testing.assert_allclose(q16.predict(x[..., None], verbose=0), reference, atol=2e-3)
    q8 = kerasq.calibrate(kerasq.quantize_model(model), x[..., None])
    out8 = q8.predict(x[..., None], verbose=0)
    assert np.mean(out8.argmax(-1) == reference.argmax(-1)) >= 0.95
    assert np.mean(reference.argmax(-1) == load_digits().target[:64]) > 0.5  # sane input


def test_sequential_model_is_quantized_and_inputs_are_quantized():
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="relu"),
                              keras.layers.Dense(3)])
    x = np.random.RandomState(0).normal(size=(16, 5)).astype(np.float32)
    q = kerasq.calibrate(kerasq.quantize_model(model), x)
    assert any(type(l).__name__ == "QuantizeLayer" for l in q.layers)
    diff = np.abs(q.predict(x, verbose=0) - model.predict(x, verbose=0)).max()
    assert 0 < diff < 0.1


def test_quantize_inputs_false_keeps_the_network_input_float():
    # caffe-jacinto never quantizes the network input
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="relu"),
                              keras.layers.Dense(3)])
    x = np.random.RandomState(0).normal(size=(16, 5)).astype(np.float32) / 7.0
    q = kerasq.calibrate(kerasq.quantize_model(model, {"quantize_inputs": False}), x)
    assert not any(type(l).__name__ == "QuantizeLayer" for l in q.layers)
    # numpy reference: float input, DFP-8 kernels/outputs; the input x/7 is off the 2^-fl
    # grids, so an input quantizer would change the first layer's output
    dense = [l for l in q.layers if type(getattr(l, "layer", None)).__name__ == "Dense"][0]
    (kw, kq, kv), = [e for e in dense._weight_vars if "kernel" in e[0].name]
    (bw, bq, bv), = [e for e in dense._weight_vars if "bias" in e[0].name]
    bias = bq(bw, False, bv).numpy()  # 32-bit bias: float until an int8 export links it
    np.testing.assert_array_equal(bias, bw.numpy())
    pre = x.astype(np.float64) @ kq(kw, False, kv).numpy().astype(np.float64) + bias
    out_q, = dense._output_quantizers
    want = out_q(np.maximum(pre, 0).astype(np.float32), False, dense._output_quantizer_vars)
    got = keras.Model(q.inputs, dense.output)(x, training=False)
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=0)
