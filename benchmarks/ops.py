"""Benchmarks of kerasq's C++ ops against baselines measured in the same run.

One command (the malloc settings keep freed output buffers mapped; without them every
call page-faults fresh buffers and all ratios drift toward 1)::

    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=137438953472 python benchmarks/ops.py

Sections (``--only fakequant,integer,qat``; ``--quick`` for fewer sizes/repeats):

1. fake quantization, forward + backward (y and dx both returned, upstream gradient a
   Variable, so TF can neither prune the forward nor constant-fold), 1M/4M/16M float32
   elements: kerasq C++ DFP and minifloat, their pure-TF fallbacks (kerasq.numerics),
   TF's FakeQuantWithMinMaxVars, and ``x * one`` (one a Variable): the memory-bandwidth
   bound. Printed as time / bound.
2. integer conv2d / depthwise / matmul (int8, int32 accumulation, shift requantization)
   against TF float32 on the same shapes, and against the TFLite int8 interpreter
   (ai_edge_litert, XNNPACK, same thread count) running the same layer.
3. one QAT training step of a small CNN: kerasq's default DFP scheme vs tfmot's
   default 8-bit scheme.

Times are the minimum over repeats (robust to other processes on shared machines),
each variant interleaved with its baselines. No assertions: this prints numbers.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from typing import Callable, Dict, List

import numpy as np

from kerasq._compat import keras, tf, tfmot


def _min_time(fns: Dict[str, Callable[[], object]], repeats: int, warmup: int = 2) -> Dict[str, float]:
    for fn in fns.values():
        for _ in range(warmup):
            _block(fn())
    best = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            _block(fn())
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def _block(out: object) -> None:
    """Force completion (eager tensors are already computed; touch one element)."""
    first = out[0] if isinstance(out, (tuple, list)) else out
    if hasattr(first, "numpy"):
        tf.reshape(first, [-1])[:1].numpy()


# ---------------------------------------------------------------- 1. fake quant


def bench_fake_quant(sizes: List[int], repeats: int) -> None:
    import kerasq.numerics as numerics
    import kerasq.ops as ops

    print(f"\n== fake quantization, forward+backward, float32; C++ kernels loaded: "
          f"{ops.custom_kernels_loaded()}; intra-op threads: "
          f"{tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()}")
    one = tf.Variable(1.0)
    qmin, qmax = tf.Variable(-8.0), tf.Variable(8.0 - 1 / 16)
    variants = {
        "x*1.0 (bound)": lambda x: x * one,
        "kerasq DFP C++": lambda x: ops.fake_quant_dfp(x, 8, 4),
        "kerasq DFP fallback": lambda x: numerics.dfp_quantize(x, 8, 4),
        "TF FakeQuantWithMinMaxVars": lambda x: tf.quantization.fake_quant_with_min_max_vars(
            x, qmin, qmax, num_bits=8),
        "kerasq minifloat C++": lambda x: ops.fake_quant_minifloat(x, 4, 3),
        "kerasq minifloat fallback": lambda x: numerics.minifloat_quantize(x, 4, 3),
    }
    header = f"{'variant':30s}" + "".join(f"{n // 2**20:>7d}M ms  ratio" for n in sizes)
    print(header)
    rows: Dict[str, List[str]] = {name: [] for name in variants}
    for n in sizes:
        x = tf.Variable(tf.random.stateless_normal([n], [1, 2]) * 3)
        dy = tf.Variable(tf.random.stateless_normal([n], [3, 4]))
        fns = {}
        for name, f in variants.items():
            def step(f=f):
                with tf.GradientTape() as tape:
                    xv = tf.identity(x)
                    tape.watch(xv)
                    y = f(xv)
                return y, tape.gradient(y, xv, output_gradients=dy)

            fns[name] = tf.function(step)
        times = _min_time(fns, repeats)
        bound = times["x*1.0 (bound)"]
        for name in variants:
            rows[name].append(f"{times[name] * 1e3:10.2f} {times[name] / bound:6.2f}")
    for name in variants:
        print(f"{name:30s}" + "".join(rows[name]))


# ---------------------------------------------------------------- 2. integer kernels


def _tflite_layer(layer_fn, in_shape, threads: int):
    """Interpreter of a one-layer int8 TFLite model (representative-dataset calibration)."""
    from ai_edge_litert.interpreter import Interpreter

    inp = keras.Input(in_shape[1:], batch_size=in_shape[0])
    model = keras.Model(inp, layer_fn()(inp))
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    rng = np.random.default_rng(0)
    conv.representative_dataset = lambda: (
        [rng.uniform(-1, 1, in_shape).astype(np.float32)] for _ in range(4))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        content = conv.convert()
    interp = Interpreter(model_content=content, num_threads=threads)
    interp.allocate_tensors()
    detail = interp.get_input_details()[0]
    interp.set_tensor(detail["index"], rng.integers(-128, 128, in_shape).astype(np.int8))
    return interp


def bench_integer(repeats: int, quick: bool) -> None:
    import kerasq.ops as ops

    threads = tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()
    print(f"\n== integer layers (int8 in/weights, int32 acc) vs TF float32 vs TFLite int8 "
          f"(XNNPACK, {threads} threads); C++ kernels loaded: {ops.custom_kernels_loaded()}")
    rng = np.random.default_rng(0)
    convs = [(1, 56, 56, 64, 3, 64), (1, 28, 28, 128, 3, 128), (8, 32, 32, 32, 3, 64),
             (1, 14, 14, 256, 3, 256)]
    if quick:
        convs = convs[:2]
    print(f"{'layer':44s}{'kerasq int ms':>14s}{'TF f32 ms':>11s}{'TFLite ms':>11s}"
          f"{'f32/int':>9s}{'tflite/int':>11s}")

    def report(label, fns):
        t = _min_time(fns, repeats)
        k, f, lite = t["int"], t["f32"], t.get("tflite", float("nan"))
        print(f"{label:44s}{k * 1e3:14.2f}{f * 1e3:11.2f}{lite * 1e3:11.2f}{f / k:9.2f}{lite / k:11.2f}")

    for b, h, w, c, k, n in convs:
        x = tf.constant(rng.integers(-128, 128, (b, h, w, c)).astype(np.int8))
        wq = tf.constant(rng.integers(-127, 128, (k, k, c, n)).astype(np.int8))
        bias = tf.constant(rng.integers(-1000, 1000, n).astype(np.int32))
        xf, wf, bf = tf.cast(x, tf.float32), tf.cast(wq, tf.float32), tf.cast(bias, tf.float32)
        lite = _tflite_layer(lambda: keras.layers.Conv2D(n, k, padding="same"), (b, h, w, c), threads)
        report(f"conv2d {b}x{h}x{w}x{c} * {k}x{k}x{c}x{n} SAME", {
            "int": tf.function(lambda: ops.dfp_conv2d(x, wq, bias, x_frac=4, w_frac=6,
                                                      out_frac=3, padding="SAME")),
            "f32": tf.function(lambda: tf.nn.bias_add(tf.nn.conv2d(xf, wf, 1, "SAME"), bf)),
            "tflite": lite.invoke})
    for b, h, w, c in [(1, 56, 56, 128), (1, 28, 28, 256)][: 1 if quick else 2]:
        x = tf.constant(rng.integers(-128, 128, (b, h, w, c)).astype(np.int8))
        wq = tf.constant(rng.integers(-127, 128, (3, 3, c, 1)).astype(np.int8))
        xf, wf = tf.cast(x, tf.float32), tf.cast(wq, tf.float32)
        lite = _tflite_layer(lambda: keras.layers.DepthwiseConv2D(3, padding="same"), (b, h, w, c), threads)
        report(f"depthwise {b}x{h}x{w}x{c} * 3x3 SAME", {
            "int": tf.function(lambda: ops.dfp_depthwise_conv2d(x, wq, x_frac=4, w_frac=6,
                                                                out_frac=3, padding="SAME")),
            "f32": tf.function(lambda: tf.nn.depthwise_conv2d(xf, wf, [1, 1, 1, 1], "SAME")),
            "tflite": lite.invoke})
    for m, kk, n in [(256, 1024, 1024), (64, 4096, 1000)][: 1 if quick else 2]:
        x = tf.constant(rng.integers(-128, 128, (m, kk)).astype(np.int8))
        wq = tf.constant(rng.integers(-127, 128, (kk, n)).astype(np.int8))
        xf, wf = tf.cast(x, tf.float32), tf.cast(wq, tf.float32)
        lite = _tflite_layer(lambda: keras.layers.Dense(n), (m, kk), threads)
        report(f"matmul {m}x{kk} * {kk}x{n}", {
            "int": tf.function(lambda: ops.dfp_matmul(x, wq, x_frac=4, w_frac=6, out_frac=3)),
            "f32": tf.function(lambda: tf.matmul(xf, wf)),
            "tflite": lite.invoke})


# ---------------------------------------------------------------- 3. QAT step


def _small_cnn() -> "keras.Model":
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((32, 32, 3)),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(10),
    ])


def bench_qat(repeats: int) -> None:
    import kerasq

    print("\n== QAT training step, small CNN (32x32x3, batch 64)")
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(64, 32, 32, 3)).astype(np.float32))
    y = tf.constant(rng.integers(0, 10, 64))
    models = {
        "float (no quantization)": _small_cnn(),
        "tfmot default 8-bit": tfmot().quantization.keras.quantize_model(_small_cnn()),
        "kerasq default DFP 8/8": kerasq.quantize_model(_small_cnn()),
    }
    fns = {}
    for name, model in models.items():
        opt = keras.optimizers.SGD(0.01)
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

        def step(model=model, opt=opt, loss_fn=loss_fn):
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(x, training=True))
            grads = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables))
            return loss

        fns[name] = tf.function(step)
    times = _min_time(fns, repeats, warmup=3)
    ref = times["tfmot default 8-bit"]
    for name, t in times.items():
        print(f"{name:30s}{t * 1e3:9.2f} ms   vs tfmot: {t / ref:5.2f}")


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="fakequant,integer,qat")
    parser.add_argument("--quick", action="store_true", help="fewer sizes and repeats")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args(argv)
    if os.environ.get("MALLOC_MMAP_MAX_") != "0":
        print("warning: run with MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=137438953472 "
              "(see the module docstring)", file=sys.stderr)
    repeats = args.repeats or (5 if args.quick else 15)
    parts = set(args.only.split(","))
    if "fakequant" in parts:
        bench_fake_quant([2**20, 2**22] if args.quick else [2**20, 2**22, 2**24], repeats)
    if "integer" in parts:
        bench_integer(repeats, args.quick)
    if "qat" in parts:
        bench_qat(repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
