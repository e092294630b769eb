"""DFP rounding against TFLite's own QUANTIZE kernels (the TFLite interpreter).

A float graph ``FakeQuant(min = −128·2^−fl, max = 127·2^−fl)`` converted with int8
output becomes a single TFLite QUANTIZE op with scale 2^−fl and zero point 0. The
interpreter runs ``q = clamp(round(x / scale), −128, 127)``:

* the reference kernel (``OpResolverType.BUILTIN_REF``) rounds ties away from zero,
  which is numerics ``"nearest"``;
* the optimized builtin kernel (the default, with or without XNNPACK) rounds ties to
  even, which is numerics ``"nearest_even"``.
"""

from __future__ import annotations

import numpy as np
import pytest

from kerasq._compat import tf
from kerasq.numerics import dfp_quantize, dfp_range

litert = pytest.importorskip("ai_edge_litert.interpreter")

N = 512


def int8_quantize_model(fl: int) -> bytes:
    lo, hi = dfp_range(8, fl)

    @tf.function(input_signature=[tf.TensorSpec([N], tf.float32)])
    def graph(x):
        return tf.quantization.fake_quant_with_min_max_vars(x, min=lo, max=hi, num_bits=8)

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [graph.get_concrete_function()], graph
    )
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.inference_input_type = tf.float32
    converter.inference_output_type = tf.int8
    rng = np.random.default_rng(0)
    converter.representative_dataset = lambda: (
        [rng.uniform(lo, hi, N).astype(np.float32)] for _ in range(4)
    )
    return converter.convert()


def run(model: bytes, x: np.ndarray, resolver) -> tuple:
    interpreter = litert.Interpreter(model_content=model, experimental_op_resolver_type=resolver)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    out = interpreter.get_output_details()[0]
    return interpreter.get_tensor(out["index"]), out["quantization"]


@pytest.mark.filterwarnings("ignore:Statistics for quantized inputs")
@pytest.mark.parametrize("fl", [4, -1])
def test_tflite_quantize_kernels_round_like_numerics(fl):
    model = int8_quantize_model(fl)
    step = 2.0**-fl
    rng = np.random.default_rng(fl + 10)
    ties = (np.arange(-128, 127) + 0.5) * step
    random = rng.uniform(-150 * step, 150 * step, N - ties.size - 2)
    x = np.concatenate([ties, random, [-1000 * step, 1000 * step]]).astype(np.float32)
    resolvers = litert.OpResolverType
    for resolver, mode in [(resolvers.BUILTIN_REF, "nearest"), (resolvers.AUTO, "nearest_even")]:
        q, (scale, zero_point) = run(model, x, resolver)
        assert (scale, zero_point) == (step, 0)
        want = dfp_quantize(x, 8, fl, rounding=mode)
        np.testing.assert_array_equal(q.astype(np.float64) * step, want, err_msg=mode)
        other = "nearest_even" if mode == "nearest" else "nearest"
        assert not np.array_equal(q * step, dfp_quantize(x, 8, fl, rounding=other))


@pytest.mark.parametrize("mode", ["nearest", "nearest_even", "half_up"])
def test_tf_round_lowers_to_tflite_builtins_and_rounds_the_same(mode):
    """The export's exact float path rounds with tf_round: it must convert with TFLite
    builtins only and compute in the interpreter what numpy computes."""
    from kerasq.numerics.rounding import np_round, tf_round

    @tf.function(input_signature=[tf.TensorSpec([N], tf.float32)])
    def graph(x):
        return tf_round(x, mode, signed_zeros=False)

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [graph.get_concrete_function()], graph
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    interpreter = litert.Interpreter(model_content=converter.convert())
    interpreter.allocate_tensors()
    below_half = np.nextafter(np.float32(0.5), np.float32(0))
    ties = np.float32([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, below_half, -below_half, 2**23 + 1])
    rng = np.random.default_rng(3)
    x = np.concatenate([ties, rng.normal(scale=50, size=N - ties.size)]).astype(np.float32)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_array_equal(got, np_round(x.astype(np.float64), mode))
