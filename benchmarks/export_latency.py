"""Latency of kerasq's int8 TFLite file vs TFLite's own int8 post-training quantization of
the same float net (and the float file), in one run, interpreter at 1 thread.

    python benchmarks/export_latency.py [--runs 300] [--size 32]

Prints median latencies and the ratios int8/float and kerasq/TFLite-PTQ.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def small_cnn(size: int):
    from kerasq._compat import keras

    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((size, size, 3)),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ]
    )


def median_latency_ms(content: bytes, x: np.ndarray, runs: int) -> float:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=content, num_threads=1)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    sample = x[:1]
    if inp["dtype"] != np.float32:
        scale, zero = inp["quantization"]
        sample = np.clip(np.round(sample / scale) + zero, -128, 127).astype(inp["dtype"])
    interpreter.set_tensor(inp["index"], sample)
    for _ in range(20):
        interpreter.invoke()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - start)
    return 1000.0 * float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--size", type=int, default=32)
    args = parser.parse_args()

    import kerasq
    from kerasq._compat import tf
    from kerasq.export import to_tflite

    model = small_cnn(args.size)
    x = np.random.default_rng(0).uniform(0, 1, (256, args.size, args.size, 3)).astype(np.float32)

    float_file = to_tflite(model, target="float")
    qmodel = kerasq.quantize_model(model)
    kerasq.calibrate(qmodel, x[:128])
    kerasq_file = to_tflite(qmodel, target="int8")

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x[i : i + 1]] for i in range(128))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    tflite_ptq_file = converter.convert()

    rows = [
        ("float", float_file),
        ("TFLite PTQ int8", tflite_ptq_file),
        ("kerasq int8 (DFP, pow2 scales)", kerasq_file),
    ]
    results = {name: median_latency_ms(blob, x, args.runs) for name, blob in rows}
    print(f"small CNN {args.size}x{args.size}x3, 1 thread, median of {args.runs} runs")
    for name, blob in rows:
        print(f"  {name:32s} {results[name] * 1000:8.1f} us  {len(blob) / 1024:8.1f} KiB")
    f = results["float"]
    print(f"  ratio TFLite PTQ int8 / float   {results['TFLite PTQ int8'] / f:.2f}x")
    print(f"  ratio kerasq int8 / float       {results['kerasq int8 (DFP, pow2 scales)'] / f:.2f}x")
    print(
        f"  ratio kerasq / TFLite PTQ int8  "
        f"{results['kerasq int8 (DFP, pow2 scales)'] / results['TFLite PTQ int8']:.2f}x"
    )


if __name__ == "__main__":
    main()
