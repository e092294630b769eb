"""Integer conv2d / depthwise / matmul: numpy int64 reference and the fake-quant simulation.

Both op paths must give exactly the integers of the numpy reference (tests/ops/
int_reference.py, written from the spec), and the integers of the DFP fake-quant
simulation of the float Keras layer (kerasq.numerics applied to a float32 Conv2D/
DepthwiseConv2D/Dense fed with the dequantized values) whenever that float sum is exact.
"""

from __future__ import annotations

import numpy as np
import pytest

from ops import int_reference as ref
from kerasq._compat import keras, tf
from kerasq import numerics
from kerasq.errors import QuantizationConfigError
from kerasq.ops import dfp_conv2d, dfp_depthwise_conv2d, dfp_matmul

DETERMINISTIC = ["nearest", "nearest_even", "half_up"]


def _ints(rng, shape, dtype, bits=None):
    info = np.iinfo(dtype)
    lo, hi = (info.min, info.max) if bits is None else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    return rng.integers(lo, hi + 1, shape).astype(dtype)


CONV_CASES = [
    # x shape, w shape, strides, dilations, padding, x dtype, w dtype, w_frac, bias_frac, out
    dict(x=(2, 9, 7, 5), w=(3, 3, 5, 6), s=(1, 1), d=(1, 1), pad="VALID"),
    dict(x=(1, 10, 11, 3), w=(3, 3, 3, 37), s=(2, 2), d=(1, 1), pad="SAME", per_channel=True),
    dict(x=(2, 12, 9, 4), w=(5, 3, 4, 16), s=(1, 2), d=(2, 1), pad="SAME", bias_frac=14),
    dict(x=(1, 8, 8, 8), w=(3, 3, 8, 33), s=(1, 1), d=(1, 1), pad=[[1, 2], [0, 3]],
         xdt=np.int16, xbits=12, out_bits=16, out_frac=9),
    dict(x=(3, 17, 13, 7), w=(1, 1, 7, 20), s=(1, 1), d=(1, 1), pad="VALID", wdt=np.int16,
         wbits=10, out_bits=4, signed=False),
    dict(x=(1, 6, 6, 2), w=(3, 3, 2, 3), s=(1, 1), d=(1, 1), pad="SAME", out_frac=-3,
         bias_frac=2),  # negative shift: left shift with saturation
    dict(x=(1, 5, 5, 64), w=(3, 3, 64, 8), s=(1, 1), d=(1, 1), pad="SAME", xdt=np.int16,
         wdt=np.int16),  # full-range int16: int64 accumulation
]


def _conv_case(case, rng, depthwise=False):
    xdt, wdt = case.get("xdt", np.int8), case.get("wdt", np.int8)
    x = _ints(rng, case["x"], xdt, case.get("xbits"))
    wshape = case["w"] if not depthwise else (case["w"][0], case["w"][1], case["x"][3], 2)
    w = _ints(rng, wshape, wdt, case.get("wbits"))
    n_out = wshape[3] if not depthwise else wshape[2] * wshape[3]
    w_frac = (rng.integers(3, 9, n_out) if case.get("per_channel") else 6)
    bias_frac = case.get("bias_frac", 11 if not case.get("per_channel") else 9)
    bias = rng.integers(-5000, 5000, n_out).astype(np.int32)
    kw = dict(x_frac=5, w_frac=w_frac, bias_frac=bias_frac, out_frac=case.get("out_frac", 4),
              out_bitwidth=case.get("out_bits", 8), out_signed=case.get("signed", True),
              strides=case["s"], dilations=case["d"], padding=case["pad"])
    return x, w, bias, kw


def _expected(acc, bias, kw, rounding):
    return ref.requantize(acc, 5 + np.asarray(kw["w_frac"]), kw["out_frac"], kw["out_bitwidth"],
                          kw["out_signed"], rounding, bias=bias, bias_frac=kw["bias_frac"])


@pytest.mark.parametrize("rounding", DETERMINISTIC)
@pytest.mark.parametrize("case", range(len(CONV_CASES)))
def test_conv2d_matches_numpy_reference(ops_path, case, rounding):
    rng = np.random.default_rng(case)
    x, w, bias, kw = _conv_case(CONV_CASES[case], rng)
    acc = ref.conv2d_acc(x, w, kw["strides"], kw["dilations"], kw["padding"])
    y = dfp_conv2d(x, w, bias, rounding=rounding, **kw)
    np.testing.assert_array_equal(y.numpy(), _expected(acc, bias, kw, rounding))
    assert y.dtype == (tf.int8 if kw["out_bitwidth"] + (not kw["out_signed"]) <= 8 else tf.int16)


@pytest.mark.parametrize("rounding", DETERMINISTIC)
@pytest.mark.parametrize("case", [0, 1, 2, 3, 5, 6])
def test_depthwise_matches_numpy_reference(ops_path, case, rounding):
    rng = np.random.default_rng(100 + case)
    c = dict(CONV_CASES[case])
    x, w, bias, kw = _conv_case(c, rng, depthwise=True)
    acc = ref.depthwise_acc(x, w, kw["strides"], kw["dilations"], kw["padding"])
    y = dfp_depthwise_conv2d(x, w, bias, rounding=rounding, **kw)
    np.testing.assert_array_equal(y.numpy(), _expected(acc, bias, kw, rounding))


@pytest.mark.parametrize("rounding", DETERMINISTIC)
@pytest.mark.parametrize("m,k,n,xdt,wdt", [(1, 1, 1, np.int8, np.int8), (7, 33, 10, np.int8, np.int8),
                                           (130, 200, 70, np.int8, np.int16),
                                           (65, 512, 17, np.int16, np.int16)])
def test_matmul_matches_numpy_reference(ops_path, rounding, m, k, n, xdt, wdt):
    rng = np.random.default_rng(m * k)
    x, w = _ints(rng, (m, k), xdt), _ints(rng, (k, n), wdt)
    bias = rng.integers(-2**20, 2**20, n).astype(np.int32)
    w_frac = rng.integers(2, 8, n)
    y = dfp_matmul(x, w, bias, x_frac=7, w_frac=w_frac, bias_frac=12,
                   out_frac=3, out_bitwidth=16, rounding=rounding)
    expected = ref.requantize(ref.matmul_acc(x, w), 7 + w_frac, 3, 16, True, rounding,
                              bias=bias, bias_frac=12)
    np.testing.assert_array_equal(y.numpy(), expected)


def test_matmul_batched_input_and_no_bias(ops_path):
    rng = np.random.default_rng(5)
    x, w = _ints(rng, (2, 3, 40), np.int8), _ints(rng, (40, 9), np.int8)
    y = dfp_matmul(x, w, x_frac=4, w_frac=4, out_frac=2, out_bitwidth=8)
    assert y.shape == (2, 3, 9)
    np.testing.assert_array_equal(y.numpy(), ref.requantize(ref.matmul_acc(x, w), 8, 2))


def test_stochastic_requantization_is_unbiased_and_seeded(ops_path):
    # acc = 3 at fl 4 requantized to fl 0: 3/16 -> 1 with probability 3/16.
    x = np.full((20000, 1), 3, np.int8)
    w = np.ones((1, 1), np.int8)
    a = dfp_matmul(x, w, x_frac=4, w_frac=0, out_frac=0, rounding="stochastic", seed=7).numpy()
    b = dfp_matmul(x, w, x_frac=4, w_frac=0, out_frac=0, rounding="stochastic", seed=7).numpy()
    np.testing.assert_array_equal(a, b)
    assert set(np.unique(a)) <= {0, 1}
    p = a.mean()
    assert abs(p - 3 / 16) < 5 * np.sqrt(3 / 16 * 13 / 16 / a.size)


# ------------------------------------------------- equal to the fake-quant simulation


def _dequant(q, fl):
    return (q.astype(np.float64) * np.exp2(-np.asarray(fl, np.float64))).astype(np.float32)


@pytest.mark.parametrize("kind", ["conv", "depthwise", "dense"])
@pytest.mark.parametrize("rounding", DETERMINISTIC)
def test_integer_layers_equal_fake_quant_simulation(ops_path, kind, rounding):
    """Same integers as dfp(float_layer(dfp(x), dfp(w)) + dfp(b)) * 2^out_frac."""
    rng = np.random.default_rng(42)
    x_frac, out_frac, bias_frac = 6, 3, 9
    x_q = _ints(rng, (2, 8, 8, 6) if kind != "dense" else (16, 48), np.int8)
    if kind == "conv":
        w_q = _ints(rng, (3, 3, 6, 10), np.int8)
        n_out = 10
        layer = keras.layers.Conv2D(n_out, 3, strides=2, padding="same")
    elif kind == "depthwise":
        w_q = _ints(rng, (3, 3, 6, 2), np.int8)
        n_out = 12
        layer = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same")
    else:
        w_q = _ints(rng, (48, 20), np.int8)
        n_out = 20
        layer = keras.layers.Dense(n_out)
    w_frac = rng.integers(5, 9, n_out)
    b_q = rng.integers(-3000, 3000, n_out).astype(np.int32)
    layer.build(x_q.shape)
    w_fl = w_frac if kind != "depthwise" else w_frac.reshape(6, 2)
    layer.set_weights([_dequant(w_q, w_fl), _dequant(b_q, bias_frac)])
    y_float = layer(tf.constant(_dequant(x_q, x_frac)))
    sim = numerics.dfp_quantize(y_float.numpy(), 8, out_frac, rounding=rounding)
    sim_int = np.ldexp(sim.astype(np.float64), out_frac)
    fn = {"conv": dfp_conv2d, "depthwise": dfp_depthwise_conv2d, "dense": dfp_matmul}[kind]
    extra = {} if kind == "dense" else {"padding": "SAME"}
    if kind == "conv":
        extra["strides"] = 2
    y_int = fn(x_q, w_q, b_q, x_frac=x_frac, w_frac=w_frac, bias_frac=bias_frac,
               out_frac=out_frac, rounding=rounding, **extra)
    np.testing.assert_array_equal(y_int.numpy().astype(np.float64), sim_int)
    assert len(np.unique(y_int.numpy())) > 20  # not saturated to a constant


def test_bad_arguments(ops_path):
    x, w = np.zeros((1, 4, 4, 3), np.int8), np.zeros((3, 3, 3, 2), np.int8)
    with pytest.raises(QuantizationConfigError, match="int8 or int16"):
        dfp_conv2d(x.astype(np.float32), w, x_frac=0, w_frac=0, out_frac=0)
    with pytest.raises(QuantizationConfigError, match="w_frac"):
        dfp_conv2d(x, w, x_frac=0, w_frac=[1, 2, 3], out_frac=0)
    with pytest.raises(QuantizationConfigError, match="padding"):
        dfp_conv2d(x, w, x_frac=0, w_frac=0, out_frac=0, padding="FULL")
    with pytest.raises(QuantizationConfigError, match="bias_frac"):
        dfp_matmul(np.zeros((2, 3), np.int8), np.zeros((3, 2), np.int8), np.zeros(2, np.int32),
                   x_frac=0, w_frac=[1, 2], out_frac=0)


def test_weights_changed_in_place_between_calls_are_used(ops_path):
    # The C++ kernels reuse packed weights while the weight bytes are unchanged: a Variable
    # assigned in place (same buffer, same shape) must still give the new result.
    rng = np.random.default_rng(11)
    x = _ints(rng, (5, 64), np.int8)
    xc = _ints(rng, (1, 6, 6, 8), np.int8)
    w = tf.Variable(_ints(rng, (64, 24), np.int8))
    wc = tf.Variable(_ints(rng, (3, 3, 8, 16), np.int8))
    matmul = tf.function(lambda: dfp_matmul(x, w.read_value(), x_frac=4, w_frac=4, out_frac=2,
                                              rounding="nearest"))
    conv = tf.function(lambda: dfp_conv2d(xc, wc.read_value(), x_frac=4, w_frac=4, out_frac=2,
                                          padding="SAME", rounding="nearest"))
    for step in range(3):
        np.testing.assert_array_equal(matmul().numpy(), ref.requantize(
            ref.matmul_acc(x, w.numpy()), 8, 2))
        np.testing.assert_array_equal(conv().numpy(), ref.requantize(
            ref.conv2d_acc(xc, wc.numpy(), padding="SAME"), 8, 2))
        flip = np.zeros(w.shape, np.int8)
        flip[step % 64, step % 24] = 1  # one weight changes: the cache must notice
        w.assign(np.clip(w.numpy().astype(np.int16) + flip, -127, 127).astype(np.int8))
        wc.assign(np.clip(wc.numpy().astype(np.int16) - 1, -127, 127).astype(np.int8))


# ------------------------------------------------- int8 x int8 kernels (u8·s8 GEMM, int32 output
# stage): every channel tail (16/32-channel tiles), K not a multiple of 4, rows not a multiple
# of 8, several tasks, full-range values (-128 included), shifts on both sides of the
# int32 output stage's bounds; the numpy reference is independent of both paths.

INT8_CONV_SHAPES = [
    # x (NHWC), w (HWIO), strides, padding
    ((1, 7, 9, 3), (3, 3, 3, 1), 1, "SAME"),
    ((2, 11, 10, 5), (3, 3, 5, 17), 2, "SAME"),
    ((1, 9, 9, 13), (3, 3, 13, 33), 1, [[2, 0], [1, 3]]),
    ((1, 14, 14, 64), (3, 3, 64, 47), 1, "SAME"),
    ((3, 8, 8, 24), (1, 1, 24, 100), 1, "VALID"),
    ((1, 12, 12, 31), (5, 5, 31, 16), 2, "VALID"),
    ((1, 40, 40, 64), (3, 3, 64, 64), 1, "SAME"),  # above the single-thread work threshold
]


@pytest.mark.parametrize("out_frac,bias_frac", [(4, 11), (4, 15), (-2, 6), (12, 11)])
@pytest.mark.parametrize("shape", range(len(INT8_CONV_SHAPES)))
def test_int8_conv_all_tiles_and_output_stages(ops_path, shape, out_frac, bias_frac):
    xs, ws, stride, pad = INT8_CONV_SHAPES[shape]
    rng = np.random.default_rng(1000 + shape)
    x, w = _ints(rng, xs, np.int8), _ints(rng, ws, np.int8)
    x.flat[:7] = -128  # the extreme products
    w.flat[:5] = -128
    bias = rng.integers(-40000, 40000, ws[3]).astype(np.int32)
    for rounding in DETERMINISTIC:
        kw = dict(x_frac=5, w_frac=6, bias_frac=bias_frac, out_frac=out_frac, strides=stride,
                  padding=pad, rounding=rounding)
        y = dfp_conv2d(x, w, bias, **kw)
        acc = ref.conv2d_acc(x, w, (stride, stride), (1, 1), pad)
        np.testing.assert_array_equal(y.numpy(), ref.requantize(
            acc, 11, out_frac, 8, True, rounding, bias=bias, bias_frac=bias_frac))


@pytest.mark.parametrize("m,k,n", [(1, 3, 1), (9, 4, 15), (8, 1027, 33), (200, 96, 64),
                                   (31, 4096, 49), (300, 1100, 130)])  # last: thread pool
def test_int8_matmul_all_tiles(ops_path, m, k, n):
    rng = np.random.default_rng(m + k + n)
    x, w = _ints(rng, (m, k), np.int8), _ints(rng, (k, n), np.int8)
    x[0, :] = -128
    w[:, 0] = -128  # a column sum of -128·K: the largest offset correction
    w_frac = rng.integers(3, 9, n)
    for rounding in DETERMINISTIC:
        y = dfp_matmul(x, w, x_frac=2, w_frac=w_frac, out_frac=-4, out_bitwidth=16,
                       rounding=rounding)
        np.testing.assert_array_equal(y.numpy(), ref.requantize(
            ref.matmul_acc(x, w), 2 + w_frac, -4, 16, True, rounding))


@pytest.mark.parametrize("xs,stride,pad,mult", [
    ((1, 10, 9, 19), 1, "SAME", 1), ((2, 9, 12, 40), 2, "SAME", 1),
    ((1, 8, 8, 130), 1, "VALID", 1), ((1, 7, 7, 5), 2, [[1, 0], [0, 2]], 3),
    ((2, 64, 64, 130), 1, "SAME", 1)])  # above the single-thread work threshold
def test_int8_depthwise_3x3(ops_path, xs, stride, pad, mult):
    rng = np.random.default_rng(xs[3])
    x, w = _ints(rng, xs, np.int8), _ints(rng, (3, 3, xs[3], mult), np.int8)
    x.flat[:3] = -128
    w.flat[:3] = -128
    n = xs[3] * mult
    bias = rng.integers(-3000, 3000, n).astype(np.int32)
    for rounding in DETERMINISTIC:
        y = dfp_depthwise_conv2d(x, w, bias, x_frac=4, w_frac=5, bias_frac=9, out_frac=2,
                                 strides=stride, padding=pad, rounding=rounding)
        acc = ref.depthwise_acc(x, w, (stride, stride), (1, 1), pad)
        np.testing.assert_array_equal(y.numpy(), ref.requantize(
            acc, 9, 2, 8, True, rounding, bias=bias, bias_frac=9))


@pytest.mark.parametrize("xs,k,stride,dil,pad,out", [
    ((1, 9, 11, 70), (5, 3), (1, 2), (2, 1), "SAME", dict(out_bitwidth=16)),  # int16, fused
    ((2, 12, 10, 64), (7, 7), (2, 1), (1, 1), "SAME", dict(out_bitwidth=4, out_signed=False)),
    ((1, 6, 7, 33), (1, 1), (1, 1), (1, 1), "VALID", dict(out_dtype="int32")),
    ((1, 8, 9, 96), (3, 3), (1, 1), (1, 2), [[2, 0], [1, 3]],  # wraps like a C cast
     dict(out_bitwidth=8, out_signed=False, out_dtype="int8")),
    ((1, 5, 6, 200), (2, 4), (3, 1), (1, 1), "VALID", dict(out_bitwidth=12, out_dtype="int16")),
])
def test_int8_depthwise_multiplier1_kernels_and_outputs(ops_path, xs, k, stride, dil, pad, out):
    # int8 x int8 with multiplier 1 has its own vector kernels: every kernel size, stride,
    # dilation and padding, and outputs the fused epilogue does not cover (unsigned,
    # narrow, int32, a range that wraps in the output type) against the numpy reference.
    rng = np.random.default_rng(xs[3] + k[0])
    x, w = _ints(rng, xs, np.int8), _ints(rng, k + (xs[3], 1), np.int8)
    x.flat[:5] = -128
    w.flat[:5] = -128
    bias = rng.integers(-3000, 3000, xs[3]).astype(np.int32)
    w_frac = rng.integers(3, 7, xs[3])
    for rounding in DETERMINISTIC:
        y = dfp_depthwise_conv2d(x, w, bias, x_frac=4, w_frac=w_frac, bias_frac=10, out_frac=3,
                                 strides=stride, dilations=dil, padding=pad, rounding=rounding,
                                 **out)
        acc = ref.depthwise_acc(x, w, stride, dil, pad)
        expected = ref.requantize(acc, 4 + w_frac, 3, out.get("out_bitwidth", 8),
                                  out.get("out_signed", True), rounding, bias=bias, bias_frac=10)
        assert y.dtype.name == out.get("out_dtype", y.dtype.name)
        np.testing.assert_array_equal(y.numpy(), expected.astype(y.dtype.as_numpy_dtype))


@pytest.mark.parametrize("kernel", ["avx512", "portable"])
@pytest.mark.parametrize("xs,k,stride,pad,out", [
    ((1, 10, 9, 70), (3, 3), 1, "SAME", {}),
    ((2, 9, 12, 40), (3, 3), 2, "SAME", dict(out_bitwidth=16)),
    ((1, 9, 11, 33), (5, 3), 1, [[1, 2], [0, 3]], dict(out_dtype="int32")),
])
def test_int8_depthwise_lower_kernels(monkeypatch, kernel, xs, k, stride, pad, out):
    # The int8 kernels this CPU does not pick by itself (KERASQ_DEPTHWISE_KERNEL selects
    # a lower one: vpmaddwd without VNNI, or the portable loops) against the numpy reference.
    import kerasq.ops

    monkeypatch.delenv("KERASQ_PY_OPS", raising=False)
    if not kerasq.ops.custom_kernels_loaded():
        pytest.skip(f"C++ ops not available: {kerasq.ops.fallback_reason()}")
    monkeypatch.setenv("KERASQ_DEPTHWISE_KERNEL", kernel)
    rng = np.random.default_rng(xs[3] + k[0] + stride)
    x, w = _ints(rng, xs, np.int8), _ints(rng, k + (xs[3], 1), np.int8)
    x.flat[:3] = -128
    w.flat[:3] = -128
    bias = rng.integers(-3000, 3000, xs[3]).astype(np.int32)
    for rounding in DETERMINISTIC:
        y = dfp_depthwise_conv2d(x, w, bias, x_frac=4, w_frac=5, bias_frac=9, out_frac=2,
                                 strides=stride, padding=pad, rounding=rounding, **out)
        acc = ref.depthwise_acc(x, w, (stride, stride), (1, 1), pad)
        expected = ref.requantize(acc, 9, 2, out.get("out_bitwidth", 8), True, rounding,
                                  bias=bias, bias_frac=9)
        np.testing.assert_array_equal(y.numpy(), expected.astype(y.dtype.as_numpy_dtype))


# The int8 x int8 kernel's fused output stage stores int8, int16 or int32; conv windows
# read in place (in_c a multiple of 4) or gathered (other in_c), with dilation, strides,
# several images and a batch of rows not a multiple of the 8-row tile.
@pytest.mark.parametrize("in_c", [8, 6])
@pytest.mark.parametrize("out_bits,out_signed", [(8, True), (12, True), (24, True), (7, False)])
def test_int8_conv_output_types_dilation_and_batches(ops_path, in_c, out_bits, out_signed):
    rng = np.random.default_rng(in_c * 100 + out_bits)
    x, w = _ints(rng, (3, 11, 13, in_c), np.int8), _ints(rng, (3, 3, in_c, 21), np.int8)
    x.flat[:5] = -128
    w.flat[:5] = -128
    bias = rng.integers(-20000, 20000, 21).astype(np.int32)
    for strides, dilations, pad in [((1, 1), (2, 2), "SAME"), ((2, 1), (1, 3), "VALID"),
                                    ((1, 2), (1, 1), [[0, 2], [3, 1]])]:
        for rounding in DETERMINISTIC:
            y = dfp_conv2d(x, w, bias, x_frac=3, w_frac=5, bias_frac=9, out_frac=1,
                           out_bitwidth=out_bits, out_signed=out_signed, strides=strides,
                           dilations=dilations, padding=pad, rounding=rounding)
            acc = ref.conv2d_acc(x, w, strides, dilations, pad)
            np.testing.assert_array_equal(y.numpy(), ref.requantize(
                acc, 8, 1, out_bits, out_signed, rounding, bias=bias, bias_frac=9))


# ------------------------------------------------- uint8 activations (unsigned 8-bit grids, e.g.
# ReLU outputs 0..255): the u8·s8 kernels read them without the +128 offset; uint8 outputs
# (out_dtype="uint8") from the fused output stages. Full-range values (255 and -128 weights),
# borders (zero padding is 0, not the offset), every tile tail, against the numpy reference.

@pytest.mark.parametrize("shape", range(len(INT8_CONV_SHAPES)))
def test_uint8_conv_inputs_and_outputs(ops_path, shape):
    xs, ws, stride, pad = INT8_CONV_SHAPES[shape]
    rng = np.random.default_rng(2000 + shape)
    x, w = _ints(rng, xs, np.uint8), _ints(rng, ws, np.int8)
    x.flat[:7] = 255
    w.flat[:5] = -128
    bias = rng.integers(-40000, 40000, ws[3]).astype(np.int32)
    acc = ref.conv2d_acc(x, w, (stride, stride), (1, 1), pad)
    for rounding in DETERMINISTIC:
        for out in (dict(out_bitwidth=8), dict(out_bitwidth=8, out_signed=False,
                                                out_dtype="uint8"),
                    dict(out_bitwidth=16), dict(out_bitwidth=32, out_dtype="int32")):
            kw = dict(x_frac=5, w_frac=6, bias_frac=11, out_frac=4, strides=stride,
                      padding=pad, rounding=rounding, **out)
            y = dfp_conv2d(x, w, bias, **kw)
            expected = ref.requantize(acc, 11, 4, out["out_bitwidth"],
                                      out.get("out_signed", True), rounding, bias=bias,
                                      bias_frac=11)
            assert y.dtype.name == out.get("out_dtype", y.dtype.name)
            np.testing.assert_array_equal(y.numpy(), expected)
    # raw sums (no bias, no shift): the exact accumulator
    y = dfp_conv2d(x, w, x_frac=0, w_frac=0, out_frac=0, out_bitwidth=32, out_dtype="int32",
                   strides=stride, padding=pad)
    np.testing.assert_array_equal(y.numpy(), acc)


@pytest.mark.parametrize("m,k,n", [(1, 3, 1), (9, 4, 15), (8, 1027, 33), (300, 1100, 130)])
def test_uint8_matmul(ops_path, m, k, n):
    rng = np.random.default_rng(m + k + n + 7)
    x, w = _ints(rng, (m, k), np.uint8), _ints(rng, (k, n), np.int8)
    x[0, :] = 255
    w[:, 0] = -128
    w_frac = rng.integers(3, 9, n)
    for rounding in DETERMINISTIC:
        for out_bits, signed, dtype in ((16, True, None), (8, False, "uint8")):
            y = dfp_matmul(x, w, x_frac=2, w_frac=w_frac, out_frac=-4, out_bitwidth=out_bits,
                           out_signed=signed, out_dtype=dtype, rounding=rounding)
            np.testing.assert_array_equal(y.numpy(), ref.requantize(
                ref.matmul_acc(x, w), 2 + w_frac, -4, out_bits, signed, rounding))


@pytest.mark.parametrize("kernel", ["best", "avx512", "portable"])
@pytest.mark.parametrize("xs,k,stride,dil,pad,mult", [
    ((1, 10, 9, 70), (3, 3), 1, 1, "SAME", 1), ((2, 9, 12, 40), (3, 3), 2, 1, "SAME", 1),
    ((1, 9, 11, 33), (5, 3), 1, 2, [[1, 2], [0, 3]], 1), ((1, 7, 7, 5), (3, 3), 2, 1, "SAME", 3),
    ((2, 64, 64, 130), (3, 3), 1, 1, "SAME", 1)])  # above the single-thread work threshold
def test_uint8_depthwise(ops_path, monkeypatch, kernel, xs, k, stride, dil, pad, mult):
    if kernel != "best":
        if ops_path != "custom":
            pytest.skip("KERASQ_DEPTHWISE_KERNEL selects a C++ kernel")
        monkeypatch.setenv("KERASQ_DEPTHWISE_KERNEL", kernel)
    rng = np.random.default_rng(xs[3] + k[0] + stride + mult)
    x, w = _ints(rng, xs, np.uint8), _ints(rng, k + (xs[3], mult), np.int8)
    x.flat[:5] = 255
    w.flat[:5] = -128
    n = xs[3] * mult
    bias = rng.integers(-3000, 3000, n).astype(np.int32)
    acc = ref.depthwise_acc(x, w, (stride, stride), (dil, dil), pad)
    for rounding in DETERMINISTIC:
        for out in (dict(out_bitwidth=8), dict(out_bitwidth=8, out_signed=False,
                                                out_dtype="uint8"),
                    dict(out_bitwidth=6, out_signed=False, out_dtype="uint8"),
                    dict(out_bitwidth=16), dict(out_bitwidth=32, out_dtype="int32")):
            y = dfp_depthwise_conv2d(x, w, bias, x_frac=4, w_frac=5, bias_frac=9, out_frac=2,
                                     strides=stride, dilations=dil, padding=pad,
                                     rounding=rounding, **out)
            expected = ref.requantize(acc, 9, 2, out["out_bitwidth"], out.get("out_signed", True),
                                      rounding, bias=bias, bias_frac=9)
            assert y.dtype.name == out.get("out_dtype", y.dtype.name)
            np.testing.assert_array_equal(y.numpy(), expected)


def test_int8_depthwise_uint8_outputs(ops_path):
    # int8 inputs, unsigned 8-bit outputs stored as uint8 by the fused epilogues
    rng = np.random.default_rng(11)
    x, w = _ints(rng, (1, 12, 10, 96), np.int8), _ints(rng, (3, 3, 96, 1), np.int8)
    bias = rng.integers(-3000, 3000, 96).astype(np.int32)
    acc = ref.depthwise_acc(x, w, (1, 1), (1, 1), "SAME")
    for rounding in DETERMINISTIC:
        y = dfp_depthwise_conv2d(x, w, bias, x_frac=4, w_frac=5, bias_frac=9, out_frac=1,
                                 out_signed=False, out_dtype="uint8", padding="SAME",
                                 rounding=rounding)
        np.testing.assert_array_equal(y.numpy(), ref.requantize(
            acc, 9, 1, 8, False, rounding, bias=bias, bias_frac=9))


def test_uint8_output_needs_unsigned_8_bits(ops_path):
    x, w = np.ones((1, 4), np.uint8), np.ones((4, 2), np.int8)
    with pytest.raises(QuantizationConfigError, match="uint8"):
        dfp_matmul(x, w, x_frac=0, w_frac=0, out_frac=0, out_dtype="uint8")  # signed
    with pytest.raises(QuantizationConfigError, match="uint8"):
        dfp_matmul(x, w, x_frac=0, w_frac=0, out_frac=0, out_bitwidth=9, out_signed=False,
                   out_dtype="uint8")
    with pytest.raises(QuantizationConfigError, match="int8, uint8 or int16"):
        dfp_matmul(np.ones((1, 4), np.uint16), w, x_frac=0, w_frac=0, out_frac=0)
