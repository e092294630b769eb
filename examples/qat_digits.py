"""Quantization-aware training with 4-bit weights, starting from calibrated ranges.

    python examples/qat_digits.py

4-bit per-channel DFP weights lose accuracy after post-training quantization; a few
epochs of QAT (stochastic rounding of weights in training, nearest at inference,
straight-through gradients) recover it.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks"))

import kerasq
from kerasq._compat import keras
from accuracy import accuracy, load_digits_split, train_float


def main() -> None:
    x_tr, y_tr, x_te, y_te = load_digits_split()
    model = train_float(x_tr, y_tr, epochs=30)
    config = kerasq.QuantizationConfig(bitwidth_weights=4, bitwidth_activations=8)

    qmodel = kerasq.calibrate(kerasq.quantize_model(model, config), x_tr)
    print(f"float {accuracy(model, x_te, y_te):.2f} %   4/8 PTQ {accuracy(qmodel, x_te, y_te):.2f} %")

    qmodel.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", ["accuracy"])
    qmodel.fit(x_tr, y_tr, batch_size=64, epochs=5, verbose=2)
    print(f"4/8 after QAT {accuracy(qmodel, x_te, y_te):.2f} %")


if __name__ == "__main__":
    main()
