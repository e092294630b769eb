"""Post-training quantization in two calls, on scikit-learn's handwritten digits.

    python examples/ptq_digits.py

Trains a small float CNN, quantizes it to symmetric power-of-two DFP 8/8 (kerasq's
default: TFLite-int8 exportable), calibrates on training images, compares accuracy and
saves/reloads the quantized model.
"""

from __future__ import annotations

import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks"))

import kerasq
from accuracy import accuracy, load_digits_split, train_float


def main() -> None:
    x_tr, y_tr, x_te, y_te = load_digits_split()
    model = train_float(x_tr, y_tr, epochs=30)

    qmodel = kerasq.quantize_model(model)            # DFP 8/8, BN folded
    kerasq.calibrate(qmodel, x_tr, verbose=1)        # ranges -> fractional lengths

    print(f"float {accuracy(model, x_te, y_te):.2f} %   DFP 8/8 {accuracy(qmodel, x_te, y_te):.2f} %")
    path = os.path.join(tempfile.mkdtemp(), "digits_dfp8.h5")
    qmodel.save(path)
    print(f"reloaded: {accuracy(kerasq.load_model(path), x_te, y_te):.2f} %  ({path})")


if __name__ == "__main__":
    main()
