"""The files and names the README and docs snippets use, made from a small net kerasq makes
itself (a digits CNN trained on scikit-learn's real digits and written as a Caffe net by
``kerasq.converters.caffe.writer``), and the checks of what the snippets promise.

``build(directory)`` writes the files once per test session; ``prelude(workdir, file)``
gives the Python names a Markdown file's snippets assume; ``check(file, namespace,
workdir)`` returns the broken promises after a file's blocks ran.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
from typing import Any, Dict, List

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent.parent
SCHEME_DATA = REPO / "tests" / "schemes" / "data"

# Placeholders in the docs that stand for the reader's own arguments.
SUBSTITUTIONS = {
    ".compile(...)": '.compile("adam", "sparse_categorical_crossentropy")',
}

# (file, name in the docs) -> path under ../shared; symlinked when present.
SHARED_FILES = {
    "res20_train_test.prototxt": "caffe-models/resnet20-cifar10/res20_cifar_train_test.prototxt",
    "ResNet_20.caffemodel": "caffe-models/resnet20-cifar10/ResNet_20.caffemodel",
    "jnet_v015.prototxt": "caffe-models/jacinto/cifar10-jnet11v2-v015/deploy.prototxt",
}
# (file, name in the docs) -> (prototxt name above, layout): seeded weights written by
# ../shared's caffe-models/jacinto/make_weights.py (caffe-jacinto publishes no caffemodels)
JACINTO_WEIGHTS = {"jnet.caffemodel": ("jnet_v015.prototxt", "legacy")}

QUANT_HEADER = """quantize: true
net_quantization_param {
  quantize_weights: true
  quantize_activations: true
  bitwidth_weights: 8
  bitwidth_activations: 8
  power2_scale_weights: true
  power2_scale_activations: true
  precision: DYNAMIC_FIXED_POINT
  rounding_scheme: NEAREST
}
"""


def _digits() -> Any:
    """Digits as 3-channel (BGR-like) 8x8 images, so colour options (--mean a,b,c,
    --swap-rb) apply: (x_train, y_train, x_test, y_test), NHWC."""
    from kerasq.demo import load_digits_data

    x_train, y_train, x_test, y_test = load_digits_data()
    return np.repeat(x_train, 3, axis=-1), y_train, np.repeat(x_test, 3, axis=-1), y_test


def _cnn() -> Any:
    """kerasq demo's CNN on 3-channel input (conv-relu-pool x2, dense logits)."""
    from kerasq._compat import keras
    from kerasq.demo import build_cnn

    layers = build_cnn().layers
    return keras.Sequential([keras.Input((8, 8, 3))] + [
        type(layer).from_config(layer.get_config()) for layer in layers], name="digits_cnn")


def build(directory: pathlib.Path, shared: pathlib.Path) -> Dict[str, str]:
    """Write the fixture files; return ``{name: reason}`` for the shared ones absent."""
    from kerasq._compat import keras
    from kerasq.converters import caffe
    from kerasq.converters.caffe.writer import write_caffe

    x_train, y_train, x_test, y_test = _digits()
    keras.utils.set_random_seed(0)
    cnn = _cnn()
    cnn.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    cnn.fit(x_train, y_train, epochs=4, batch_size=32, verbose=0)
    cnn.save(directory / "keras_cnn.h5")  # the docs' generic float Keras model (logits)
    import kerasq

    qmodel = kerasq.calibrate(kerasq.quantize_model(cnn), x_train[:256])
    qmodel.save(directory / "q.h5")  # the docs' quantized model and its int8 file
    kerasq.export.to_tflite(qmodel, str(directory / "q.tflite"), target="int8")
    shutil.copy(directory / "q.tflite", directory / "model.tflite")
    net = keras.Sequential([keras.Input((8, 8, 3))] + cnn.layers
                           + [keras.layers.Softmax(name="prob")], name="digits")
    write_caffe(net, directory / "deploy.prototxt", directory / "weights.caffemodel")
    shutil.copy(directory / "weights.caffemodel", directory / "w.caffemodel")
    deploy = (directory / "deploy.prototxt").read_text()
    body = "\n".join(line for line in deploy.splitlines() if not line.startswith("name:"))
    (directory / "test.prototxt").write_text(QUANT_HEADER + body + "\n")
    shutil.copy(SCHEME_DATA / "jacinto015_test.prototxt", directory / "train.prototxt")
    shutil.copy(SCHEME_DATA / "jacinto015_solver.prototxt", directory / "solver.prototxt")
    np.save(directory / "x.npy", x_test[:200])
    np.save(directory / "x_nchw.npy", x_test[:200].transpose(0, 3, 1, 2))
    np.savez(directory / "val.npz", x=x_test, y=y_test)
    np.save(directory / "y.npy", y_test[:200])
    # Caffe blob dumps of the images `kerasq compare --input` gets: DIR for x16_nchw.npy
    # (README), caffe_dumps for x.npy (docs/caffe.md)
    for dump_dir, images in (("DIR", x_test[:16]), ("caffe_dumps", x_test[:200])):
        tops = caffe.forward(str(directory / "deploy.prototxt"),
                             str(directory / "weights.caffemodel"),
                             {"data": images.transpose(0, 3, 1, 2)})
        os.makedirs(directory / dump_dir, exist_ok=True)
        for top, value in tops.items():
            np.save(directory / dump_dir / f"{top}.npy", value)
    np.save(directory / "x16_nchw.npy", x_test[:16].transpose(0, 3, 1, 2))
    _write_ssd(directory)
    absent = {}
    for name, rel in SHARED_FILES.items():
        source = shared / rel
        if source.exists():
            os.symlink(source, directory / name)
        else:
            absent[name] = f"{source} absent (../shared)"
    make_weights = shared / "caffe-models" / "jacinto" / "make_weights.py"
    for name, (prototxt, layout) in JACINTO_WEIGHTS.items():
        if prototxt in absent or not make_weights.exists():
            absent[name] = f"{make_weights} or {prototxt} absent (../shared)"
            continue
        subprocess.run([sys.executable, str(make_weights), str(directory / prototxt),
                        str(directory / name), "2", layout], check=True, capture_output=True)
    return absent


def _write_ssd(directory: pathlib.Path) -> None:
    """ssd.tflite (docs/export.md reads its detections by signature name): the float file
    of the small SSD net of tests/converters/caffe/test_ssd.py ("flip-max-center")."""
    import kerasq
    from kerasq.converters import caffe

    sys.path.insert(0, str(REPO / "tests" / "converters" / "caffe"))
    from test_ssd import VARIANTS, ssd_net

    shape, priors, det = VARIANTS["flip-max-center"]
    ssd_dir = directory / "ssd_net"
    ssd_dir.mkdir()
    proto, weights = ssd_net(shape, priors, det).write(ssd_dir)
    kerasq.export.to_tflite(caffe.load(proto, weights), str(directory / "ssd.tflite"),
                            target="float")


def prelude(workdir: str, file: str) -> Dict[str, Any]:
    """The names a Markdown file's snippets use without defining them."""
    import kerasq
    from kerasq._compat import keras, tf

    x_train, y_train, x_test, y_test = _digits()
    names: Dict[str, Any] = {
        "np": np, "kerasq": kerasq, "keras": keras, "tf": tf,
        "x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test,
        "x_val": x_test, "y_val": y_test, "x": x_train, "y": y_train,
        "x_calibration": x_train[:256], "x_calib": x_train[:256], "x_cal": x_train[:256],
        "x_nchw": x_test[:16].transpose(0, 3, 1, 2),
    }
    cnn = keras.models.load_model(os.path.join(workdir, "keras_cnn.h5"), compile=False)
    names["keras_cnn"] = cnn
    if file != "README.md":
        names["model"] = cnn  # the docs' generic float Keras model
        names["qmodel"] = kerasq.load_model(os.path.join(workdir, "q.h5"))

    def eval_fn(qmodel: Any) -> float:
        out = qmodel.predict(x_test, batch_size=256, verbose=0)
        return float(np.mean(out.argmax(-1) == y_test))

    names["eval_fn"] = eval_fn
    if file == "docs/export.md":
        # an image for ssd.tflite (NHWC without batch) and its size
        from ai_edge_litert.interpreter import Interpreter

        runner = Interpreter(model_path=os.path.join(workdir, "ssd.tflite")).get_signature_runner()
        (detail,) = runner.get_input_details().values()
        _, height, width, channels = detail["shape"]
        names["image_nhwc"] = np.random.default_rng(0).uniform(
            -1, 1, (height, width, channels)).astype(np.float32)
        names["height"], names["width"] = int(height), int(width)
    return names


def _kernel_sparsity(model: Any) -> float:
    from kerasq.prune import sparsity_report

    rows = sparsity_report(model)
    return sum(r.zeros for r in rows) / max(1, sum(r.count for r in rows))


def check(file: str, ns: Dict[str, Any], workdir: str) -> List[str]:
    """Promises made in words by the blocks of ``file`` (after they ran)."""
    problems: List[str] = []
    if file == "README.md":
        # 4. "prune ... 0.7": the pruned float model ends at the schedule's final sparsity
        if "pruned" in ns:
            sparsity = _kernel_sparsity(ns["kp"].strip(ns["pruned"]))
            if abs(sparsity - 0.7) > 0.01:
                problems.append(f"pruning snippet ends at {100 * sparsity:.1f} % sparsity, "
                                f"its schedule promises 70 %")
        # "a calibrated DFP model run in integers ... bit for bit"
        if "y_int" in ns and "logits" in ns:
            expected = ns["logits"](ns["x"], training=False).numpy()
            if not np.array_equal(np.asarray(ns["y_int"]), expected):
                problems.append("kerasq.integer.run differs from the Keras model")
        # "the math itself, and the fast ops (same results)"
        if "tflite_bytes" in ns and not isinstance(ns["tflite_bytes"], bytes):
            problems.append("to_tflite did not return bytes")
    if file == "docs/ops.md" and "y" in ns and "qmodel" in ns:
        expected = ns["qmodel"](ns["x"], training=False).numpy()
        if not np.array_equal(np.asarray(ns["y"]), expected):
            problems.append("kerasq.integer.run differs from qmodel(x, training=False)")
    if file == "docs/report.md":
        # "the same numbers as JSON": the JSON's rows are the HTML table's
        import json

        rep = json.loads(pathlib.Path(workdir, "report.json").read_text())
        html = pathlib.Path(workdir, "report.html").read_text()
        for row in rep["quantization"]:
            if f'<td class="l">{row["layer"]}</td>' not in html:
                problems.append(f"report.html lacks the row of {row['layer']}")
        if "scores.json" in os.listdir(workdir):
            scores = json.loads(pathlib.Path(workdir, "scores.json").read_text())
            if scores["outputs"][0].get("agreement") is None:
                problems.append("eval --reference wrote no agreement")
        else:
            problems.append("eval --json wrote no scores.json")
    if file == "docs/sparsity.md" and "qmodel" in ns:
        sparsity = _kernel_sparsity(ns["qmodel"])
        if sparsity < 0.79:
            problems.append(f"sparsity snippet ends at {100 * sparsity:.1f} %, promises 80 %")
    return problems
