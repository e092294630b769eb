"""Prune a digits CNN to ~80 % zeros, QAT it at 8 bits while pruning continues, export to TFLite.

Data: scikit-learn's real handwritten digits (8x8 grey images, 1797 samples), fixed split.
Stages, each evaluated on the same held-out images:

1. float dense     - a small CNN trained normally;
2. pruned (float)  - ``kerasq.prune.prune_model`` + ``PruningCallback(PolynomialDecay)`` to
                     ``--float-sparsity``, then ``strip``;
3. pruned + QAT    - ``kerasq.quantize_model`` (8-bit DFP; sparsity preserved automatically
                     because the kernels have exact zeros) and QAT during which pruning goes
                     on to ``--final-sparsity``;
4. TFLite          - ``kerasq.export.to_tflite`` (int8); if that exporter cannot convert the
                     model in this build, the QAT weights are exported with the TFLite
                     converter's own int8 quantization instead and the row says so.

Sparsity = exact zeros / count over all kernels (Keras weights, or the int8/float weight
tensors read back from the .tflite file with ``ai_edge_litert``).

Run:  python examples/prune_qat_digits.py            (about a minute on 2 CPU cores)
      python examples/prune_qat_digits.py --quick    (smoke test)
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from typing import Any, List, Tuple

import numpy as np

import kerasq
import kerasq.prune as kp
from kerasq._compat import keras, tf
from kerasq.schemes import slots

log = logging.getLogger("kerasq.examples.prune_qat_digits")


def load_digits_split(seed: int = 0) -> Tuple[np.ndarray, ...]:
    """Digits as (N, 8, 8, 1) in [0, 1] with one-hot labels; 75 % train / 25 % test."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)[..., None]
    y = keras.utils.to_categorical(data.target, 10).astype(np.float32)
    order = np.random.default_rng(seed).permutation(len(x))
    split = int(0.75 * len(x))
    train, test = order[:split], order[split:]
    return x[train], y[train], x[test], y[test]


def build_model() -> Any:
    inp = keras.Input((8, 8, 1), name="image")
    h = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv1")(inp)
    h = keras.layers.Conv2D(32, 3, activation="relu", name="conv2")(h)
    h = keras.layers.MaxPooling2D(2, name="pool")(h)
    h = keras.layers.Flatten(name="flatten")(h)
    h = keras.layers.Dense(64, activation="relu", name="fc1")(h)
    out = keras.layers.Dense(10, name="logits")(h)
    return keras.Model(inp, out, name="digits_cnn")


def compile_model(model: Any, lr: float) -> None:
    model.compile(
        keras.optimizers.Adam(lr),
        keras.losses.CategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def accuracy(model: Any, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(model.predict(x, verbose=0), -1) == np.argmax(y, -1)))


def keras_sparsity(model: Any) -> float:
    rows = kp.sparsity_report(model, quantized=False)
    return sum(r.zeros for r in rows) / sum(r.count for r in rows)


KERNEL_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "FULLY_CONNECTED")


def tflite_kernels(content: bytes) -> List[np.ndarray]:
    """The weight tensor (input 1) of every conv / depthwise / transposed conv / FC op."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=content)
    interpreter.allocate_tensors()
    return [
        interpreter.get_tensor(int(op["inputs"][1])).copy()
        for op in interpreter._get_ops_details()
        if op["op_name"] in KERNEL_OPS
    ]


def tflite_accuracy(content: bytes, x: np.ndarray, y: np.ndarray) -> float:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=content)
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    interpreter.resize_tensor_input(inp["index"], [len(x), 8, 8, 1])
    interpreter.allocate_tensors()
    xin = x
    if inp["dtype"] == np.int8:
        scale, zero = inp["quantization"]
        xin = np.clip(np.round(x / scale + zero), -128, 127).astype(np.int8)
    interpreter.set_tensor(inp["index"], xin)
    interpreter.invoke()
    logits = interpreter.get_tensor(out["index"]).astype(np.float32)
    return float(np.mean(np.argmax(logits, -1) == np.argmax(y, -1)))


def fallback_tflite(qmodel: Any, x_rep: np.ndarray) -> bytes:
    """int8 TFLite of the QAT model's (already quantized, masked) weights via the converter."""
    float_model = build_model()
    quantized = {}
    for layer in qmodel.layers:
        for slot in slots.weight_slots(layer):
            quantized[(slot.layer.name, slot.attr)] = np.asarray(
                slot.quantizer(slot.weight, False, weights=slot.variables)
            )
    for layer in float_model.layers:
        if not layer.weights:
            continue
        source = next(q for q in qmodel.layers if getattr(q, "layer", q).name == layer.name)
        inner = getattr(source, "layer", source)
        values = {w.name.split("/")[-1].split(":")[0]: w.numpy() for w in inner.weights}
        values.update({k[1]: v for k, v in quantized.items() if k[0] == layer.name})
        layer.set_weights([values[w.name.split("/")[-1].split(":")[0]] for w in layer.weights])
    converter = tf.lite.TFLiteConverter.from_keras_model(float_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x_rep[i : i + 1]] for i in range(len(x_rep)))
    return converter.convert()


def run(args: argparse.Namespace) -> List[Tuple[str, float, float, str]]:
    keras.utils.set_random_seed(args.seed)
    x_train, y_train, x_test, y_test = load_digits_split(args.seed)
    steps_per_epoch = int(np.ceil(len(x_train) / args.batch_size))
    rows: List[Tuple[str, float, float, str]] = []
    fit = dict(batch_size=args.batch_size, verbose=0)

    model = build_model()
    compile_model(model, 3e-3)
    model.fit(x_train, y_train, epochs=args.float_epochs, **fit)
    rows.append(("float dense", accuracy(model, x_test, y_test), keras_sparsity(model), "Keras"))
    log.info("float: %s", rows[-1])

    pruned = kp.prune_model(model)
    compile_model(pruned, 1e-3)
    end = max(1, (args.prune_epochs - 1) * steps_per_epoch)
    schedule = kp.PolynomialDecay(
        0.0, args.float_sparsity, begin_step=0, end_step=end, frequency=max(1, end // 10)
    )
    pruned.fit(
        x_train, y_train, epochs=args.prune_epochs, callbacks=[kp.PruningCallback(schedule)], **fit
    )
    sparse_float = kp.strip(pruned)
    rows.append(
        (
            "pruned (float)",
            accuracy(sparse_float, x_test, y_test),
            keras_sparsity(sparse_float),
            "Keras",
        )
    )
    log.info("pruned: %s", rows[-1])

    qmodel = kerasq.quantize_model(
        sparse_float, kerasq.QuantizationConfig(bitwidth_weights=8, bitwidth_activations=8)
    )
    kerasq.calibrate(qmodel, x_train[:256])
    compile_model(qmodel, 5e-4)
    end = max(1, (args.qat_epochs - 1) * steps_per_epoch)
    more = kp.PolynomialDecay(
        args.float_sparsity,
        args.final_sparsity,
        begin_step=0,
        end_step=end,
        frequency=max(1, end // 5),
    )
    report = kp.SparsityReportCallback(every_epochs=None, at_end=True, print_fn=log.info)
    qmodel.fit(
        x_train,
        y_train,
        epochs=args.qat_epochs,
        callbacks=[kp.PruningCallback(more), report],
        **fit,
    )
    rows.append(
        (
            "pruned + 8-bit QAT",
            accuracy(qmodel, x_test, y_test),
            keras_sparsity(qmodel),
            "Keras (fake-quant)",
        )
    )
    log.info("qat: %s", rows[-1])

    with tempfile.TemporaryDirectory() as tmp:  # save/load round trip, as a user would
        path = os.path.join(tmp, "digits_pruned_qat.h5")
        qmodel.save(path)
        qmodel = kerasq.load_model(path)

    how = "kerasq.export.to_tflite int8"
    try:
        import importlib

        content = importlib.import_module("kerasq.export").to_tflite(
            qmodel, representative_data=x_train[:256]
        )
    except Exception as err:  # noqa: BLE001 - another module; keep the example useful
        log.warning("kerasq.export.to_tflite failed (%s); using the TFLite converter's int8", err)
        how = "TFLite converter int8 of the QAT weights (kerasq.export unavailable)"
        content = fallback_tflite(qmodel, x_train[:256])
    weights = tflite_kernels(content)
    dtypes = sorted({str(w.dtype) for w in weights})
    how += f" ({'/'.join(dtypes)} weights, {len(weights)} kernels)"
    zeros = sum(int(np.count_nonzero(w == 0)) for w in weights)
    total = sum(int(w.size) for w in weights)
    rows.append(("TFLite", tflite_accuracy(content, x_test, y_test), zeros / max(total, 1), how))
    if args.output:
        with open(args.output, "wb") as f:
            f.write(content)
    return rows


def format_table(rows: List[Tuple[str, float, float, str]]) -> str:
    lines = ["| stage | test accuracy | kernel sparsity | measured on |", "|---|---|---|---|"]
    for stage, acc, sparsity, where in rows:
        lines.append(f"| {stage} | {100 * acc:.2f} % | {100 * sparsity:.1f} % | {where} |")
    return "\n".join(lines)


def main(argv: Any = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 epoch per stage (smoke test)")
    parser.add_argument("--float-sparsity", type=float, default=0.7)
    parser.add_argument("--final-sparsity", type=float, default=0.8)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", help="also write the .tflite file here")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    args.float_epochs, args.prune_epochs, args.qat_epochs = (1, 2, 2) if args.quick else (15, 8, 4)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s"
    )
    print(format_table(run(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
