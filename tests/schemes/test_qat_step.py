"""A QAT step updates every quantizer's state exactly as the numpy reference says, however
the step is run: eagerly, in a ``tf.function`` with ``training=True``, or with a tensor
``training`` flag (tfmot's ``smart_cond``: the quantizers run inside ``tf.cond`` branches).

The quantizers write their state (range, fractional lengths, ``count``) with no control
edge to the quantized value, so these tests are what shows the writes still run, read the
pre-step values and land once per step. Reference: running min/max of the batches the input
quantizer saw, fl = B - s - ceil(log2 max|.|) (quant-schemes.md), per-channel weight ranges
of the kernel before each SGD update, all in numpy.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import kerasq
from kerasq._compat import keras, tf


def _model():
    keras.utils.set_random_seed(3)
    inp = keras.Input((6,), name="x")
    hidden = keras.layers.Dense(5, name="fc1")(inp)
    out = keras.layers.Dense(3, name="fc2")(keras.layers.ReLU(name="relu")(hidden))
    return keras.Model(inp, out)


def _vars(qmodel, layer_name):
    return {v.name.split("/")[-1].split(":")[0]: v.numpy()
            for v in qmodel.get_layer(layer_name).weights}


def _fl(max_abs, bits, signed):
    """fl = B - s - ceil(log2 max|.|); ceil(log2 0) := 0."""
    il = np.array([math.ceil(math.log2(a)) if a > 0 else 0 for a in np.ravel(max_abs)])
    return (bits - int(signed) - il).reshape(np.shape(max_abs)).astype(np.float32)


def _batches():
    rng = np.random.default_rng(11)
    # the second batch widens the range (fl changes), the third is inside it, the fourth
    # is non-negative (the input stays signed: its running min is negative)
    scales = [(0.5, 0.0), (3.0, 0.0), (1.0, 0.0), (1.0, 2.0)]
    return [(rng.normal(0, s, (4, 6)) + shift).astype(np.float32) for s, shift in scales]


@pytest.mark.parametrize("path", ["custom", "fallback"])
@pytest.mark.parametrize("mode", ["eager", "function", "function_tensor_flag"])
def test_qat_steps_update_the_state_like_the_numpy_reference(mode, path, monkeypatch):
    # The fallback's custom gradients inside the quantizer's nested tf.conds (tensor flag:
    # tfmot's smart_cond around the signedness cond) once failed to build in TF.
    import kerasq.ops

    if path == "fallback":
        monkeypatch.setenv("KERASQ_PY_OPS", "1")
    else:
        monkeypatch.delenv("KERASQ_PY_OPS", raising=False)
        if not kerasq.ops.custom_kernels_loaded():
            pytest.skip(f"C++ ops not available: {kerasq.ops.fallback_reason()}")
    qmodel = kerasq.quantize_model(_model())
    opt = keras.optimizers.SGD(0.05)
    target = tf.zeros((4, 3))

    def step(x, training):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(qmodel(x, training=training) - target))
        grads = tape.gradient(loss, qmodel.trainable_variables)
        opt.apply_gradients(zip(grads, qmodel.trainable_variables))
        return loss

    if mode == "eager":
        run = lambda x: step(x, True)  # noqa: E731
    elif mode == "function":
        compiled = tf.function(lambda x: step(x, True))
        run = compiled
    else:
        compiled = tf.function(step)
        run = lambda x: compiled(x, tf.constant(True))  # noqa: E731

    seen_min, seen_max = math.inf, -math.inf
    for n, batch in enumerate(_batches(), start=1):
        kernel = qmodel.get_layer("quant_fc1").weights[0].numpy()  # before this step's update
        run(tf.constant(batch))
        seen_min, seen_max = min(seen_min, batch.min()), max(seen_max, batch.max())
        x_state = _vars(qmodel, "x_quantize")
        assert x_state["x_quantize_count"] == n
        assert x_state["x_quantize_min"] == np.float32(seen_min)
        assert x_state["x_quantize_max"] == np.float32(seen_max)
        signed = seen_min < 0
        expected_fl = _fl(max(abs(seen_min), abs(seen_max)), 8, signed)
        assert x_state["x_quantize_frac_bits"] == expected_fl
        assert x_state["x_quantize_scale"] == np.float32(2.0 ** expected_fl)
        assert x_state["x_quantize_offset"] == 0.0

        w_state = _vars(qmodel, "quant_fc1")
        np.testing.assert_array_equal(w_state["kernel_min"], kernel.min(axis=0))
        np.testing.assert_array_equal(w_state["kernel_max"], kernel.max(axis=0))
        np.testing.assert_array_equal(
            w_state["kernel_frac_bits"],
            _fl(np.maximum(np.abs(kernel.min(axis=0)), np.abs(kernel.max(axis=0))), 8, True))
        assert w_state["kernel_count"] == n


def test_a_step_quantizes_with_the_range_that_includes_its_own_batch():
    """The quantized value of a step uses the merged range of that step (not the stored one
    from before it), with the inference-time rounding for activations."""
    qmodel = kerasq.quantize_model(_model())
    layer = qmodel.get_layer("x_quantize")
    small, wide = _batches()[0], _batches()[1]
    layer.quantizer(tf.constant(small), True, layer.quantizer_vars)  # stored range: small
    step = tf.function(lambda x: layer.quantizer(x, True, layer.quantizer_vars))
    out = step(tf.constant(wide)).numpy()
    a = max(abs(min(small.min(), wide.min())), abs(max(small.max(), wide.max())))
    fl = float(_fl(a, 8, True))
    reference = np.clip(np.round(wide * 2.0 ** fl), -128, 127) / 2.0 ** fl  # ties to even
    np.testing.assert_array_equal(out, reference.astype(np.float32))


def _relu_model():
    """Conv -> ReLU layer, and a Dense with a built-in ReLU: both feed an activation
    quantizer with a Relu op. The zero bias and the all-zero rows of the batch give
    pre-activations that are exactly 0, where ReluGrad passes nothing."""
    keras.utils.set_random_seed(5)
    inp = keras.Input((6, 6, 2), name="x")
    conv = keras.layers.Conv2D(4, 3, padding="same", bias_initializer="zeros", name="conv")(inp)
    dense = keras.layers.Dense(5, activation="relu", name="fc1")(
        keras.layers.Flatten(name="flat")(keras.layers.ReLU(name="relu")(conv)))
    return keras.Model(inp, keras.layers.Dense(3, name="fc2")(dense))


def _relu_batch(seed):
    x = np.random.default_rng(seed).normal(0, 2, (4, 6, 6, 2)).astype(np.float32)
    x[1] = 0.0
    x[2, :3] = 0.0
    return x


def _train_steps(qmodel, batches):
    opt = keras.optimizers.SGD(0.05)

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            out = qmodel(x, training=True)
            loss = tf.reduce_mean(tf.square(out - 1.0))
        grads = tape.gradient(loss, qmodel.trainable_variables)
        opt.apply_gradients(zip(grads, qmodel.trainable_variables))
        return out, grads

    results = [[t.numpy() for t in [o] + g] for o, g in (step(tf.constant(b)) for b in batches)]
    return step, results, [v.numpy() for v in qmodel.weights]


def test_relu_fused_into_the_quantizer_gives_the_same_step(monkeypatch):
    """A quantizer after a Relu op quantizes the ReLU's input with the kernels' relu mode:
    the outputs, gradients, weights and quantizer states of several steps equal, bit for
    bit, those of the same steps with the Relu op and its gradient in the graph."""
    import kerasq.ops
    from kerasq.schemes.quantizers import DFPActivationQuantizer

    if not kerasq.ops.custom_kernels_loaded():
        pytest.skip(f"C++ ops not available: {kerasq.ops.fallback_reason()}")
    batches = [_relu_batch(seed) for seed in (1, 2, 3)]
    config = {"train_rounding": "nearest"}  # deterministic weights: the runs are comparable

    fused_model = kerasq.quantize_model(_relu_model(), config)
    step, fused, fused_state = _train_steps(fused_model, batches)
    graph_def = step.get_concrete_function(tf.constant(batches[0])).graph.as_graph_def()
    nodes = list(graph_def.node) + [n for f in graph_def.library.function for n in f.node_def]
    relu_kernels = [n for n in nodes if n.op.startswith("Kerasq>FakeQuantDfp") and n.attr["relu"].b]
    assert len(relu_kernels) == 2  # both quantizers after a Relu
    assert "ReluGrad" not in {n.op for n in nodes}

    monkeypatch.setattr(DFPActivationQuantizer, "relu_input", lambda self, inputs: None)
    plain_model = kerasq.quantize_model(_relu_model(), config)
    _, plain, plain_state = _train_steps(plain_model, batches)

    for got, want in zip(fused, plain):
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)
    assert any((g == 0).any() for g in fused[0][1:])  # the masks cut something
    for a, b in zip(fused_state, plain_state):
        np.testing.assert_array_equal(a, b)


def _conv_model():
    keras.utils.set_random_seed(9)
    inp = keras.Input((8, 8, 3), name="x")
    h = keras.layers.Conv2D(16, 3, padding="same", name="conv")(inp)
    h = keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw")(h)
    h = keras.layers.Flatten(name="flat")(h)
    return keras.Model(inp, keras.layers.Dense(24, name="fc")(h))


def test_weight_quantizers_one_op_step_gives_the_same_step(monkeypatch):
    """The weight quantizers' one-op training step (``Kerasq>DfpWeightQuantize``: range,
    fl and fake quantization) against their TF ops: three steps, outputs, gradients,
    weights and every quantizer variable equal bit for bit."""
    import kerasq.ops
    from kerasq.schemes.quantizers import DFPWeightQuantizer

    if not kerasq.ops.custom_kernels_loaded():
        pytest.skip(f"C++ ops not available: {kerasq.ops.fallback_reason()}")
    rng = np.random.default_rng(4)
    batches = [rng.normal(0, 1, (4, 8, 8, 3)).astype(np.float32) for _ in range(3)]
    config = {"train_rounding": "nearest"}
    fused_model = kerasq.quantize_model(_conv_model(), config)
    step, fused, fused_state = _train_steps(fused_model, batches)
    graph_def = step.get_concrete_function(tf.constant(batches[0])).graph.as_graph_def()
    ops_used = [n.op for n in graph_def.node]
    assert ops_used.count("Kerasq>DfpWeightQuantize") == 3  # the kernels (biases: int32 grid)

    monkeypatch.setattr(DFPWeightQuantizer, "_fused_train_quantize",
                        lambda self, w, weights, rounding: None)
    plain_model = kerasq.quantize_model(_conv_model(), config)
    _, plain, plain_state = _train_steps(plain_model, batches)
    for got, want in zip(fused, plain):
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)
    for a, b in zip(fused_state, plain_state):
        np.testing.assert_array_equal(a, b)
