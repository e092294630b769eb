"""Agreement of kerasq's int8 QDQ ONNX files with the Keras model in onnxruntime: the
README's ONNX table and docs/onnx.md's rounding table.

The Caffe LeNet (../shared/caffe-models/lenet-mnist) is converted, quantized with kerasq's
default config and calibrated on 256 scikit-learn digits (upscaled to 28x28), then exported
as int8 QDQ ONNX and run on the 450 held-out digits: the logits and the softmax output,
onnxruntime's fused kernels and the float QDQ emulation (graph optimizations off), and the
file built without ``align_for_int8`` (float biases, which onnxruntime quantizes itself).
``--jacinto`` adds caffe-jacinto MobileNet-0.5 at 64x64 (seeded weights from
``make_weights.py``, 32 random images; a few minutes).

    python benchmarks/onnx_agreement.py --markdown [--jacinto] [--shared ../shared]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile
from typing import Any, List, Optional
from unittest import mock

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]


def to_mnist_size(x: np.ndarray) -> np.ndarray:
    """8x8 digits -> 24x24 -> padded 28x28, values in [0, 1]."""
    return np.pad(np.kron(x, np.ones((1, 3, 3, 1), np.float32)), ((0, 0), (2, 2), (2, 2), (0, 0)))


def lenet(shared: pathlib.Path) -> tuple:
    """(calibrated quantized LeNet, its logits sub-model, the 450 held-out inputs)."""
    import kerasq
    from kerasq._compat import keras
    from kerasq.converters.caffe import load
    from kerasq.demo import load_digits_data

    folder = shared / "caffe-models" / "lenet-mnist"
    model = load(folder / "lenet.prototxt", folder / "lenet_iter_10000.caffemodel",
                 input_shape={"data": [1, 1, 28, 28]})
    x_train, _, x_test, _ = load_digits_data()
    qmodel = kerasq.quantize_model(model)
    kerasq.calibrate(qmodel, to_mnist_size(x_train[:256]))
    ip2 = next(layer.name for layer in qmodel.layers if layer.name.endswith("ip2"))
    logits = keras.Model(qmodel.inputs, qmodel.get_layer(ip2).output)
    return qmodel, logits, to_mnist_size(x_test)


def _row(label: str, output: str, check: Any) -> dict:
    return {"net": label, "output": output, "steps": check.max_error_steps,
            "identical": check.exact_fraction, "top1": check.top1_agreement}


def _no_alignment() -> Any:
    """``align_for_int8`` switched off (in calibration and export): the biases stay float
    and onnxruntime quantizes each to s_in·s_w itself."""
    return mock.patch("kerasq.schemes.shared_grids.align_for_int8",
                      lambda m: {"biases": [], "groups": []})


def run(shared: pathlib.Path, jacinto: bool) -> tuple:
    from kerasq.export.onnx import OnnxRunner, compare, export_onnx

    with _no_alignment():
        _, unaligned_logits, x = lenet(shared)
        unaligned = export_onnx(unaligned_logits, target="int8", verify_data=x,
                                verify=False).report.outputs[0]
    qmodel, logits, x = lenet(shared)
    fused = export_onnx(logits, target="int8", verify_data=x, verify=False)
    runner = OnnxRunner(fused.content, optimize=False)
    got = runner({runner.input_names[0]: x})[runner.output_names[0]]
    emulated = compare("logits", got, np.asarray(logits(x)), fused.report.outputs[0].output_step)
    softmax = export_onnx(qmodel, target="int8", verify_data=x, verify=False)
    label = f"Caffe LeNet, MNIST-sized digits ({len(x)})"
    agreement = [_row(label, "logits", fused.report.outputs[0]),
                 _row(f"Caffe LeNet ({len(x)})", "softmax", softmax.report.outputs[0])]
    if jacinto:
        agreement.append(_mobilenet(shared))
    rounding = [("fused kernels, biases on the int32 grid (the export)", fused.report.outputs[0]),
                ("float QDQ emulation (optimizations off)", emulated),
                ("fused kernels, float biases (without `align_for_int8`)", unaligned)]
    return agreement, rounding


def _mobilenet(shared: pathlib.Path) -> dict:
    import kerasq
    from kerasq.converters.caffe import load
    from kerasq.export.onnx import export_onnx

    base = shared / "caffe-models" / "jacinto"
    proto = base / "imagenet-mobilenet0.5" / "deploy.prototxt"
    with tempfile.TemporaryDirectory() as tmp:
        weights = pathlib.Path(tmp) / "model.caffemodel"
        subprocess.run([sys.executable, str(base / "make_weights.py"), str(proto), str(weights),
                        "5", "new"], check=True, capture_output=True, timeout=600)
        model = load(proto, weights, input_shape={"data": [1, 3, 64, 64]})
    rng = np.random.RandomState(5)
    calib = rng.uniform(0, 255, (16, 64, 64, 3)).astype(np.float32)
    qmodel = kerasq.quantize_model(model)
    kerasq.calibrate(qmodel, calib)
    x = rng.uniform(0, 255, (32, 64, 64, 3)).astype(np.float32)
    result = export_onnx(qmodel, target="int8", verify_data=x, verify=False)
    return _row(f"caffe-jacinto MobileNet-0.5, 64x64 ({len(x)} random images)", "softmax",
                result.report.outputs[0])


def _steps(value: Optional[float]) -> str:
    if value is None:
        return "-"
    return f"{value:.3g} step" + ("" if value == 1 else "s")


def _percent(value: Optional[float]) -> str:
    if value is None:
        return "-"
    text = f"{100 * value:.2f}"
    return f"{text.rstrip('0').rstrip('.') if value in (0.0, 1.0) else text} %"


def markdown(agreement: List[dict], rounding: list) -> str:
    """The two tables, as the README and docs/onnx.md show them."""
    lines = ["| net (inputs) | output | max error | identical | top-1 agreement |",
             "|---|---|---|---|---|"]
    for r in agreement:
        lines.append(f"| {r['net']} | {r['output']} | {_steps(r['steps'])} | "
                     f"{_percent(r['identical'])} | {_percent(r['top1'])} |")
    lines += ["", "| | max error | identical | top-1 |", "|---|---|---|---|"]
    for label, check in rounding:
        lines.append(f"| {label} | {_steps(check.max_error_steps)} | "
                     f"{_percent(check.exact_fraction)} | {_percent(check.top1_agreement)} |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true",
                        help="print the Markdown tables (the only output format)")
    parser.add_argument("--jacinto", action="store_true",
                        help="add caffe-jacinto MobileNet-0.5 at 64x64 (minutes)")
    parser.add_argument("--shared", default=os.environ.get("KERASQ_SHARED",
                                                           str(REPO.parent / "shared")))
    args = parser.parse_args(argv)
    agreement, rounding = run(pathlib.Path(args.shared), args.jacinto)
    print(markdown(agreement, rounding))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
