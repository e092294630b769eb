"""Benchmarks of kerasq's C++ ops and QAT step against baselines measured in the same run.

One command (the malloc settings keep freed output buffers mapped; without them every
call page-faults fresh buffers and all ratios drift toward 1; the script sets them and
re-executes itself when they are missing)::

    python benchmarks/ops.py                 # all sections, text tables
    python benchmarks/ops.py --markdown      # the README / docs/ops.md tables
    python benchmarks/ops.py --quick         # smoke test (tiny sizes, 3 rounds)

Sections (``--only fakequant,integer,wholenet,qat``; ``--only numerics`` adds
docs/numerics.md's table of the pure-TF quantizers on a 32x56x56x64 tensor):

1. fake quantization, forward + backward, 1M/4M/16M float32 elements. Every variant,
   the bound included, runs the same step on the same input: ``x`` and the upstream
   gradient ``dy`` are Variables, ``tape.watch(x)`` on the Variable, y and dx both
   returned (TF can neither prune the forward nor constant-fold), no extra copy. The
   bound is ``x * one`` (``one`` a Variable): forward reads x and writes y, backward reads
   dy and writes dx, 4 memory streams of n floats. Each row states its own stream count;
   ``streams / 4`` is the ratio a purely bandwidth-bound kernel would reach.
2. integer conv2d / depthwise / matmul (int8, int32 accumulation, shift requantization)
   against TF float32 on the same shapes, and against the TFLite int8 interpreter
   (ai_edge_litert, XNNPACK, same thread count) running the same layer. Each layer is
   timed inside a compiled graph (20 calls in one ``tf.while_loop``, per call; TFLite: 20
   ``invoke`` in a row, per call) and as one ``tf.function`` call, whose fixed cost is
   printed beside it; whole nets
   (``wholenet``): ``kerasq.integer.run`` on the nets of section 3 at batch 1 against the
   same calibrated model's int8 TFLite file.
3. one QAT training step at real size: caffe-jacinto MobileNet-0.5 (128x128, batch 16)
   and ResNet-20 (32x32, batch 64) converted from Caffe: float step, kerasq's default
   scheme, tfmot's default 8-bit scheme on the same model; calibration time per batch.
   Twice as many rounds as the other sections (42 by default). Falls back to a small CNN when the Caffe nets are not on the machine.

Timing: all variants of one table run in interleaved rounds (each round runs every
variant once, the order rotating), after warm-up; min and median over the rounds are
reported, ratios are against the baseline measured in the same rounds. No assertions:
this prints numbers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

_MALLOC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "137438953472"}

if __name__ == "__main__" and any(os.environ.get(k) != v for k, v in _MALLOC_ENV.items()):
    # glibc reads these at process start: re-execute with them set.
    os.execve(sys.executable, [sys.executable] + sys.argv, {**os.environ, **_MALLOC_ENV})

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kerasq._compat import keras, tf, tfmot  # noqa: E402

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_MODELS = os.environ.get("KERASQ_SHARED_MODELS", os.path.join(
    os.environ.get("KERASQ_SHARED", os.path.join(os.path.dirname(_REPO), "shared")),
    "caffe-models"))


class Timings:
    """Per-variant lists of wall times (seconds) from interleaved rounds."""

    def __init__(self, times: Dict[str, List[float]]):
        self.times = times

    def min(self, name: str) -> float:
        return min(self.times[name])

    def median(self, name: str) -> float:
        return statistics.median(self.times[name])


def interleaved(fns: Dict[str, Callable[[], object]], rounds: int, warmup: int = 2) -> Timings:
    """Runs every fn once per round (order rotating each round) and records its time."""
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            _block(fns[name]())
    times: Dict[str, List[float]] = {name: [] for name in names}
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            t0 = time.perf_counter()
            _block(fns[name]())
            times[name].append(time.perf_counter() - t0)
    return Timings(times)


def _block(out: object) -> None:
    """Force completion (eager results are computed already; touch one element)."""
    first = out[0] if isinstance(out, (tuple, list)) else out
    if hasattr(first, "numpy"):
        tf.reshape(first, [-1])[:1].numpy()


def _threads() -> int:
    return tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count() or 1


def _load_note() -> str:
    try:
        return f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    except OSError:
        return f"{os.cpu_count()} cores"


# ---------------------------------------------------------------- output


class Table:
    """A result table printed as text or as a Markdown (README) table."""

    def __init__(self, title: str, header: List[str], notes: str = ""):
        self.title, self.header, self.notes = title, header, notes
        self.rows: List[List[str]] = []

    def add(self, row: List[str]) -> None:
        self.rows.append(row)

    def render(self, markdown: bool) -> str:
        if markdown:
            lines = [f"{self.title}:", "", "| " + " | ".join(self.header) + " |",
                     "|" + "---|" * len(self.header)]
            lines += ["| " + " | ".join(r) + " |" for r in self.rows]
            if self.notes:
                lines += ["", self.notes]
            return "\n".join(lines) + "\n"
        widths = [max(len(str(c)) for c in col) for col in zip(self.header, *self.rows)]
        fmt = "  ".join(f"{{:{'<' if i == 0 else '>'}{w}s}}" for i, w in enumerate(widths))
        lines = [f"== {self.title}", fmt.format(*self.header)]
        lines += [fmt.format(*r) for r in self.rows]
        if self.notes:
            lines.append(self.notes)
        return "\n".join(lines) + "\n"


def _ratio_cell(t: Timings, name: str, base: str) -> str:
    """'min-ratio (median-ratio)' of name against base."""
    return f"{t.min(name) / t.min(base):.2f} ({t.median(name) / t.median(base):.2f})"


def _ms_cell(t: Timings, name: str) -> str:
    return f"{t.min(name) * 1e3:.2f} ({t.median(name) * 1e3:.2f}) ms"


# ---------------------------------------------------------------- 0. numerics (TF path)


def bench_numerics(shape: Tuple[int, ...], rounds: int) -> Table:
    """docs/numerics.md's speed table: the pure-TF quantizers of ``kerasq.numerics``
    (forward only) in a ``tf.function`` and under ``jit_compile=True``, against TF's fused
    ``fake_quant_with_min_max_vars`` on the same float32 tensor."""
    from kerasq.numerics import dfp_quantize, minifloat_quantize

    x = tf.Variable(tf.random.stateless_normal(shape, seed=[0, 1]))
    lo, hi = tf.constant(-8.0), tf.constant(7.9375)

    def fn(body: Callable, jit: bool = False) -> Callable:
        compiled = tf.function(body, jit_compile=jit)
        return lambda: compiled(x)

    def dfp(v):
        return dfp_quantize(v, 8, 4)

    def minifloat(v):
        return minifloat_quantize(v, 5, 10)

    fns = {
        "TF's fused `fake_quant_with_min_max_vars`":
            fn(lambda v: tf.quantization.fake_quant_with_min_max_vars(v, lo, hi)),
        "`dfp_quantize` in a `tf.function`": fn(dfp),
        "`minifloat_quantize` in a `tf.function`": fn(minifloat),
        "`dfp_quantize` under `jit_compile=True`": fn(dfp, True),
        "`minifloat_quantize` under `jit_compile=True`": fn(minifloat, True),
    }
    t = interleaved(fns, rounds)
    dims = "×".join(str(d) for d in shape)
    table = Table(f"kerasq.numerics on a {dims} float32 tensor, forward, min (median) over "
                  f"{rounds} interleaved rounds, {_threads()} threads, {_load_note()}",
                  ["path", "time"])
    for name in fns:
        table.add([name, _ms_cell(t, name)])
    return table


# ---------------------------------------------------------------- 1. fake quant

# Memory streams of n elements per forward + backward step ("-": a multi-op TF graph).
# bound: fwd x->y, bwd dy->dx. Clipped straight-through kernels: the backward also reads
# x (5, TF's FakeQuantWithMinMaxVars), or a 1-bit clip mask written by the forward
# (4 + 2/32 = 4.06, kerasq's C++ ops).


def fake_quant_variants(per_channel: int) -> Dict[str, Tuple[Callable, str]]:
    """name -> (f(x) -> y, stream count) for the fake-quant table."""
    import kerasq.numerics as numerics
    import kerasq.ops as ops

    one = tf.Variable(1.0)
    qmin, qmax = tf.Variable(-8.0), tf.Variable(8.0 - 1 / 16)
    fl_c = tf.constant(np.arange(per_channel) % 7 + 1, tf.int32)
    # kerasq's C++ forward writes a 1-bit clip mask that the backward reads instead of x.
    streams = "4.06" if ops.custom_kernels_loaded() else "-"
    return {
        "x*1.0 (bound)": (lambda x: x * one, "4"),
        "kerasq DFP C++": (lambda x: ops.fake_quant_dfp(x, 8, 4), streams),
        "kerasq DFP C++, per-channel": (lambda x: ops.fake_quant_dfp(x, 8, fl_c), streams),
        "kerasq DFP fallback": (lambda x: numerics.dfp_quantize(x, 8, 4), "-"),
        "TF FakeQuantWithMinMaxVars": (lambda x: tf.quantization.fake_quant_with_min_max_vars(
            x, qmin, qmax, num_bits=8), "5"),
        "kerasq minifloat C++": (lambda x: ops.fake_quant_minifloat(x, 4, 3), streams),
        "kerasq minifloat fallback": (lambda x: numerics.minifloat_quantize(x, 4, 3), "-"),
    }


def fake_quant_step(f: Callable, x: "tf.Variable", dy: "tf.Variable") -> Callable:
    """tf.function of one forward + backward of f at x with upstream gradient dy."""

    def step():
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = f(x)
        return y, tape.gradient(y, x, output_gradients=dy)

    return tf.function(step)


def bench_fake_quant(sizes: List[int], rounds: int) -> Table:
    import kerasq.ops as ops

    channels = 64
    variants = fake_quant_variants(channels)
    labels = [f"{n / 2**20:g}M" if n >= 2**20 else f"{n // 1024}K" for n in sizes]
    table = Table(
        f"Fake quantization, forward + backward, float32, time / `x*1.0` bound "
        f"(min over {rounds} interleaved rounds, median in parentheses; "
        f"C++ kernels loaded: {ops.custom_kernels_loaded()}, {_threads()} threads, {_load_note()})",
        ["variant", "streams", "floor"] + labels,
        notes=("streams: memory streams of n floats per step (the bound: 4; kerasq's C++ "
               "ops: x, y, dy, dx and a 1-bit clip mask written forward and read backward); "
               "floor = streams / 4, the ratio of a purely bandwidth-bound kernel. Per-channel: "
               f"x of shape [n/{channels}, {channels}], one fractional length per channel."))
    cells: Dict[str, List[str]] = {name: [] for name in variants}
    base = "x*1.0 (bound)"
    for n in sizes:
        x = tf.Variable(tf.random.stateless_normal([n // channels, channels], [1, 2]) * 3)
        dy = tf.Variable(tf.random.stateless_normal([n // channels, channels], [3, 4]))
        fns = {name: fake_quant_step(f, x, dy) for name, (f, _) in variants.items()}
        t = interleaved(fns, rounds)
        for name in variants:
            cells[name].append(_ms_cell(t, name) if name == base else _ratio_cell(t, name, base))
    for name, (_, streams) in variants.items():
        floor = "1.00" if streams == "4" else ("-" if streams == "-" else
                                               f"{float(streams) / 4:.2f}")
        table.add([name, streams, floor] + cells[name])
    return table


# ---------------------------------------------------------------- 2. integer kernels


def _tflite_layer(layer_fn, in_shape, threads: int):
    """Interpreter of a one-layer int8 TFLite model (representative-dataset calibration)."""
    import warnings

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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        content = conv.convert()
    interp = Interpreter(model_content=content, num_threads=threads)
    interp.allocate_tensors()
    detail = interp.get_input_details()[0]
    interp.set_tensor(detail["index"], rng.integers(-128, 128, in_shape).astype(np.int8))
    return interp


def integer_cases(quick: bool) -> List[Tuple[str, Callable, Callable, Callable, tuple]]:
    """(label, kerasq int fn, TF float32 fn, keras layer factory, input shape) per layer."""
    import kerasq.ops as ops

    rng = np.random.default_rng(0)
    cases = []
    convs = [(1, 56, 56, 64, 3, 64), (1, 28, 28, 128, 3, 128), (8, 32, 32, 32, 3, 64),
             (1, 14, 14, 256, 3, 256)]
    dws = [(1, 56, 56, 128), (1, 28, 28, 256)]
    mms = [(256, 1024, 1024), (64, 4096, 1000)]
    if quick:
        convs, dws, mms = [(1, 8, 8, 16, 3, 16)], [(1, 8, 8, 16)], [(8, 64, 32)]
    for b, h, w, c, k, n in convs:
        x = tf.constant(rng.integers(-128, 128, (b, h, w, c)).astype(np.int8))
        wq = tf.constant(rng.integers(-127, 128, (k, k, c, n)).astype(np.int8))
        bias = tf.constant(rng.integers(-1000, 1000, n).astype(np.int32))
        xf, wf, bf = tf.cast(x, tf.float32), tf.cast(wq, tf.float32), tf.cast(bias, tf.float32)
        cases.append((
            f"conv2d {b}x{h}x{w}x{c}, {k}x{k}x{c}x{n} SAME",
            lambda x=x, wq=wq, bias=bias: ops.dfp_conv2d(
                x, wq, bias, x_frac=4, w_frac=6, out_frac=3, padding="SAME"),
            lambda xf=xf, wf=wf, bf=bf: tf.nn.bias_add(tf.nn.conv2d(xf, wf, 1, "SAME"), bf),
            lambda n=n, k=k: keras.layers.Conv2D(n, k, padding="same"), (b, h, w, c)))
    for b, h, w, c in dws:
        x = tf.constant(rng.integers(-128, 128, (b, h, w, c)).astype(np.int8))
        wq = tf.constant(rng.integers(-127, 128, (3, 3, c, 1)).astype(np.int8))
        xf, wf = tf.cast(x, tf.float32), tf.cast(wq, tf.float32)
        cases.append((
            f"depthwise {b}x{h}x{w}x{c}, 3x3 SAME",
            lambda x=x, wq=wq: ops.dfp_depthwise_conv2d(
                x, wq, x_frac=4, w_frac=6, out_frac=3, padding="SAME"),
            lambda xf=xf, wf=wf: tf.nn.depthwise_conv2d(xf, wf, [1, 1, 1, 1], "SAME"),
            lambda: keras.layers.DepthwiseConv2D(3, padding="same"), (b, h, w, c)))
    for m, kk, n in mms:
        x = tf.constant(rng.integers(-128, 128, (m, kk)).astype(np.int8))
        wq = tf.constant(rng.integers(-127, 128, (kk, n)).astype(np.int8))
        xf, wf = tf.cast(x, tf.float32), tf.cast(wq, tf.float32)
        cases.append((
            f"matmul {m}x{kk} · {kk}x{n}",
            lambda x=x, wq=wq: ops.dfp_matmul(x, wq, x_frac=4, w_frac=6, out_frac=3),
            lambda xf=xf, wf=wf: tf.matmul(xf, wf),
            lambda n=n: keras.layers.Dense(n), (m, kk)))
    return cases


def _call_only(fn: Callable[[], object]) -> Callable[[], None]:
    """fn's call timed as TFLite's ``invoke`` is: without reading the result back.

    TF runs these CPU ops synchronously, so the tensor a ``tf.function`` returns is complete
    when the call returns; :func:`_block`'s read (three more eager ops, 0.1-0.4 ms on the
    2-core machine) would be charged to kerasq and TF float32 but not to the interpreter.
    """
    def call() -> None:
        fn()
    return call


IN_GRAPH_REPEATS = 20


def _in_graph(fn: Callable[[], "tf.Tensor"], repeats: int) -> Callable[[], None]:
    """``repeats`` calls of the op inside one compiled ``tf.while_loop``: the layer as it
    runs inside a graph (``kerasq.integer.prepare``'s program), without the Python
    ``tf.function`` call per layer. Each iteration also slices one element of the result
    into the loop's carry (so nothing is pruned), about 0.01 ms, charged to the layer.
    """
    @tf.function
    def loop():
        def body(i, acc):
            y = fn()
            return i + 1, acc + tf.cast(tf.reshape(y, [-1])[0], tf.int64)
        return tf.while_loop(lambda i, acc: i < repeats, body,
                             (tf.constant(0), tf.constant(0, tf.int64)))

    def call() -> None:
        loop()
    return call


def _invoke_repeated(interp, repeats: int) -> Callable[[], None]:
    """``repeats`` calls of the interpreter's ``invoke`` (timed per call as :func:`_in_graph`)."""
    def call() -> None:
        for _ in range(repeats):
            interp.invoke()
    return call


def bench_integer(rounds: int, quick: bool) -> Table:
    import kerasq.ops as ops

    threads, repeats = _threads(), IN_GRAPH_REPEATS
    floor_fn = tf.function(lambda x=tf.zeros([1, 8, 8, 16], tf.int8): tf.identity(x))
    floor = interleaved({"floor": _call_only(floor_fn)}, rounds)
    table = Table(
        f"Integer layers (int8 in and weights, int32 accumulation, 8-bit requantized output) "
        f"vs TF float32 and the TFLite int8 interpreter (XNNPACK), {threads} threads, min "
        f"(median) over {rounds} interleaved rounds; C++ kernels loaded: "
        f"{ops.custom_kernels_loaded()}, {_load_note()}",
        ["layer", "kerasq int, in graph", "TF float32, in graph", "TFLite int8",
         "kerasq / TFLite", "float32 / kerasq", "kerasq int, one call", "one call / TFLite"],
        notes=(f"In graph: per layer, {repeats} calls of the op in one compiled "
               f"`tf.while_loop` (how the layers run in `kerasq.integer.prepare`'s program; "
               f"each iteration also slices one element into the loop's carry, ~0.01 ms, "
               f"charged to the layer); TFLite: per `invoke` of {repeats} in a row. One call: "
               f"a `tf.function` call of the op alone, as an eager user calls it; a "
               f"`tf.function` returning `tf.identity(x)` took {floor.min('floor') * 1e3:.2f} "
               f"({floor.median('floor') * 1e3:.2f}) ms in this run, a floor under every "
               f"one-call time. No read-back of results."))
    for label, int_fn, f32_fn, layer, shape in integer_cases(quick):
        lite = _tflite_layer(layer, shape, threads)
        t = interleaved({"int": _in_graph(int_fn, repeats), "f32": _in_graph(f32_fn, repeats),
                         "tflite": _invoke_repeated(lite, repeats),
                         "call": _call_only(tf.function(int_fn))}, rounds)
        for name in ("int", "f32", "tflite"):
            t.times[name] = [v / repeats for v in t.times[name]]
        table.add([label, _ms_cell(t, "int"), _ms_cell(t, "f32"), _ms_cell(t, "tflite"),
                   _ratio_cell(t, "int", "tflite"), _ratio_cell(t, "f32", "int"),
                   _ms_cell(t, "call"), _ratio_cell(t, "call", "tflite")])
    return table


def bench_whole_nets(rounds: int, quick: bool) -> Table:
    """kerasq.integer.run on whole converted nets against the same net's int8 TFLite file."""
    import warnings

    import kerasq
    import kerasq.integer
    from ai_edge_litert.interpreter import Interpreter

    from kerasq.export import to_tflite

    threads = _threads()
    table = Table(
        f"Whole nets, batch 1: `kerasq.integer.run` against the same calibrated model's int8 "
        f"TFLite file (`kerasq.export.to_tflite`, TFLite interpreter, {threads} threads), min "
        f"(median) over {rounds} interleaved rounds, {_load_note()}",
        ["net", "kerasq.integer.run", "integer.prepare(...)(x)", "program.run_eager(x)",
         "TFLite int8 file", "run / TFLite", "prepared / TFLite"],
        notes=("`kerasq.integer.prepare(qmodel)` reads the integer weights and grids once; "
               "calling the program runs one `tf.function` graph traced once per input shape "
               "(integer tensors between the kernels, no Python per layer). "
               "`kerasq.integer.run` reuses the program it prepared for the model and "
               "compares the bytes of the model's variables with those it was prepared from "
               "on every call (one op). `program.run_eager(x)` runs the same layers one by one on numpy int64 "
               "values (the reference path). All three give the same results, bit for bit."))
    rng = np.random.default_rng(0)
    for label, factory, shape, _ in qat_nets(quick):
        label = label.split(",")[0]
        x = rng.uniform(0, 255 if not quick else 1, (1,) + shape[1:]).astype(np.float32)
        qmodel = kerasq.quantize_model(factory())
        kerasq.calibrate(qmodel, np.concatenate([x] * 4), batch_size=4)
        fns: Dict[str, Callable[[], object]] = {}
        notes: Dict[str, str] = {}
        try:
            program = kerasq.integer.prepare(qmodel)
            y = program(x)
            if not (np.array_equal(y, kerasq.integer.run(qmodel, x))
                    and np.array_equal(y, program.run_eager(x))):
                raise RuntimeError("compiled program, integer.run and run_eager differ")
            fns["int"] = lambda qmodel=qmodel, x=x: kerasq.integer.run(qmodel, x)
            fns["prepared"] = lambda program=program, x=x: program(x)
            fns["eager"] = lambda program=program, x=x: program.run_eager(x)
        except Exception as err:  # an unsupported layer: report it, time the rest
            notes["int"] = notes["prepared"] = notes["eager"] = (
                f"n/a ({str(err).splitlines()[0][:70]})")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                blob = to_tflite(qmodel, representative_data=np.concatenate([x] * 4))
            interp = Interpreter(model_content=blob, num_threads=threads)
            interp.allocate_tensors()
            detail = interp.get_input_details()[0]
            interp.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
            fns["tflite"] = interp.invoke
        except Exception as err:
            notes["tflite"] = f"n/a ({str(err).splitlines()[0][:70]})"
        t = interleaved(fns, rounds) if fns else None
        cells = [notes.get(k) or _ms_cell(t, k) for k in ("int", "prepared", "eager", "tflite")]
        ratios = [_ratio_cell(t, k, "tflite") if k in fns and "tflite" in fns else "-"
                  for k in ("int", "prepared")]
        table.add([label] + cells + ratios)
    return table


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


def qat_nets(quick: bool) -> List[Tuple[str, Callable[[], "keras.Model"], tuple, int]]:
    """(label, model factory, NHWC batch shape, classes) of the nets the QAT table times."""
    from kerasq.converters import caffe

    if quick:
        return [("small CNN 32x32x3, batch 4", _small_cnn, (4, 32, 32, 3), 10)]
    nets = []
    mobilenet = os.path.join(SHARED_MODELS, "jacinto", "imagenet-mobilenet0.5")
    if os.path.isdir(mobilenet):
        tmp = tempfile.mkdtemp(prefix="kerasq-bench-")
        weights = os.path.join(tmp, "mobilenet0.5.caffemodel")
        subprocess.run([sys.executable, os.path.join(SHARED_MODELS, "jacinto", "make_weights.py"),
                        os.path.join(mobilenet, "deploy.prototxt"), weights, "5", "new"],
                       check=True, capture_output=True)
        nets.append(("caffe-jacinto MobileNet-0.5, 128x128, batch 16", lambda: caffe.load(
            os.path.join(mobilenet, "deploy.prototxt"), weights,
            input_shape={"data": [1, 3, 128, 128]}), (16, 128, 128, 3), None))
    resnet = os.path.join(SHARED_MODELS, "resnet20-cifar10")
    if os.path.isdir(resnet):
        nets.append(("ResNet-20 (CIFAR-10), 32x32, batch 64", lambda: caffe.load(
            os.path.join(resnet, "deploy_generated.prototxt"),
            os.path.join(resnet, "ResNet_20.caffemodel"),
            input_shape={"Data1": [1, 3, 32, 32]}), (64, 32, 32, 3), None))
    if not nets:
        nets.append(("small CNN 32x32x3, batch 64 (Caffe nets not found)", _small_cnn,
                     (64, 32, 32, 3), 10))
    return nets


def qat_step(model: "keras.Model", x: "tf.Tensor") -> Callable:
    """tf.function of one SGD step on a mean-squared loss against a fixed target."""
    opt = keras.optimizers.SGD(0.001)
    target = tf.zeros_like(model(x[:1]))
    target = tf.zeros([x.shape[0]] + target.shape[1:], target.dtype)

    def step():
        with tf.GradientTape() as tape:
            out = model(x, training=True)
            loss = tf.reduce_mean(tf.square(out - target))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    return tf.function(step)


def bench_qat(rounds: int, quick: bool) -> Table:
    import kerasq

    table = Table(
        f"One QAT training step (forward, backward, SGD update), min (median) over {rounds} "
        f"interleaved rounds, {_threads()} threads, {_load_note()}",
        ["net", "float step", "kerasq default", "tfmot default 8-bit", "kerasq / float",
         "kerasq / tfmot", "kerasq calibration / batch"])
    kq = tfmot().quantization.keras
    notes = ["All three steps: the same input batch, SGD(0.001) on a mean-squared loss, "
             "one `tf.function` per model (no XLA); kerasq's model calibrated on that batch "
             "first. tfmot: `quantize_model`, or, for a model with layers its default "
             "registry does not support, tfmot's documented route for custom layers: "
             "`quantize_annotate_layer` on every layer `Default8BitQuantizeRegistry` "
             "supports, then `quantize_apply`; the other layers stay float."]

    def tfmot_default(model: "keras.Model") -> Tuple["keras.Model", str]:
        """tfmot's default 8-bit QAT model of ``model``, and how it was made ("" for
        plain ``quantize_model``)."""
        import re

        try:
            return kq.quantize_model(model), ""
        except (RuntimeError, ValueError) as err:  # a layer tfmot has no config for
            # "Layer data_bias:<class 'a.b.ConstantBias'> is not supported. You can ..."
            refusal = re.sub(r":?<class '(?:[\w.]*\.)?(\w+)'>", r" (\1)",
                             str(err).split(". ")[0])
            refusal = f"{type(err).__name__}: {refusal}"
        registry = kq.default_8bit.Default8BitQuantizeRegistry()
        layers = [lay for lay in model.layers if not isinstance(lay, keras.layers.InputLayer)]
        floats = [f"{lay.name} ({type(lay).__name__})" for lay in layers
                  if not registry.supports(lay)]

        def annotate(layer: "keras.layers.Layer") -> "keras.layers.Layer":
            clone = layer.__class__.from_config(layer.get_config())
            return kq.quantize_annotate_layer(clone) if registry.supports(layer) else clone

        with kq.quantize_scope():
            annotated = keras.models.clone_model(model, clone_function=annotate)
        annotated.set_weights(model.get_weights())
        return kq.quantize_apply(annotated), (
            f"`quantize_model` refuses it ({refusal}); timed: "
            f"{len(layers) - len(floats)} of {len(layers)} layers annotated, float: "
            f"{', '.join(floats)}")

    rng = np.random.default_rng(0)
    for label, factory, shape, _ in qat_nets(quick):
        x = tf.constant(rng.uniform(0, 255 if not quick else 1, shape).astype(np.float32))
        float_model = factory()
        steps = {"float": qat_step(float_model, x)}
        qmodel = kerasq.quantize_model(factory())
        # Per batch: the intervals between successive batch requests of one calibrate call
        # (the first, which includes tracing, left out); fixed: the rest of the call.
        batch = x.numpy()
        stamps: List[float] = []

        def timed_batches(count: int = 4 if quick else 7):
            for _ in range(count):
                stamps.append(time.perf_counter())
                yield batch
            stamps.append(time.perf_counter())

        t0 = time.perf_counter()
        kerasq.calibrate(qmodel, timed_batches(), batch_size=shape[0])
        total = time.perf_counter() - t0
        intervals = np.diff(stamps)[1:]
        calib = float(np.median(intervals))
        fixed = total - float(np.sum(intervals))
        stamps.clear()  # a second call on the same model reuses the traced graph
        t0 = time.perf_counter()
        kerasq.calibrate(qmodel, timed_batches(), batch_size=shape[0])
        fixed_again = time.perf_counter() - t0 - float(np.sum(np.diff(stamps)[1:]))
        steps["kerasq"] = qat_step(qmodel, x)
        tfmot_note = ""
        try:
            tmodel, how = tfmot_default(factory())
            steps["tfmot"] = qat_step(tmodel, x)
            if how:
                notes.append(f"tfmot on {label.split(',')[0]}: {how}.")
        except Exception as err:  # tfmot refuses even the annotated supported layers
            reason = str(err).splitlines()[0].replace("<", "").replace(">", "")
            tfmot_note = f"n/a ({reason[:70]})"
        t = interleaved(steps, rounds, warmup=3)
        table.add([label, _ms_cell(t, "float"), _ms_cell(t, "kerasq"),
                   tfmot_note or _ms_cell(t, "tfmot"), _ratio_cell(t, "kerasq", "float"),
                   tfmot_note or _ratio_cell(t, "kerasq", "tfmot"),
                   f"{calib * 1e3:.1f} ms (+ {fixed:.1f} s first call: tracing, finalization; "
                   f"+ {fixed_again:.1f} s later calls)"])
    table.notes = " ".join(notes)
    return table


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="fakequant,integer,wholenet,qat")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: tiny sizes and 3 rounds (numbers meaningless)")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--markdown", action="store_true",
                        help="print the README / docs/ops.md tables as Markdown")
    args = parser.parse_args(argv)
    if any(os.environ.get(k) != v for k, v in _MALLOC_ENV.items()):
        print("note: MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=137438953472 not set "
              "(run as a script to have them set)", file=sys.stderr)
    rounds = args.rounds or (3 if args.quick else 21)
    parts = set(args.only.split(","))
    unknown = parts - {"numerics", "fakequant", "integer", "wholenet", "qat"}
    if unknown:
        parser.error(f"unknown section(s) {sorted(unknown)}")
    if "numerics" in parts:
        shape = (2, 8, 8, 16) if args.quick else (32, 56, 56, 64)
        print(bench_numerics(shape, rounds).render(args.markdown), flush=True)
    if "fakequant" in parts:
        sizes = [2**16] if args.quick else [2**20, 2**22, 2**24]
        print(bench_fake_quant(sizes, rounds).render(args.markdown), flush=True)
    if "integer" in parts:
        print(bench_integer(rounds, args.quick).render(args.markdown), flush=True)
    if "wholenet" in parts:
        print(bench_whole_nets(rounds, args.quick).render(args.markdown), flush=True)
    if "qat" in parts:
        # twice the rounds: a QAT step is 0.1-0.2 s and varies by a few % from round to
        # round on 2 cores, the size of the differences this table is about
        print(bench_qat(max(3, 2 * rounds), args.quick).render(args.markdown), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
