"""Agreement of kerasq's int8 QDQ ONNX files with the Keras fake-quant model, in onnxruntime
(CPU, 1 thread): the table of README's ONNX section.

    python benchmarks/onnx_agreement.py

Nets (kerasq PTQ, default config unless named): the Caffe LeNet on MNIST-sized digits (logits
and softmax), caffe-jacinto MobileNet-0.5 and JSegNet21 (seeded weights from
``make_weights.py``, random 0..255 images; JSegNet21's per-pixel class map and its logits
before the ArgMax). Each row: the max error in output steps, the fraction of identical
values and the top-1 agreement with onnxruntime's fused int8 kernels, and the fraction
identical with graph optimizations off (onnxruntime's float QDQ emulation). The last rows
measure where onnxruntime rounds differently: LeNet with rounding "nearest" (ties away from
zero, as configs read from caffe-jacinto / Ristretto prototxts) and LeNet without the int32
bias alignment (``align_for_int8`` skipped in calibration and export: float biases, which
onnxruntime then rounds to int32 itself).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np

SHARED = Path(os.environ.get("KERASQ_SHARED", Path(__file__).resolve().parents[3] / "shared"))


def lenet_data():
    from kerasq.converters.caffe import load

    from kerasq.demo import load_digits_data

    folder = SHARED / "caffe-models" / "lenet-mnist"
    model = load(folder / "lenet.prototxt", folder / "lenet_iter_10000.caffemodel",
                 input_shape={"data": [1, 1, 28, 28]})  # fmt: skip
    x_train, _, x_test, _ = load_digits_data()

    def mnist(x):  # 8x8 digits -> 24x24 -> padded 28x28, values in [0, 1]
        return np.pad(np.kron(x, np.ones((1, 3, 3, 1), np.float32)),
                      ((0, 0), (2, 2), (2, 2), (0, 0)))  # fmt: skip

    return model, mnist(x_train[:256]), mnist(x_test)


def jacinto_data(net: str, shape: tuple, seed: int, count: int):
    from kerasq.converters.caffe import load

    base = SHARED / "caffe-models" / "jacinto"
    proto = base / net / "deploy.prototxt"
    weights = Path(tempfile.mkdtemp()) / "model.caffemodel"
    subprocess.run([sys.executable, str(base / "make_weights.py"), str(proto), str(weights),
                    str(seed), "new"], check=True, capture_output=True)  # fmt: skip
    model = load(proto, weights, input_shape={"data": [1, 3, *shape]})
    rng = np.random.RandomState(seed)
    calib = rng.uniform(0, 255, (16, *shape, 3)).astype(np.float32)
    return model, calib, rng.uniform(0, 255, (count, *shape, 3)).astype(np.float32)


def row(title: str, what: str, model, x) -> str:
    from kerasq.export.onnx import OnnxRunner, compare, export_onnx

    result = export_onnx(model, target="int8", verify_data=x, verify=False)
    (out,) = result.report.outputs
    runner = OnnxRunner(result.content, optimize=False, keras_layout=True)
    got = runner({runner.input_names[0]: x})[runner.output_names[0]]
    emulated = compare(what, got, np.asarray(model.predict(x, verbose=0)), out.output_step)
    steps = "class index" if out.output_step is None else f"{out.max_error_steps:.3g} steps"
    top1 = "-" if out.top1_agreement is None else f"{100 * out.top1_agreement:.2f} %"
    return (f"| {title} | {what} | {steps} | {100 * out.exact_fraction:.2f} % | {top1} | "
            f"{100 * emulated.exact_fraction:.2f} % |")  # fmt: skip


def main() -> None:
    import kerasq
    from kerasq._compat import keras
    from kerasq.schemes.config import QuantizationConfig

    print("| net (inputs) | output | max error | identical | top-1 agreement "
          "| identical, ORT float QDQ emulation |")  # fmt: skip
    print("|---|---|---|---|---|---|")

    model, calib, x = lenet_data()

    def lenet_rows(config, label, patch=None):
        with mock.patch(*patch) if patch else contextlib.nullcontext():
            qmodel = kerasq.quantize_model(model, config)
            kerasq.calibrate(qmodel, calib)
            ip2 = next(layer.name for layer in qmodel.layers if layer.name.endswith("ip2"))
            logits = keras.Model(qmodel.inputs, qmodel.get_layer(ip2).output)
            title = f"Caffe LeNet{label}, MNIST-sized digits ({len(x)})"
            print(row(title, "logits", logits, x), flush=True)
            print(row(title, "softmax", qmodel, x), flush=True)

    lenet_rows(None, "")

    for title, net, shape, seed, count in [
        ("caffe-jacinto MobileNet-0.5, 64x64", "imagenet-mobilenet0.5", (64, 64), 5, 32),
        ("caffe-jacinto JSegNet21, 64x128", "cityscapes5-jsegnet21v2", (64, 128), 6, 16),
        ("caffe-jacinto JSegNet21, 128x256", "cityscapes5-jsegnet21v2", (128, 256), 6, 16),
    ]:
        jmodel, jcalib, jx = jacinto_data(net, shape, seed, count)
        qmodel = kerasq.quantize_model(jmodel)
        kerasq.calibrate(qmodel, jcalib)
        label = f"{title} ({count} random images)"
        if net.startswith("cityscapes"):
            print(row(label, "class map (ArgMax)", qmodel, jx), flush=True)
            logits = keras.Model(qmodel.inputs, qmodel.layers[-1].input)
            print(row(label, "logits before ArgMax", logits, jx), flush=True)
        else:
            print(row(label, "softmax", qmodel, jx), flush=True)

    # where onnxruntime rounds differently
    lenet_rows(QuantizationConfig(rounding="nearest"), ", rounding nearest (ties away)")
    # calibrate() and the export both align; without it the biases stay float
    lenet_rows(None, ", biases not on the int32 grid",
               patch=("kerasq.schemes.shared_grids.align_for_int8",
                      lambda m: {"groups": [], "biases": []}))  # fmt: skip


if __name__ == "__main__":
    main()
