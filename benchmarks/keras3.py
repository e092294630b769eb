"""QAT step time: Keras 3 (TensorFlow backend) against the tf_keras path, same CNN.

The benchmark CNN of ``benchmarks/accuracy.py`` (conv-BN-ReLU x2, max pool, dense x2,
softmax) is built in Keras 3, copied to tf_keras with identical weights, quantized both
ways (DFP 8/8) and trained on digits; the median time of a training step (after a warm-up
epoch, over ``--epochs`` timed epochs) is printed per path with the ratio Keras 3 / tf_keras;
the two QAT paths are timed alternately ``--repeats`` times and the medians are printed.
The issue's target is a ratio <= 1.15 with Keras 3's default ``jit_compile`` ("auto",
which ``QuantizedLayer`` resolves to no XLA on TensorFlow); the float models' own step
times are printed for scale.

    python benchmarks/keras3.py                # ~1-2 minutes on 2 CPU cores
    python benchmarks/keras3.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Dict, List

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def build_keras3_cnn() -> Any:
    from kerasq._compat import keras3

    keras = keras3()
    keras.utils.set_random_seed(1234)
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


class _StepTimer:
    def __init__(self) -> None:
        self.times: List[float] = []
        self._t = 0.0

    def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
        self._t = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        self.times.append(time.perf_counter() - self._t)


def _timed_fit(model: Any, callback_base: Any, x: np.ndarray, y: np.ndarray, epochs: int,
               batch_size: int) -> float:
    timer = type("Timer", (_StepTimer, callback_base), {})()
    _StepTimer.__init__(timer)
    model.fit(x, y, epochs=1, batch_size=batch_size, verbose=0)  # warm-up: tracing
    model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0, callbacks=[timer])
    return float(np.median(timer.times))


def run(epochs: int = 3, batch_size: int = 64, repeats: int = 1) -> Dict[str, Any]:
    import kerasq
    from kerasq._compat import keras as tf_keras
    from kerasq._compat import keras3
    from kerasq.demo import load_digits_data
    from kerasq.keras3 import twin

    keras = keras3()
    x, y, _, _ = load_digits_data()
    model = build_keras3_cnn()
    tf_float = twin.to_tf_keras(model)
    q2 = kerasq.quantize_model(tf_float)
    kerasq.calibrate(q2, x[:256])
    q2.compile(tf_keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    result: Dict[str, Any] = {"batch_size": batch_size, "epochs_timed": epochs}
    # the frameworks' own float step, for scale
    tf_float.compile(tf_keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    result["float_tf_keras_step_ms"] = 1e3 * _timed_fit(tf_float, tf_keras.callbacks.Callback,
                                                        x, y, epochs, batch_size)
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy",
                  jit_compile=False)
    result["float_keras3_step_ms"] = 1e3 * _timed_fit(model, keras.callbacks.Callback, x, y,
                                                      epochs, batch_size)
    q3 = kerasq.quantize_model(model)
    kerasq.calibrate(q3, x[:256])
    q3.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    # the two QAT paths alternate, so a change in the machine's load hits both; the ratio
    # of each pair, then the median over the pairs
    tf_times, k3_times, ratios = [], [], []
    for _ in range(max(int(repeats), 1)):
        tf_times.append(1e3 * _timed_fit(q2, tf_keras.callbacks.Callback, x, y, epochs,
                                         batch_size))
        k3_times.append(1e3 * _timed_fit(q3, keras.callbacks.Callback, x, y, epochs,
                                         batch_size))
        ratios.append(k3_times[-1] / tf_times[-1])
    result["tf_keras_step_ms"] = float(np.median(tf_times))
    result["keras3_step_ms"] = float(np.median(k3_times))
    result["keras3_ratio"] = float(np.median(ratios))
    result["keras3_ratios"] = ratios
    return result


def main(argv: Any = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3,
                        help="alternating tf_keras / Keras 3 timings; medians are printed")
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args(argv)
    result = run(args.epochs, args.batch_size, args.repeats)
    print(f"tf_keras (tfmot) QAT step:        {result['tf_keras_step_ms']:.2f} ms")
    print(f"float step: tf_keras {result['float_tf_keras_step_ms']:.2f} ms, Keras 3 "
          f"{result['float_keras3_step_ms']:.2f} ms (ratio "
          f"{result['float_keras3_step_ms'] / result['float_tf_keras_step_ms']:.2f}x)")
    print(f"Keras 3 TF QAT step:              {result['keras3_step_ms']:.2f} ms"
          f"  ratio {result['keras3_ratio']:.2f}x (median of "
          f"{', '.join(f'{r:.2f}' for r in result['keras3_ratios'])})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
