"""Regenerate kerasq's quantization accuracy table on real data (scikit-learn digits).

A small CNN is trained on 8x8 handwritten digits (1797 images, fixed 70/30 split),
then quantized with kerasq: post-training (quantize_model + calibrate on training
images) and quantization-aware training for 4-bit weights. Prints a Markdown table.

    python benchmarks/accuracy.py            # ~1-3 minutes on 2 CPU cores
    python benchmarks/accuracy.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

SEED = 1234


def load_digits_split() -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Digits as float32 NHWC in [0, 1], stratified 70/30 split with a fixed seed."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
    return x_tr, y_tr, x_te, y_te


def build_cnn() -> Any:
    """Conv-BN-ReLU x2, max pool, dense: a LeNet-sized digits classifier."""
    from kerasq._compat import keras

    inp = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(16, 3, padding="same", name="conv1")(inp)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.Conv2D(32, 3, padding="same", name="conv2")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    x = keras.layers.ReLU(name="relu2")(x)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(64, activation="relu", name="fc1")(x)
    x = keras.layers.Dense(10, name="logits")(x)
    out = keras.layers.Softmax(name="prob")(x)
    return keras.Model(inp, out, name="digits_cnn")


def train_float(x: np.ndarray, y: np.ndarray, epochs: int = 30) -> Any:
    from kerasq._compat import keras

    keras.utils.set_random_seed(SEED)
    model = build_cnn()
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy", ["accuracy"])
    model.fit(x, y, batch_size=64, epochs=epochs, verbose=0)
    return model


def accuracy(model: Any, x: np.ndarray, y: np.ndarray) -> float:
    pred = model.predict(x, batch_size=256, verbose=0)
    return float(np.mean(np.argmax(pred, axis=-1) == y) * 100.0)


def run(epochs: int = 30, qat_epochs: int = 5) -> List[Dict[str, Any]]:
    import kerasq
    from kerasq._compat import keras

    x_tr, y_tr, x_te, y_te = load_digits_split()
    model = train_float(x_tr, y_tr, epochs)
    float_acc = accuracy(model, x_te, y_te)
    rows = [{"scheme": "float32", "method": "-", "accuracy": float_acc}]
    ptq = [
        ("DFP 8/8 (weights per channel, activations per tensor)", kerasq.QuantizationConfig()),
        ("DFP 16/16", kerasq.QuantizationConfig(bitwidth_weights=16, bitwidth_activations=16)),
        ("minifloat E5M10", kerasq.QuantizationConfig(precision="minifloat")),
        ("DFP 8/8, Ristretto max-abs ranges", kerasq.QuantizationConfig(range_estimator="max_abs")),
        ("DFP 4/8", kerasq.QuantizationConfig(bitwidth_weights=4)),
    ]
    for name, cfg in ptq:
        q = kerasq.calibrate(kerasq.quantize_model(model, cfg), x_tr)
        rows.append({"scheme": name, "method": "PTQ", "accuracy": accuracy(q, x_te, y_te)})
    keras.utils.set_random_seed(SEED)
    cfg4 = kerasq.QuantizationConfig(bitwidth_weights=4)
    q4 = kerasq.calibrate(kerasq.quantize_model(model, cfg4), x_tr)
    q4.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", ["accuracy"])
    q4.fit(x_tr, y_tr, batch_size=64, epochs=qat_epochs, verbose=0)
    rows.append({"scheme": "DFP 4/8", "method": f"QAT ({qat_epochs} epochs)",
                 "accuracy": accuracy(q4, x_te, y_te)})
    for row in rows:
        row["delta"] = row["accuracy"] - float_acc
    return rows


def markdown(rows: List[Dict[str, Any]]) -> str:
    lines = ["| scheme (weights/activations bits) | method | test accuracy % | vs float |",
             "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['scheme']} | {r['method']} | {r['accuracy']:.2f} | "
                     f"{r['delta']:+.2f} |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--qat-epochs", type=int, default=5)
    parser.add_argument("--json", help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    start = time.time()
    rows = run(args.epochs, args.qat_epochs)
    print(markdown(rows))
    print(f"\n(sklearn digits, 1257 train / 540 test images; {time.time() - start:.0f} s)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main())
