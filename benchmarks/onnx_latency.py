"""onnxruntime latency of kerasq's int8 QDQ ONNX file against the QOperator form of the same
net and against the float file, measured in the same run (CPU, 1 thread).

    python benchmarks/onnx_latency.py [--net lenet|mobilenet|jsegnet|all] [--runs 200]
        [--rounds 5]

Forms, per net:

* ``float``          — ``to_onnx(model)``;
* ``QDQ``            — ``to_onnx(qmodel, target="int8")`` (what kerasq writes);
* ``QOperator``      — the same file after onnxruntime's own QDQ fusion, saved
  (``SessionOptions.optimized_model_filepath``, level "extended"): QLinearConv /
  MatMulIntegerToFloat / QLinearAdd..., what a QOperator export with kerasq's scales holds;
* ``ORT QOperator``  — onnxruntime's ``quantize_static`` (QOperator, per-channel int8) of the
  float file on the same calibration images: an independently written QOperator file.

The machine may be loaded: the forms are timed in interleaved rounds (each round times every
form ``--runs`` times) and the script prints medians over all runs and the ratios to QDQ.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHARED = Path(os.environ.get("KERASQ_SHARED", Path(__file__).resolve().parents[3] / "shared"))


def lenet():
    from kerasq.converters.caffe import load

    from kerasq.demo import load_digits_data

    folder = SHARED / "caffe-models" / "lenet-mnist"
    model = load(folder / "lenet.prototxt", folder / "lenet_iter_10000.caffemodel",
                 input_shape={"data": [1, 1, 28, 28]})  # fmt: skip
    x_train, _, x_test, _ = load_digits_data()

    def mnist(x):  # 8x8 digits -> 28x28 in [0, 1]
        return np.pad(np.kron(x, np.ones((1, 3, 3, 1), np.float32)),
                      ((0, 0), (2, 2), (2, 2), (0, 0)))  # fmt: skip

    return model, mnist(x_train[:256]), mnist(x_test[:64])


def jacinto(net: str, shape: tuple, seed: int):
    from kerasq.converters.caffe import load

    base = SHARED / "caffe-models" / "jacinto"
    proto = base / net / "deploy.prototxt"
    weights = Path(tempfile.mkdtemp()) / "model.caffemodel"
    subprocess.run([sys.executable, str(base / "make_weights.py"), str(proto), str(weights),
                    str(seed), "new"], check=True, capture_output=True)  # fmt: skip
    model = load(proto, weights, input_shape={"data": [1, 3, *shape]})
    rng = np.random.RandomState(seed)
    return (model, rng.uniform(0, 255, (16, *shape, 3)).astype(np.float32),
            rng.uniform(0, 255, (8, *shape, 3)).astype(np.float32))  # fmt: skip


NETS = {
    "lenet": ("Caffe LeNet 28x28", lenet),
    "mobilenet": ("caffe-jacinto MobileNet-0.5 224x224",
                  lambda: jacinto("imagenet-mobilenet0.5", (224, 224), 5)),
    "jsegnet": ("caffe-jacinto JSegNet21 256x512",
                lambda: jacinto("cityscapes5-jsegnet21v2", (256, 512), 6)),
}  # fmt: skip


def session(content: bytes, optimized_path: str | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if optimized_path:  # the level without hardware-specific layout changes
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    if optimized_path:
        opts.optimized_model_filepath = optimized_path
    return ort.InferenceSession(content, opts, providers=["CPUExecutionProvider"])


def qoperator_of(qdq: bytes) -> bytes:
    """onnxruntime's fused graph of the QDQ file, saved as a model (QOperator nodes)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "fused.onnx")
        session(qdq, path)
        return Path(path).read_bytes()


def ort_qoperator(float_file: bytes, calib: np.ndarray) -> bytes:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    name = session(float_file).get_inputs()[0].name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{name: calib[i : i + 1]} for i in range(len(calib))])

        def get_next(self):
            return next(self.items, None)

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "f.onnx"), os.path.join(tmp, "q.onnx")
        Path(src).write_bytes(float_file)
        quantize_static(src, dst, Reader(), quant_format=QuantFormat.QOperator,
                        per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8)  # fmt: skip
        return Path(dst).read_bytes()


def ops(content: bytes) -> str:
    import collections

    import onnx

    counts = collections.Counter(n.op_type for n in onnx.load_from_string(content).graph.node)
    keep = [k for k in counts if k.startswith("QLinear") or "Integer" in k or k == "Conv"]
    return ", ".join(f"{k}×{counts[k]}" for k in sorted(keep)) or "-"


def bench(forms: dict, x: np.ndarray, runs: int, rounds: int) -> dict:
    sessions = {k: session(v) for k, v in forms.items()}
    feeds = {k: {s.get_inputs()[0].name: x[:1]} for k, s in sessions.items()}
    for k, s in sessions.items():  # warm up
        for _ in range(10):
            s.run(None, feeds[k])
    times: dict = {k: [] for k in forms}
    for _ in range(rounds):
        for k, s in sessions.items():
            for _ in range(runs):
                start = time.perf_counter()
                s.run(None, feeds[k])
                times[k].append(time.perf_counter() - start)
    return {k: 1000.0 * float(np.median(v)) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", default="all", choices=["all", *NETS])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    import kerasq
    from kerasq.export import to_onnx

    for key in NETS if args.net == "all" else [args.net]:
        title, build = NETS[key]
        model, calib, x = build()
        qmodel = kerasq.quantize_model(model)
        kerasq.calibrate(qmodel, calib)
        float_file = to_onnx(model, verify_data=x[:2])
        qdq = to_onnx(qmodel, target="int8", verify_data=x[:4])
        forms = {
            "float": float_file,
            "QDQ": qdq,
            "QOperator": qoperator_of(qdq),
            "ORT QOperator": ort_qoperator(float_file, calib),
        }
        ms = bench(forms, x, args.runs, args.rounds)
        print(f"{title}: 1 thread, median of {args.runs * args.rounds} runs "
              f"({args.rounds} interleaved rounds)")  # fmt: skip
        for name, content in forms.items():
            print(f"  {name:14s} {ms[name]:9.3f} ms  {ms[name] / ms['QDQ']:5.2f}x QDQ  "
                  f"{len(content) / 1024:8.1f} KiB  {ops(content)}")  # fmt: skip


if __name__ == "__main__":
    main()
