"""The main job end to end on real handwritten digits (``kerasq demo``).

Steps: train a small CNN on scikit-learn's digits (8x8, 1797 images) -> write it as a Caffe
net with kerasq's own writer -> import it with :func:`kerasq.converters.caffe.load` (checked
against the Keras model) -> float TFLite -> PTQ DFP-8 (``quantize_model`` + ``calibrate``)
-> QAT with 50 % magnitude pruning (masks kept through training) -> int8 TFLite, verified
against the Keras model. Prints one table: accuracy, sparsity, size, latency.

Example:
    >>> rows = run_demo(epochs=2, out_dir="/tmp/kq")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
import time
from typing import Any, Callable, List, Optional

import numpy as np

log = logging.getLogger("kerasq.demo")

STEPS = ("data", "train", "caffe", "float", "ptq", "qat", "int8", "done")
#: What each step of :data:`STEPS` does, for progress lines.
STEP_LABELS = {
    "data": "loading digits",
    "train": "training the float CNN",
    "caffe": "writing + importing the Caffe net",
    "float": "float TFLite",
    "ptq": "post-training quantization",
    "qat": "QAT with pruning",
    "int8": "int8 TFLite export + verification",
    "done": "done",
}


def print_progress() -> Callable[[str], None]:
    """A ``progress`` callback for :func:`run_demo` printing ``[i/n] step (t = s)`` lines."""
    started = time.perf_counter()

    def progress(step: str) -> None:
        elapsed = time.perf_counter() - started
        if step == "done":
            print(f"done in {elapsed:.0f} s", flush=True)
        else:
            print(f"[{STEPS.index(step) + 1}/{len(STEPS) - 1}] {STEP_LABELS[step]} "
                  f"(t = {elapsed:.0f} s)", flush=True)

    return progress


@dataclasses.dataclass
class DemoRow:
    """One line of the demo table."""

    name: str
    accuracy: float
    sparsity: Optional[float] = None
    size_bytes: Optional[int] = None
    latency_ms: Optional[float] = None
    note: str = ""


def load_digits_data(seed: int = 0):
    """(x_train, y_train, x_test, y_test): digits as float32 NHWC in [0, 1], 75/25 split."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    cut = int(0.75 * len(x))
    return x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]


def build_cnn() -> Any:
    """A small Caffe-writable CNN: conv-relu-pool x2, dense."""
    from kerasq._compat import keras

    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1"),
            keras.layers.MaxPooling2D(2, name="pool1"),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2"),
            keras.layers.MaxPooling2D(2, name="pool2"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(10, name="fc"),
        ],
        name="digits_cnn",
    )


def _accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(logits, -1) == y))


def tflite_latency_ms(content: bytes, x: np.ndarray, *, repeats: int = 200) -> float:
    """Median single-image latency of a TFLite file at 1 thread, in milliseconds."""
    from kerasq.export.verify import TFLiteRunner

    runner = TFLiteRunner(content, num_threads=1)
    sample = x[:1]
    for _ in range(10):
        runner(sample)
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        runner(x[i % len(x) : i % len(x) + 1])
        times.append(time.perf_counter() - start)
    return 1000.0 * float(np.median(times))


def _kernel_sparsity(plan: Any) -> float:
    zeros = total = 0
    for layer in plan.model.layers:
        kernel = getattr(layer, "kernel_value", None)
        if kernel is not None:
            zeros += int(np.sum(kernel == 0))
            total += kernel.size
    return zeros / max(total, 1)


def run_demo(
    *,
    epochs: int = 15,
    qat_epochs: int = 3,
    sparsity: float = 0.5,
    out_dir: Optional[str] = None,
    seed: int = 0,
    progress: Optional[Callable[[str], None]] = None,
) -> List[DemoRow]:
    """Run the whole pipeline; returns the table rows. Files go to ``out_dir`` (or a temp
    dir that is removed afterwards)."""
    import kerasq
    from kerasq._compat import keras
    from kerasq.converters.caffe import load as load_caffe
    from kerasq.converters.caffe.writer import write_caffe
    from kerasq.errors import VerificationError
    from kerasq.export.tflite import export_tflite

    note = progress or (lambda step: None)
    cleanup = None
    if out_dir is None:
        cleanup = tempfile.TemporaryDirectory(prefix="kerasq-demo-")
        out_dir = cleanup.name
    os.makedirs(out_dir, exist_ok=True)
    try:
        keras.utils.set_random_seed(seed)
        note("data")
        x_train, y_train, x_test, y_test = load_digits_data(seed)
        note("train")
        model = build_cnn()
        model.compile(
            optimizer=keras.optimizers.Adam(3e-3),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        model.fit(x_train, y_train, epochs=epochs, batch_size=32, verbose=0)

        note("caffe")
        prototxt = os.path.join(out_dir, "digits.prototxt")
        caffemodel = os.path.join(out_dir, "digits.caffemodel")
        write_caffe(model, prototxt, caffemodel)
        converted = load_caffe(prototxt, caffemodel)
        ref = model.predict(x_test, verbose=0)
        got = np.asarray(converted.predict(x_test, verbose=0)).reshape(ref.shape)
        caffe_error = float(np.abs(got - ref).max())
        if caffe_error > 1e-4:
            raise VerificationError(
                f"the imported Caffe net differs from the Keras model by {caffe_error:.3g}",
                file=prototxt,
            )
        rows = []

        note("float")
        float_export = export_tflite(
            converted, os.path.join(out_dir, "float.tflite"), target="float"
        )
        rows.append(
            DemoRow(
                "float (Caffe import)",
                _accuracy(got, y_test),
                0.0,
                float_export.size,
                tflite_latency_ms(float_export.content, x_test),
                f"import max |diff| {caffe_error:.1e}",
            )
        )

        note("ptq")
        ptq = kerasq.quantize_model(converted)
        kerasq.calibrate(ptq, x_train[:512])
        rows.append(DemoRow("PTQ DFP-8 (Keras)", _accuracy(ptq.predict(x_test, verbose=0), y_test)))

        note("qat")
        import kerasq.prune as kp

        qat = kerasq.quantize_model(converted, preserve_sparsity=True)
        kerasq.calibrate(qat, x_train[:512])
        kp.one_shot_prune(qat, kp.ConstantSparsity(sparsity, 0))
        qat.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        qat.fit(x_train, y_train, epochs=qat_epochs, batch_size=32, verbose=0)
        qat_logits = qat.predict(x_test, verbose=0)

        note("int8")
        int8 = export_tflite(
            qat, os.path.join(out_dir, "digits_int8.tflite"), target="int8", verify_data=x_test
        )
        kernel_sparsity = _kernel_sparsity(int8.plan)
        rows.append(
            DemoRow(
                f"QAT DFP-8 + {int(100 * sparsity)}% pruning (Keras)",
                _accuracy(qat_logits, y_test),
                kernel_sparsity,
            )
        )
        from kerasq.export.verify import TFLiteRunner

        tfl_logits = TFLiteRunner(int8.content)(x_test)
        rows.append(
            DemoRow(
                "int8 TFLite (QAT+pruned)",
                _accuracy(tfl_logits, y_test),
                kernel_sparsity,
                int8.size,
                tflite_latency_ms(int8.content, x_test),
                int8.report.describe() if int8.report else "",
            )
        )
        note("done")
        return rows
    finally:
        if cleanup is not None:
            cleanup.cleanup()


def format_table(rows: List[DemoRow]) -> str:
    """The demo table as aligned text."""
    head = ("model", "accuracy", "sparsity", "size", "latency (1 thread)")
    lines = []
    for r in rows:
        lines.append(
            (
                r.name,
                f"{100 * r.accuracy:.2f}%",
                "" if r.sparsity is None else f"{100 * r.sparsity:.1f}%",
                "" if r.size_bytes is None else f"{r.size_bytes / 1024:.1f} KiB",
                "" if r.latency_ms is None else f"{1000 * r.latency_ms:.0f} us",
            )
        )
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(head)]
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths)), "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(line, widths)) for line in lines]
    notes = [f"  {r.name}: {r.note}" for r in rows if r.note]
    return "\n".join(out + (["notes:"] + notes if notes else []))


__all__ = [
    "DemoRow",
    "run_demo",
    "format_table",
    "load_digits_data",
    "build_cnn",
    "tflite_latency_ms",
    "STEPS",
    "STEP_LABELS",
    "print_progress",
]
