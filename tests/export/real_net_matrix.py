"""The real-net export matrix: Caffe net -> ``kerasq convert`` -> ``kerasq quantize``
(defaults, calibration data) -> ``kerasq export --target int8``, then the .tflite file is run
in ai-edge-litert's default interpreter and compared, output by output, with the reloaded
``q.h5`` on held-out inputs (the independent check; the CLI's own ``--verify`` runs too).

Run as a script to print one line per net:
    python tests/export/real_net_matrix.py [NAME ...]   (nets from $KERASQ_SHARED or ../shared)
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
SHARED = pathlib.Path(os.environ.get("KERASQ_SHARED", REPO_ROOT.parent / "shared"))
MODELS = SHARED / "caffe-models"


@dataclasses.dataclass(frozen=True)
class Net:
    name: str
    prototxt: str                      # relative to caffe-models/
    caffemodel: str | None          # relative to caffe-models/; None: make_weights.py
    shape_nhwc: tuple[int, int, int]
    low: float
    high: float
    extra: tuple[str, ...] = ()        # more `kerasq convert` arguments
    seed: int = 1                      # make_weights.py seed
    slow: bool = False
    config: str | None = None          # quantization settings (relative to caffe-models/):
                                       # `kerasq quantize --config C --int8`
    weights_format: str = "new"        # make_weights.py BatchNorm blob order (new|legacy)
    detections: bool = False           # an SSD: the file's detections against q.h5's


NETS: list[Net] = [
    Net("lenet", "lenet-mnist/lenet.prototxt", "lenet-mnist/lenet_iter_10000.caffemodel",
        (28, 28, 1), 0.0, 1.0),
    Net("cifar10-quick", "cifar10-quick-v1/cifar10_quick_deploy.prototxt",
        "cifar10-quick-v1/cifar10_quick_iter_5000.caffemodel", (32, 32, 3), -128.0, 128.0),
    Net("mtcnn-det1", "mtcnn/det1.prototxt", "mtcnn/det1.caffemodel", (12, 12, 3), -1.0, 1.0),
    Net("mtcnn-det2", "mtcnn/det2.prototxt", "mtcnn/det2.caffemodel", (24, 24, 3), -1.0, 1.0,
        slow=True),
    Net("mtcnn-det3", "mtcnn/det3.prototxt", "mtcnn/det3.caffemodel", (48, 48, 3), -1.0, 1.0,
        slow=True),
    Net("mtcnn-det4", "mtcnn/det4.prototxt", "mtcnn/det4.caffemodel", (24, 24, 15), -1.0, 1.0,
        slow=True),
    Net("vanilla-cnn", "vanilla-cnn/vanilla_deploy.prototxt", "vanilla-cnn/vanillaCNN.caffemodel",
        (40, 40, 3), -1.0, 1.0, slow=True),
    Net("resnet50-stem", "resnet50-stem/test.prototxt", "resnet50-stem/test.caffemodel",
        (224, 224, 3), -128.0, 128.0, slow=True),
    Net("resnet20", "resnet20-cifar10/deploy_generated.prototxt",
        "resnet20-cifar10/ResNet_20.caffemodel", (32, 32, 3), -128.0, 128.0, slow=True),
    Net("ultraface", "ultraface-rfb320/RFB-320.prototxt", "ultraface-rfb320/RFB-320.caffemodel",
        (240, 320, 3), -1.0, 1.0, slow=True),
    Net("yufacedetect-prefix", "yufacedetectnet-v2/deploy_prefix_generated.prototxt",
        "yufacedetectnet-v2/yufacedetectnet-open-v2.caffemodel", (240, 320, 3), -128.0, 128.0,
        slow=True),
    # caffe-jacinto's own nets with their own settings (test.prototxt, made int8-deployable)
    Net("jacinto-jnet11v2", "jacinto/cifar10-jnet11v2/deploy.prototxt", None, (32, 32, 3),
        0.0, 255.0, seed=1, config="jacinto/cifar10-jnet11v2/test.prototxt"),
    Net("jacinto-jnet11v2-v015", "jacinto/cifar10-jnet11v2-v015/deploy.prototxt", None,
        (32, 32, 3), 0.0, 255.0, seed=2, weights_format="legacy", slow=True),  # no settings
    Net("jacinto-mobilenet0.5", "jacinto/imagenet-mobilenet0.5/deploy.prototxt", None,
        (64, 64, 3), 0.0, 255.0, ("--input-shape", "data:1,3,64,64"), seed=5, slow=True,
        config="jacinto/imagenet-mobilenet0.5/test.prototxt"),
    Net("jacinto-mobilenet0.5-96", "jacinto/imagenet-mobilenet0.5/deploy.prototxt", None,
        (96, 96, 3), 0.0, 255.0, ("--input-shape", "data:1,3,96,96"), seed=3, slow=True,
        config="jacinto/imagenet-mobilenet0.5/test.prototxt"),
    Net("jacinto-jsegnet21v2", "jacinto/cityscapes5-jsegnet21v2/deploy.prototxt", None,
        (64, 128, 3), 0.0, 255.0, ("--input-shape", "data:1,3,64,128"), seed=6, slow=True,
        config="jacinto/cityscapes5-jsegnet21v2/test.prototxt"),
    Net("jacinto-jsegnet21v2-128x256", "jacinto/cityscapes5-jsegnet21v2/deploy.prototxt", None,
        (128, 256, 3), 0.0, 255.0, ("--input-shape", "data:1,3,128,256"), seed=7, slow=True,
        config="jacinto/cityscapes5-jsegnet21v2/test.prototxt"),
    Net("jacinto-jdetnet-ssd", "jacinto/voc-jdetnet-ssd768x320/deploy.prototxt", None,
        (160, 384, 3), 0.0, 255.0, ("--input-shape", "data:1,3,160,384"), seed=8, slow=True,
        config="jacinto/voc-jdetnet-ssd768x320/test.prototxt", detections=True),
]
BY_NAME: dict[str, Net] = {n.name: n for n in NETS}


@dataclasses.dataclass
class OutputResult:
    name: str
    max_steps: float
    exact_fraction: float


@dataclasses.dataclass
class NetResult:
    net: str
    ok: bool
    stage: str                         # the step that failed, or "done"
    message: str
    outputs: list[OutputResult]

    def line(self) -> str:
        outs = "; ".join(
            f"{o.name}: {o.max_steps:.3g} steps, {100 * o.exact_fraction:.1f}% identical"
            for o in self.outputs
        )
        status = "EXACT" if self.ok else f"FAIL at {self.stage}"
        return f"{self.net:22s} {status}: {outs or self.message}"


def _cli(*args: str, cwd: pathlib.Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return subprocess.run([sys.executable, "-m", "kerasq", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=1800, check=False)


def compare_file_with_h5(tflite_path: pathlib.Path, h5_path: pathlib.Path,
                         x: np.ndarray) -> list[OutputResult]:
    """Each output of the reloaded ``q.h5`` against the same-named output of the file,
    in steps of the file's output scale (1 when the output is float)."""
    from ai_edge_litert.interpreter import Interpreter

    import kerasq

    model = kerasq.load_model(str(h5_path))
    want = model(x, training=False)
    want = [np.asarray(w) for w in (want if isinstance(want, (list, tuple)) else [want])]
    from kerasq.export.verify import output_names

    names = output_names(model)
    interp = Interpreter(model_path=str(tflite_path))
    inp = interp.get_input_details()[0]
    interp.resize_tensor_input(inp["index"], [len(x), *inp["shape"][1:]])
    interp.allocate_tensors()
    interp.set_tensor(inp["index"], x.astype(np.float32))
    interp.invoke()
    details = interp.get_output_details()
    by_name = {d["name"]: d for d in details}
    results = []
    for i, (name, w) in enumerate(zip(names, want)):
        d = by_name.get(name)
        if d is None:  # unnamed outputs: fall back on the order of the file
            d = details[i] if len(details) == len(want) else None
        if d is None:
            results.append(OutputResult(name, float("inf"), 0.0))
            continue
        got = interp.get_tensor(d["index"]).astype(np.float64)
        scale, zero = d["quantization"]
        if d["dtype"] != np.float32 and scale:  # an int32 index output has no scale
            got = (got - zero) * scale
        step = scale if scale else 1.0
        got = got.reshape(w.shape)
        err = np.abs(got - w.astype(np.float64))
        results.append(OutputResult(name, float(err.max() / step), float(np.mean(err == 0))))
    return results


def compare_detections_with_h5(tflite_path: pathlib.Path, h5_path: pathlib.Path,
                               x: np.ndarray) -> list[OutputResult]:
    """An SSD file's detections against the reloaded ``q.h5``'s, as sets per image
    (:func:`kerasq.export.detection.compare_detections`); "steps" is 0 when they agree."""
    import kerasq
    from kerasq.export import detection

    model = kerasq.load_model(str(h5_path))
    content = tflite_path.read_bytes()
    report = detection.compare_detections(detection.run_tflite(content, x),
                                          detection.keras_detections(model, x))
    return [OutputResult("detections", 0.0 if report.ok else float("inf"),
                         1.0 if report.ok else 0.0)]


def run_net(net: Net, workdir: pathlib.Path, *, n_calib: int = 64, n_test: int = 64,
            verify: bool = True) -> NetResult:
    """The chain for one net in ``workdir``; never raises for a kerasq failure."""
    prototxt = MODELS / net.prototxt
    if net.caffemodel is None:
        caffemodel = workdir / "weights.caffemodel"
        subprocess.run([sys.executable, str(MODELS / "jacinto" / "make_weights.py"),
                        str(prototxt), str(caffemodel), str(net.seed), net.weights_format],
                       check=True, capture_output=True, timeout=600)
    else:
        caffemodel = MODELS / net.caffemodel
    rng = np.random.default_rng(0)
    calib = rng.uniform(net.low, net.high, (n_calib, *net.shape_nhwc)).astype(np.float32)
    test = rng.uniform(net.low, net.high, (n_test, *net.shape_nhwc)).astype(np.float32)
    np.save(workdir / "calib.npy", calib)
    np.save(workdir / "test.npy", test)
    steps = [
        ("convert", ["convert", str(prototxt), str(caffemodel), *net.extra, "-o", "model.h5"]),
        ("quantize", ["quantize", "model.h5", "--calibration", "calib.npy", "-o", "q.h5"]
         + (["--config", str(MODELS / net.config), "--int8"] if net.config else [])),
        ("export", ["export", "q.h5", "-o", "q.tflite", "--target", "int8", "--data",
                    "test.npy"] + (["--verify"] if verify else [])),
    ]
    for stage, args in steps:
        proc = _cli(*args, cwd=workdir)
        if proc.returncode != 0:
            msg = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            return NetResult(net.name, False, stage, msg[:400], [])
    if net.detections:
        outputs = compare_detections_with_h5(workdir / "q.tflite", workdir / "q.h5", test)
    else:
        outputs = compare_file_with_h5(workdir / "q.tflite", workdir / "q.h5", test)
    ok = all(o.max_steps == 0 for o in outputs)
    return NetResult(net.name, ok, "done" if ok else "compare", "", outputs)


def main(names: list[str]) -> int:
    nets = [BY_NAME[n] for n in names] if names else NETS
    failed = 0
    for net in nets:
        with tempfile.TemporaryDirectory(prefix=f"kerasq-{net.name}-") as tmp:
            result = run_net(net, pathlib.Path(tmp))
        print(result.line(), flush=True)
        failed += not result.ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
