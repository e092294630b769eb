"""Hostile inputs for every ``kerasq`` subcommand, generated per category.

A case is a command line (``{A}``: the folder of shared good assets, ``{W}``: the case's
own folder) and a ``setup(W)`` writing the hostile files. Every case must end with exit
status 2, one ``kerasq: error:`` line, no traceback, no new file and every existing file
unchanged (checked by ``test_hostile_cli.py``). ``ASSETS`` builds the good assets: a
tiny Caffe net written in protobuf wire format by hand, its conversion, calibration data
and a calibrated quantized model.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import struct
import zipfile
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

Setup = Callable[[str], None]


@dataclasses.dataclass
class Case:
    category: str
    name: str
    argv: List[str]
    setup: Optional[Setup] = None
    slow: bool = False  # only in the `-m slow` sweep
    root_ok: bool = True  # False: meaningless as root (permission bits do not apply)

    def args(self, assets: str, work: str) -> List[str]:
        return [a.replace("{A}", assets).replace("{W}", work) for a in self.argv]


# ------------------------------------------------------------------ protobuf wire format
def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(num: int, payload: bytes) -> bytes:
    return _varint((num << 3) | 2) + _varint(len(payload)) + payload


def blob_bytes(values: np.ndarray, dims: Optional[Sequence[int]] = None) -> bytes:
    """A BlobProto: shape (field 7, packed dims) and packed float data (field 5)."""
    values = np.asarray(values, np.float32).ravel()
    dims = list(values.shape) if dims is None else list(dims)
    shape = _field(1, b"".join(_varint(int(d)) for d in dims))
    return _field(7, shape) + _field(5, struct.pack(f"<{values.size}f", *values))


def layer_bytes(name: str, ltype: str, blobs: Sequence[bytes]) -> bytes:
    body = _field(1, name.encode()) + _field(2, ltype.encode())
    return _field(100, body + b"".join(_field(7, b) for b in blobs))


NET_PROTOTXT = """name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 8 dim: 8 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 2 kernel_size: 3 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "ip1" type: "InnerProduct" bottom: "conv1" top: "ip1"
        inner_product_param { num_output: 4 } }
"""


def net_weights(rng: np.random.RandomState) -> Dict[str, List[np.ndarray]]:
    return {"conv1": [rng.randn(2, 1, 3, 3).astype("f4") * 0.5, rng.randn(2).astype("f4") * 0.1],
            "ip1": [rng.randn(4, 72).astype("f4") * 0.2, rng.randn(4).astype("f4") * 0.1]}


def caffemodel_bytes(weights: Dict[str, List[np.ndarray]],
                     dims: Optional[Dict[str, List[Sequence[int]]]] = None,
                     extra: Optional[Dict[str, List[bytes]]] = None) -> bytes:
    out = _field(1, b"tiny")
    for name, blobs in weights.items():
        shapes = (dims or {}).get(name) or [b.shape for b in blobs]
        encoded = [blob_bytes(b, d) for b, d in zip(blobs, shapes)]
        encoded += (extra or {}).get(name, [])
        out += layer_bytes(name, "Convolution" if name.startswith("conv") else "InnerProduct",
                           encoded)
    return out


def make_assets(folder: str) -> None:
    """Write the good inputs: net.prototxt/.caffemodel, cal.npy (NHWC), cal_nchw.npy,
    eval.npz (x, y), config.json. The models (model.h5, q.h5) are made by the caller."""
    rng = np.random.RandomState(0)
    with open(os.path.join(folder, "net.prototxt"), "w") as f:
        f.write(NET_PROTOTXT)
    with open(os.path.join(folder, "net.caffemodel"), "wb") as f:
        f.write(caffemodel_bytes(net_weights(rng)))
    x = rng.rand(16, 8, 8, 1).astype("f4")
    np.save(os.path.join(folder, "cal.npy"), x)
    np.save(os.path.join(folder, "cal_nchw.npy"), np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    np.savez(os.path.join(folder, "eval.npz"), x=x, y=rng.randint(0, 4, 16))
    with open(os.path.join(folder, "config.json"), "w") as f:
        f.write('{"bitwidth_weights": 8}')


# ------------------------------------------------------------------ hostile file writers
def write(name: str, data: bytes) -> Setup:
    def setup(w: str) -> None:
        with open(os.path.join(w, name), "wb") as f:
            f.write(data)
    return setup


def npy(name: str, array: np.ndarray) -> Setup:
    def setup(w: str) -> None:
        np.save(os.path.join(w, name), array)
    return setup


def npz(name: str, **arrays: np.ndarray) -> Setup:
    def setup(w: str) -> None:
        np.savez(os.path.join(w, name), **arrays)
    return setup


def npy_header_claiming(name: str, shape: Sequence[int], descr: str = "<f4") -> Setup:
    header = "{'descr': '%s', 'fortran_order': False, 'shape': %r, }" % (descr, tuple(shape))
    header = header.ljust(118) + "\n"
    return write(name, b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode()
                 + b"\x00" * 64)


def mkdir(name: str, files: Sequence[str] = ()) -> Setup:
    def setup(w: str) -> None:
        os.makedirs(os.path.join(w, name), exist_ok=True)
        for f in files:
            with open(os.path.join(w, name, f), "w") as h:
                h.write("keep me")
    return setup


def fifo(name: str) -> Setup:
    def setup(w: str) -> None:
        os.mkfifo(os.path.join(w, name))
    return setup


def chmod000(name: str, data: bytes = b"x") -> Setup:
    def setup(w: str) -> None:
        path = os.path.join(w, name)
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, 0)
    return setup


def both(*setups: Setup) -> Setup:
    def setup(w: str) -> None:
        for s in setups:
            s(w)
    return setup


def keras_zip(name: str, config: object, bomb: int = 0) -> Setup:
    def setup(w: str) -> None:
        with zipfile.ZipFile(os.path.join(w, name), "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("metadata.json", json.dumps({"keras_version": "2.15.0"}))
            zf.writestr("config.json", json.dumps(config))
            if bomb:
                zf.writestr("model.weights.h5", b"\x00" * bomb)
    return setup


def h5_claiming(name: str, shape: Sequence[int]) -> Setup:
    def setup(w: str) -> None:
        import h5py

        with h5py.File(os.path.join(w, name), "w") as f:
            f.attrs["model_config"] = json.dumps({"class_name": "Sequential", "config": {
                "name": "s", "layers": [{"class_name": "Dense", "config": {
                    "units": shape[-1], "name": "d"}}]}})
            f.attrs["keras_version"] = "2.15.0"
            f.attrs["backend"] = "tensorflow"
            g = f.create_group("model_weights/d/d")
            g.create_dataset("kernel:0", shape=tuple(shape), dtype="f4")
    return setup


def h5_forged_layer(name: str, layer: Dict[str, object], inputs: int = 40000) -> Setup:
    """A small .h5 whose model_config claims a huge layer (no weights of that size):
    Keras would allocate the layer when it builds the model, before reading weights."""
    def setup(w: str) -> None:
        import h5py

        config = {"class_name": "Sequential", "config": {"name": "s", "layers": [
            {"class_name": "InputLayer", "config": {"batch_input_shape": [None, 8, 8, inputs],
                                                    "dtype": "float32", "name": "in"}},
            layer]}}
        with h5py.File(os.path.join(w, name), "w") as f:
            f.attrs["model_config"] = json.dumps(config)
            f.attrs["keras_version"] = "2.15.0"
            f.attrs["backend"] = "tensorflow"
            g = f.create_group("model_weights")
            g.attrs["layer_names"] = [layer["config"]["name"].encode()]  # type: ignore[index]
            g.create_group(layer["config"]["name"])  # type: ignore[index]
    return setup


DENSE_40000 = {"class_name": "Dense", "config": {"name": "huge_dense", "units": 40000}}
CONV_1E9 = {"class_name": "Conv2D", "config": {"name": "huge_conv", "filters": 10 ** 9,
                                               "kernel_size": [3, 3]}}


def keras_forged_layer(name: str, layer: Dict[str, object], inputs: int = 40000) -> Setup:
    """A small .keras whose config.json claims a huge layer and whose weights file is tiny."""
    def setup(w: str) -> None:
        config = {"module": "keras", "class_name": "Sequential", "config": {"name": "s",
                  "layers": [{"module": "keras.layers", "class_name": "InputLayer", "config": {
                      "batch_input_shape": [None, inputs], "name": "in"}},
                      dict(layer, module="keras.layers")]}}
        with zipfile.ZipFile(os.path.join(w, name), "w") as zf:
            zf.writestr("metadata.json", json.dumps({"keras_version": "2.15.0"}))
            zf.writestr("config.json", json.dumps(config))
            zf.writestr("model.weights.h5", b"\x89HDF\r\n\x1a\n" + b"\x00" * 4000)
    return setup


def nested_text(depth: int, open_: str = "a {", close: str = "}") -> bytes:
    return ((open_ + " ") * depth + close * depth).encode()


# ------------------------------------------------------------------ cases
CONVERT = ["convert", "{A}/net.prototxt", "{A}/net.caffemodel"]
QUANTIZE = ["quantize", "{A}/model.h5", "--calibration", "{A}/cal.npy"]
EXPORT = ["export", "{A}/q.h5", "--data", "{A}/cal.npy"]


def _output_cases() -> List[Case]:
    cases: List[Case] = []
    commands = {"convert": (CONVERT, "m.h5"), "quantize": (QUANTIZE, "q2.h5"),
                "export": (EXPORT, "m.tflite")}
    for cmd, (base, good) in commands.items():
        ext = os.path.splitext(good)[1]
        hazards = {
            "dot": (".", None),
            "workdir-with-files": ("{W}/keep", mkdir("keep", ["a.txt", "b.txt"])),
            f"dir-named{ext}": (f"{{W}}/out{ext}", mkdir(f"out{ext}", ["x"])),
            f"empty-dir-named{ext}": (f"{{W}}/out{ext}", mkdir(f"out{ext}")),
            "fifo": (f"{{W}}/pipe{ext}", fifo(f"pipe{ext}")),
            "device": ("/dev/null", None),
            "parent-is-file": (f"{{W}}/file/m{ext}", write("file", b"data")),
            f"text-file-named{ext}": (f"{{W}}/t{ext}", write(f"t{ext}", b"precious text")),
            "unknown-ext-caffemodel": ("{W}/x.caffemodel", None),
            "text-file-named.onnx": ("{W}/t.onnx", write("t.onnx", b"precious text")),
            "unknown-ext-pb": ("{W}/x.pb", None),
            "unknown-ext-txt": ("{W}/x.txt", None),
            "trailing-dot": ("{W}/x.", None),
            "empty-name": ("", None),
            "root": ("/", None),
        }
        for i, (hname, (out, setup)) in enumerate(hazards.items()):
            cases.append(Case("output", f"{cmd}-output-{hname}", base + ["-o", out], setup))
        # the output is an input of the same command
        for inp in [a for a in base if a.startswith("{A}")]:
            cases.append(Case("output", f"{cmd}-output-is-input-{os.path.basename(inp)}",
                              base + ["-o", inp]))
    cases.append(Case("output", "convert-tflite-dir",
                      CONVERT + ["--tflite", "{W}/t.tflite"], mkdir("t.tflite", ["x"])))
    cases.append(Case("output", "convert-tflite-wrong-ext", CONVERT + ["--tflite", "{W}/t.h5"]))
    cases.append(Case("output", "quantize-save-config-is-input",
                      QUANTIZE + ["-o", "{W}/q.h5", "--save-config", "{A}/cal.npy"]))
    cases.append(Case("output", "quantize-keras-ext", QUANTIZE + ["-o", "{W}/q.keras"]))
    cases.append(Case("output", "convert-output-contains-input",
                      ["convert", "{W}/d/net.prototxt", "-o", "{W}/d"],
                      both(mkdir("d"), lambda w: open(os.path.join(w, "d", "net.prototxt"),
                                                      "w").write(NET_PROTOTXT))))
    return cases


def _nonfinite_cases() -> List[Case]:
    cases: List[Case] = []
    rng = np.random.RandomState(1)
    positions = [(0, 0, 0, 0), (15, 7, 7, 0), (3, 4, 2, 0), (8, 0, 5, 0)]
    values = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf}
    for vname, value in values.items():
        for k, pos in enumerate(positions):
            x = rng.rand(16, 8, 8, 1).astype("f4")
            x[pos] = value
            slow = k >= 2
            setup = npy("bad.npy", x)
            cases.append(Case("non-finite", f"quantize-calibration-{vname}-{k}",
                              ["quantize", "{A}/model.h5", "--calibration", "{W}/bad.npy",
                               "-o", "{W}/q.h5"], setup, slow=slow))
            cases.append(Case("non-finite", f"export-data-{vname}-{k}",
                              ["export", "{A}/q.h5", "--data", "{W}/bad.npy", "-o",
                               "{W}/m.tflite"], setup, slow=slow))
            cases.append(Case("non-finite", f"convert-quantize-calibration-{vname}-{k}",
                              CONVERT + ["--quantize-config", "{A}/config.json", "--calibration",
                                         "{W}/bad.npy", "--tflite", "{W}/m.tflite"], setup,
                              slow=slow))
            cases.append(Case("non-finite", f"inspect-data-{vname}-{k}",
                              ["inspect", "{A}/q.h5", "--data", "{W}/bad.npy"], setup, slow=slow))
            cases.append(Case("non-finite", f"quantize-eval-{vname}-{k}",
                              ["quantize", "{A}/model.h5", "--eval", "{W}/bad.npz",
                               "--calibration", "{A}/cal.npy", "-o", "{W}/q.h5"],
                              npz("bad.npz", x=x, y=np.zeros(16, "i8")), slow=slow))
            nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
            cases.append(Case("non-finite", f"compare-input-{vname}-{k}",
                              ["compare", "{A}/net.prototxt", "{A}/net.caffemodel", "--input",
                               "{W}/bad.npy", "--reference", "{W}/ref"],
                              both(npy("bad.npy", nchw), mkdir("ref")), slow=slow))
        cases.append(Case("non-finite", f"float64-{vname}",
                          ["quantize", "{A}/model.h5", "--calibration", "{W}/bad.npy", "-o",
                           "{W}/q.h5"], npy("bad.npy", np.full((4, 8, 8, 1), value))))
        cases.append(Case("non-finite", f"float16-{vname}",
                          ["export", "{A}/q.h5", "--data", "{W}/bad.npy", "-o", "{W}/m.tflite"],
                          npy("bad.npy", np.full((4, 8, 8, 1), value, "f2"))))
    cases.append(Case("non-finite", "mean-nan", CONVERT + ["--mean", "nan", "-o", "{W}/m.h5"]))
    cases.append(Case("non-finite", "mean-inf-list",
                      CONVERT + ["--mean", "1,inf,2", "-o", "{W}/m.h5"]))
    for v in ("nan", "inf", "-inf", "0"):
        cases.append(Case("non-finite", f"scale-{v}", CONVERT + ["--scale", v, "-o", "{W}/m.h5"]))
    cases.append(Case("non-finite", "reference-nan",
                      ["compare", "{A}/net.prototxt", "{A}/net.caffemodel", "--input",
                       "{A}/cal_nchw.npy", "--reference", "{W}/ref"],
                      both(mkdir("ref"), lambda w: np.save(os.path.join(w, "ref", "ip1.npy"),
                                                           np.full((16, 4), np.nan, "f4")))))
    return cases


def _array_cases() -> List[Case]:
    bad: Dict[str, Setup] = {
        "object-npz": lambda w: np.savez(os.path.join(w, "bad.npy"),
                                         x=np.array([{"a": 1}, None], dtype=object)),
        "object-npy": lambda w: np.save(os.path.join(w, "bad.npy"),
                                        np.array([1, "a", None], dtype=object)),
        "strings": npy("bad.npy", np.array([["a", "b"]] * 4)),
        "bytes": npy("bad.npy", np.array([b"ab", b"cd"])),
        "complex": npy("bad.npy", np.ones((4, 8, 8, 1), np.complex64)),
        "structured": npy("bad.npy", np.zeros(4, dtype=[("a", "f4"), ("b", "i4")])),
        "datetime": npy("bad.npy", np.array(["2020-01-01"] * 4, dtype="datetime64[D]")),
        "empty": npy("bad.npy", np.zeros((0, 8, 8, 1), "f4")),
        "scalar": npy("bad.npy", np.float32(3.0)),
        "wrong-shape": npy("bad.npy", np.zeros((4, 5, 5, 1), "f4")),
        "wrong-channels": npy("bad.npy", np.zeros((4, 8, 8, 3), "f4")),
        "wrong-rank": npy("bad.npy", np.zeros((4, 64), "f4")),
        "rank-5": npy("bad.npy", np.zeros((2, 4, 8, 8, 1), "f4")),
        "header-3.6TiB": npy_header_claiming("bad.npy", (1 << 20, 1 << 20, 1 << 10)),
        "header-overflow": npy_header_claiming("bad.npy", (1 << 62, 1 << 62)),
        "header-negative": npy_header_claiming("bad.npy", (-1, 8, 8, 1)),
        "header-truncated": npy_header_claiming("bad.npy", (16, 8, 8, 1)),
        "header-garbage": write("bad.npy", b"\x93NUMPY\x01\x00\x10\x00{'descr': 1+}   \n"),
        "header-object-descr": npy_header_claiming("bad.npy", (2,), "|O"),
        "random-bytes": write("bad.npy", bytes(range(256))),
        "zero-bytes": write("bad.npy", b""),
        "text": write("bad.npy", b"1,2,3\n4,5,6\n"),
        "directory": mkdir("bad.npy"),
        "dev-zero": None,
        "missing": None,
        "zip-not-npz": lambda w: zipfile.ZipFile(os.path.join(w, "bad.npy"), "w").writestr(
            "x.txt", "hi"),
        "npz-no-x": npz("bad.npy", a=np.zeros((4, 8, 8, 1), "f4"), b=np.zeros(3, "f4")),
        "npz-empty": lambda w: zipfile.ZipFile(os.path.join(w, "bad.npy"), "w").close(),
        "npz-bomb": lambda w: _npz_bomb(os.path.join(w, "bad.npy")),
        "unreadable": chmod000("bad.npy", b"\x93NUMPY"),
    }
    commands = {
        "quantize": ["quantize", "{A}/model.h5", "--calibration", "{X}", "-o", "{W}/q.h5"],
        "export": ["export", "{A}/q.h5", "--data", "{X}", "-o", "{W}/m.tflite"],
        "inspect": ["inspect", "{A}/q.h5", "--data", "{X}"],
        "convert-quantize": CONVERT + ["--quantize-config", "{A}/config.json", "--calibration",
                                       "{X}", "-o", "{W}/q.h5"],
        "compare": ["compare", "{A}/net.prototxt", "{A}/net.caffemodel", "--input", "{X}",
                    "--reference", "{A}"],
    }
    cases = []
    for cmd, argv in commands.items():
        for name, setup in bad.items():
            x = {"dev-zero": "/dev/zero", "missing": "{W}/missing.npy"}.get(name, "{W}/bad.npy")
            if cmd == "compare" and name in ("wrong-rank", "rank-5"):
                continue
            slow = cmd in ("inspect", "compare", "convert-quantize") and name not in (
                "object-npz", "header-3.6TiB", "strings", "wrong-shape", "dev-zero")
            cases.append(Case("array-file", f"{cmd}-data-{name}", [a.replace("{X}", x) for a in argv],
                              setup, slow=slow, root_ok=name != "unreadable"))
    # labels for --eval
    x = np.random.RandomState(2).rand(16, 8, 8, 1).astype("f4")
    labels = {
        "strings": np.array(["cat"] * 16), "too-few": np.zeros(3, "i8"),
        "fractional": np.full(16, 0.5), "negative": -np.ones(16, "i8"),
        "nan": np.full(16, np.nan), "rank-3": np.zeros((16, 2, 2)), "missing": None,
        "object": None,
    }
    for name, y in labels.items():
        if name == "missing":
            setup = npz("ev.npz", x=x)
        elif name == "object":
            setup = lambda w: np.savez(os.path.join(w, "ev.npz"), x=x,  # noqa: E731
                                       y=np.array([None] * 16, dtype=object))
        else:
            setup = npz("ev.npz", x=x, y=y)
        cases.append(Case("labels", f"eval-{name}",
                          ["quantize", "{A}/model.h5", "--calibration", "{A}/cal.npy", "--eval",
                           "{W}/ev.npz", "-o", "{W}/q.h5"], setup))
    cases.append(Case("labels", "eval-is-npy", ["quantize", "{A}/model.h5", "--eval",
                                                  "{A}/cal.npy", "-o", "{W}/q.h5"]))
    # layout
    cube = np.random.RandomState(3).rand(4, 8, 8, 8).astype("f4")
    cases.append(Case("layout", "layout-wrong-flag",
                      ["quantize", "{A}/model.h5", "--calibration", "{A}/cal.npy", "--layout",
                       "nchw", "-o", "{W}/q.h5"]))
    cases.append(Case("layout", "layout-nhwc-given-nchw",
                      ["export", "{A}/q.h5", "--data", "{A}/cal_nchw.npy", "--layout", "nhwc",
                       "-o", "{W}/m.tflite"]))
    cases.append(Case("layout", "layout-bogus",
                      ["quantize", "{A}/model.h5", "--layout", "hwcn", "-o", "{W}/q.h5"]))
    cases.append(Case("layout", "layout-fits-neither", ["inspect", "{A}/q.h5", "--data",
                                                          "{W}/c.npy"], npy("c.npy", cube)))
    return cases


def _npz_bomb(path: str) -> None:
    """An .npz whose member claims 64 GiB (a valid .npy header, a few KB of zeros)."""
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (16, 1024, 1024, 1024), }"
    header = header.ljust(118) + "\n"
    head = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("x.npy", head + b"\x00" * (1 << 20))


def _caffe_cases() -> List[Case]:
    rng = np.random.RandomState(4)
    w = net_weights(rng)
    models: Dict[str, bytes] = {
        "dim-minus-1": caffemodel_bytes(w, {"conv1": [(2, 1, -1, 3), (2,)]}),
        "dims-overflow": caffemodel_bytes(w, {"ip1": [(1 << 32, 1 << 32, 1 << 1), (4,)]}),
        "dims-overflow-int64": caffemodel_bytes(w, {"ip1": [(1 << 62, 1 << 62, 16), (4,)]}),
        "dims-too-few-values": caffemodel_bytes(w, {"ip1": [(4, 73), (4,)]}),
        "extra-blob": caffemodel_bytes(w, extra={"conv1": [blob_bytes(np.ones(2))]}),
        "truncated": caffemodel_bytes(w)[:-7],
        "renamed-layers": caffemodel_bytes({"conv9": w["conv1"], "ip9": w["ip1"]}),
        "nan-weights": caffemodel_bytes({"conv1": [np.full((2, 1, 3, 3), np.nan, "f4"),
                                                   w["conv1"][1]], "ip1": w["ip1"]}),
        "empty": b"",
        "text": NET_PROTOTXT.encode(),
        "random": bytes(range(256)) * 4,
        "length-huge": _field(1, b"tiny")[:2] + _varint(1 << 40),
    }
    cases = []
    for name, data in models.items():
        for cmd in ("convert", "compare"):
            argv = (["convert", "{A}/net.prototxt", "{W}/bad.caffemodel", "-o", "{W}/m.h5"]
                    if cmd == "convert" else
                    ["compare", "{A}/net.prototxt", "{W}/bad.caffemodel", "--input",
                     "{A}/cal_nchw.npy", "--reference", "{A}"])
            cases.append(Case("caffe", f"{cmd}-caffemodel-{name}", argv,
                              write("bad.caffemodel", data), slow=cmd == "compare"))
    protos = {
        "nested-5000": nested_text(5000),
        "nested-200-layer": b'layer { name: "x" type: "ReLU" ' + nested_text(200, "p {")[:] + b"}",
        "duplicate-top": NET_PROTOTXT.replace(
            'layer { name: "ip1"',
            'layer { name: "r2" type: "ReLU" bottom: "data" top: "conv1" }\nlayer { name: "ip1"'
        ).encode(),
        "duplicate-top-same-layer": NET_PROTOTXT.replace(
            'top: "ip1"', 'top: "ip1" top: "ip1"').encode(),
        "fractional-dim": NET_PROTOTXT.replace("dim: 8 dim: 8", "dim: 8.5 dim: 8").encode(),
        "negative-dim": NET_PROTOTXT.replace("dim: 8 dim: 8", "dim: -8 dim: 8").encode(),
        "zero-dim": NET_PROTOTXT.replace("dim: 8 dim: 8", "dim: 0 dim: 8").encode(),
        "huge-dim": NET_PROTOTXT.replace("dim: 8 dim: 8", "dim: 99999999999 dim: 8").encode(),
        "binary": bytes(range(256)),
        "empty": b"",
        "latin1": "name: \"\xe9\xe8\"\n".encode("latin1") + b"\xff\xfe",
        "unclosed": b'layer { name: "a" type: "ReLU"',
        "bottom-missing": NET_PROTOTXT.replace('bottom: "conv1" top: "ip1"',
                                               'bottom: "nope" top: "ip1"').encode(),
        "unknown-type": NET_PROTOTXT.replace('type: "ReLU"', 'type: "Frobnicate"').encode(),
        "kernel-zero": NET_PROTOTXT.replace("kernel_size: 3", "kernel_size: 0").encode(),
        "kernel-too-big": NET_PROTOTXT.replace("kernel_size: 3", "kernel_size: 30").encode(),
        "num-output-zero": NET_PROTOTXT.replace("num_output: 4", "num_output: 0").encode(),
    }
    for name, data in protos.items():
        cases.append(Case("caffe", f"prototxt-{name}",
                          ["convert", "{W}/bad.prototxt", "{A}/net.caffemodel", "-o", "{W}/m.h5"],
                          write("bad.prototxt", data)))
    specials = {
        "prototxt-directory": (["convert", "{W}/d", "-o", "{W}/m.h5"], mkdir("d")),
        "prototxt-dev-zero": (["convert", "/dev/zero", "-o", "{W}/m.h5"], None),
        "caffemodel-dev-zero": (["convert", "{A}/net.prototxt", "/dev/zero", "-o", "{W}/m.h5"],
                                None),
        "caffemodel-directory": (["convert", "{A}/net.prototxt", "{W}/d", "-o", "{W}/m.h5"],
                                 mkdir("d")),
        "caffemodel-missing": (["convert", "{A}/net.prototxt", "{W}/no.caffemodel", "-o",
                                "{W}/m.h5"], None),
        "prototxt-unreadable": (["convert", "{W}/u.prototxt", "-o", "{W}/m.h5"],
                                chmod000("u.prototxt", NET_PROTOTXT.encode())),
        "mean-file-directory": (CONVERT + ["--mean", "{W}/d", "-o", "{W}/m.h5"], mkdir("d")),
        "mean-file-garbage": (CONVERT + ["--mean", "{W}/m.binaryproto", "-o", "{W}/m.h5"],
                              write("m.binaryproto", bytes(range(200)))),
        "swapped-files": (["convert", "{A}/net.caffemodel", "{A}/net.prototxt", "-o",
                           "{W}/m.h5"], None),
    }
    for name, (argv, setup) in specials.items():
        cases.append(Case("caffe", name, argv, setup, root_ok=name != "prototxt-unreadable"))
    return cases


def _option_cases() -> List[Case]:
    q = ["quantize", "{A}/model.h5", "--calibration", "{A}/cal.npy", "-o", "{W}/q.h5"]
    options = {
        "batch-size-0": q + ["--batch-size", "0"],
        "batch-size-negative": q + ["--batch-size", "-3"],
        "batch-size-text": q + ["--batch-size", "many"],
        "steps-0": q + ["--steps", "0"],
        "ignore-unknown": q + ["--ignore", "no_such_layer"],
        "bits-0": q + ["--bits-weights", "0"],
        "bits-99": q + ["--bits-activations", "99"],
        "precision-bogus": q + ["--precision", "int3"],
        "search-without-eval": q + ["--search"],
        "candidates-text": q + ["--search", "--eval", "{A}/eval.npz", "--candidates", "a,b"],
        "config-missing": q + ["--config", "{W}/none.json"],
        "config-json-nested": q + ["--config", "{W}/c.json"],
        "config-json-garbage": q + ["--config", "{W}/g.json"],
        "config-json-wrong-type": q + ["--config", "{W}/t.json"],
        "solver-without-config": q + ["--solver", "{A}/net.prototxt"],
        "unknown-option": q + ["--frobnicate"],
        "convert-outputs-unknown": CONVERT + ["--outputs", "nope", "-o", "{W}/m.h5"],
        "convert-input-shape-fraction": CONVERT + ["--input-shape", "data:1,1,8.5,8", "-o",
                                                   "{W}/m.h5"],
        "convert-input-shape-unknown": CONVERT + ["--input-shape", "nope:1,1,8,8", "-o",
                                                  "{W}/m.h5"],
        "convert-input-shape-junk": CONVERT + ["--input-shape", "data", "-o", "{W}/m.h5"],
        "convert-input-shape-zero": CONVERT + ["--input-shape", "data:0,1,8,8", "-o", "{W}/m.h5"],
        "convert-no-output": CONVERT,
        "convert-mean-text": CONVERT + ["--mean", "blue", "-o", "{W}/m.h5"],
        "convert-mean-empty": CONVERT + ["--mean", ",", "-o", "{W}/m.h5"],
        "export-target-bogus": ["export", "{A}/q.h5", "--target", "int4", "-o", "{W}/m.tflite"],
        "export-verify-no-data": ["export", "{A}/q.h5", "--verify", "-o", "{W}/m.tflite"],
        "compare-no-reference": ["compare", "{A}/net.prototxt", "{A}/net.caffemodel",
                                 "--input", "{A}/cal_nchw.npy", "--reference", "{W}/none"],
        "compare-input-unknown-name": ["compare", "{A}/net.prototxt", "{A}/net.caffemodel",
                                       "--input", "nope={A}/cal_nchw.npy", "--reference", "{A}"],
        "compare-reference-unreadable-npy": ["compare", "{A}/net.prototxt",
                                             "{A}/net.caffemodel", "--input",
                                             "{A}/cal_nchw.npy", "--reference", "{W}/r"],
        "no-command": [],
        "bad-command": ["frobnicate"],
    }
    setups: Dict[str, Setup] = {
        "config-json-nested": write("c.json", b"[" * 100000 + b"]" * 100000),
        "config-json-garbage": write("g.json", b"{bitwidth_weights: 8"),
        "config-json-wrong-type": write("t.json", b'{"bitwidth_weights": "eight"}'),
        "compare-reference-unreadable-npy": both(mkdir("r"), lambda w: open(
            os.path.join(w, "r", "ip1.npy"), "wb").write(b"\x93NUMPY garbage")),
    }
    return [Case("options", name, argv, setups.get(name)) for name, argv in options.items()]


def _model_cases() -> List[Case]:
    models = {
        "random-bytes.h5": write("m.h5", bytes(range(256)) * 8),
        "empty.h5": write("m.h5", b""),
        "text.h5": write("m.h5", b"not a model"),
        "npy-as-model.h5": npy("m.h5", np.zeros(3)),
        "truncated.h5": lambda w: _truncated_copy(w),
        "dir-not-savedmodel": mkdir("m.h5", ["x.txt"]),
        "fifo": fifo("m.h5"),
        "dev-zero": None,
        "h5-40000x40000": h5_claiming("m.h5", (40000, 40000)),
        "h5-37GiB": h5_claiming("m.h5", (100000, 100000)),
        "keras-module-this": keras_zip("m.keras", {"module": "this", "class_name": "Foo",
                                                   "config": {}}),
        "keras-nested-module-os": keras_zip("m.keras", {"class_name": "Functional", "config": {
            "layers": [{"module": "os.path", "class_name": "join", "config": {}}]}}),
        "keras-zip-bomb": keras_zip("m.keras", {"class_name": "Sequential", "config": {}},
                                    bomb=300 << 20),
        "keras-nested-5000": lambda w: zipfile.ZipFile(os.path.join(w, "m.keras"), "w").writestr(
            "config.json", "[" * 5000 + "]" * 5000),
        "keras-not-zip": write("m.keras", b"PK\x03\x04garbage"),
        "h5-config-dense-40000x40000": h5_forged_layer("m.h5", DENSE_40000),
        "h5-config-conv-1e9-filters": h5_forged_layer("m.h5", CONV_1E9, inputs=1),
        "keras-config-dense-40000x40000": keras_forged_layer("m.keras", DENSE_40000),
    }
    cases = []
    for name, setup in models.items():
        path = "{W}/m.keras" if name.startswith("keras") else "{W}/m.h5"
        if name == "dev-zero":
            path = "/dev/zero"
        slow_cmd = name not in ("keras-module-this", "h5-40000x40000", "fifo", "keras-zip-bomb",
                                "random-bytes.h5", "h5-config-dense-40000x40000",
                                "keras-config-dense-40000x40000")
        for cmd, argv in {
            "quantize": ["quantize", path, "-o", "{W}/q.h5"],
            "export": ["export", path, "-o", "{W}/x.tflite"],
            "inspect": ["inspect", path],
        }.items():
            cases.append(Case("model-file", f"{cmd}-model-{name}", argv, setup,
                              slow=slow_cmd and cmd != "quantize"))
    cases.append(Case("model-file", "quantize-already-quantized",
                      ["quantize", "{A}/q.h5", "-o", "{W}/q2.h5"]))
    cases.append(Case("model-file", "export-float-model-int8",
                      ["export", "{A}/model.h5", "--target", "int8", "-o", "{W}/m.tflite"]))
    return cases


def _truncated_copy(w: str) -> None:
    assets = os.environ["KERASQ_HOSTILE_ASSETS"]
    with open(os.path.join(assets, "model.h5"), "rb") as f:
        data = f.read()
    with open(os.path.join(w, "m.h5"), "wb") as f:
        f.write(data[: len(data) // 2])


def all_cases() -> List[Case]:
    cases = (_output_cases() + _nonfinite_cases() + _array_cases() + _caffe_cases()
             + _option_cases() + _model_cases() + _savedmodel_cases()
             + _path_cases())
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), "duplicate case names"
    return cases


def snapshot(folder: str) -> Dict[str, object]:
    """Relative path -> bytes (files), 'dir', or the file type of special files."""
    out: Dict[str, object] = {}
    for root, dirs, files in os.walk(folder):
        for d in dirs:
            out[os.path.relpath(os.path.join(root, d), folder)] = "dir"
        for f in files:
            path = os.path.join(root, f)
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode):
                out[os.path.relpath(path, folder)] = f"special {stat.S_IFMT(st.st_mode)}"
                continue
            try:
                with open(path, "rb") as h:
                    out[os.path.relpath(path, folder)] = h.read()
            except PermissionError:
                out[os.path.relpath(path, folder)] = f"unreadable {st.st_size} {st.st_mtime_ns}"
    return out


# ------------------------------------------------------------------ SavedModel directories
_CRC32C_TABLE: List[int] = []


def _crc32c_update(crc: int, data: bytes) -> int:
    if not _CRC32C_TABLE:
        for i in range(256):
            c = i
            for _ in range(8):
                c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
            _CRC32C_TABLE.append(c)
    crc ^= 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked(crc: int) -> int:  # LevelDB/TF table block checksum
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def patch_table_block(data: bytes, old: bytes, new: bytes) -> bytes:
    """``data`` (a TF table file such as ``variables.index``) with ``old`` replaced by the
    same-length ``new`` inside the first data block, its checksum recomputed (TF checks it)."""
    assert len(old) == len(new) and data.count(old) == 1
    pos = data.index(old)
    for end in range(pos + len(old), len(data) - 4):  # block = [0, end) + type byte + crc
        stored = struct.unpack("<I", data[end + 1:end + 5])[0]
        if _masked(_crc32c_update(0, data[:end + 1])) == stored:
            patched = data[:pos] + new + data[pos + len(old):]
            crc = struct.pack("<I", _masked(_crc32c_update(0, patched[:end + 1])))
            return patched[:end + 1] + crc + patched[end + 5:]
    raise AssertionError("no table block around the patch")


_SAVED_MODEL: Dict[str, str] = {}


def saved_model(name: str, mutate: Optional[Callable[[str], None]] = None) -> Setup:
    """A real Keras SavedModel (a 1x1 Conv2D, 128 -> 128 channels) copied to ``name``, then
    ``mutate(path)``. Saved once per process."""
    def setup(w: str) -> None:
        import shutil
        import tempfile

        if "path" not in _SAVED_MODEL:
            from kerasq._compat import keras

            folder = tempfile.mkdtemp(prefix="kerasq-hostile-savedmodel-")
            inp = keras.Input((4, 4, 128), name="x")
            model = keras.Model(inp, keras.layers.Conv2D(128, 1, name="conv")(inp))
            model.save(os.path.join(folder, "sm"))
            _SAVED_MODEL["path"] = os.path.join(folder, "sm")
        target = os.path.join(w, name)
        shutil.copytree(_SAVED_MODEL["path"], target)
        if mutate is not None:
            mutate(target)
    return setup


def _data_file(sm: str) -> str:
    variables = os.path.join(sm, "variables")
    return os.path.join(variables, next(n for n in sorted(os.listdir(variables))
                                        if n.startswith("variables.data-")))


def _truncate_data(sm: str) -> None:
    path = _data_file(sm)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2)


def _claim_huge_kernel(sm: str) -> None:
    """The index claims the kernel is 127x127x16383x16383 float32 (17 TB)."""
    path = os.path.join(sm, "variables", "variables.index")
    with open(path, "rb") as f:
        data = f.read()
    old = b"\x12\x02\x08\x01\x12\x02\x08\x01\x12\x03\x08\x80\x01\x12\x03\x08\x80\x01"
    new = b"\x12\x02\x08\x7f\x12\x02\x08\x7f\x12\x03\x08\xff\x7f\x12\x03\x08\xff\x7f"
    with open(path, "wb") as f:
        f.write(patch_table_block(data, old, new))


def _remove(*parts: str) -> Callable[[str], None]:
    def mutate(sm: str) -> None:
        import shutil

        path = os.path.join(sm, *parts)
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    return mutate


def _replace_with(parts: Sequence[str], data: Optional[bytes]) -> Callable[[str], None]:
    """The file ``parts`` replaced by ``data`` (None: a FIFO)."""
    def mutate(sm: str) -> None:
        path = os.path.join(sm, *parts)
        os.remove(path)
        if data is None:
            os.mkfifo(path)
        else:
            with open(path, "wb") as f:
                f.write(data)
    return mutate


def _savedmodel_cases() -> List[Case]:
    hazards = {
        "truncated-variables-data": ("sm", _truncate_data),
        "empty-variables-data": ("sm", lambda sm: open(_data_file(sm), "wb").close()),
        "index-claims-17TB-kernel": ("sm", _claim_huge_kernel),
        "index-garbage": ("sm", _replace_with(("variables", "variables.index"), b"garbage" * 9)),
        "index-fifo": ("sm", _replace_with(("variables", "variables.index"), None)),
        "no-variables": ("sm", _remove("variables")),
        "no-keras-metadata": ("sm", _remove("keras_metadata.pb")),
        "no-saved-model-pb": ("sm", _remove("saved_model.pb")),
        "saved-model-pb-fifo": ("sm", _replace_with(("saved_model.pb",), None)),
        "savedmodel-dir-named.h5": ("m.h5", None),
        "savedmodel-dir-named.keras": ("m.keras", None),
    }
    cases = []
    for name, (target, mutate) in hazards.items():
        setup = saved_model(target, mutate)
        for cmd, argv in {"quantize": ["quantize", f"{{W}}/{target}", "-o", "{W}/q.h5"],
                          "export": ["export", f"{{W}}/{target}", "-o", "{W}/x.tflite"],
                          "inspect": ["inspect", f"{{W}}/{target}"]}.items():
            cases.append(Case("model-file", f"{cmd}-savedmodel-{name}", argv, setup,
                              slow=cmd != "quantize"))
    return cases


# ------------------------------------------------------------------ paths, encodings, cuts
def symlink(name: str, target: str) -> Setup:
    """``name`` -> ``target`` (``{A}`` in target: the shared assets)."""
    def setup(w: str) -> None:
        dest = target.replace("{A}", os.environ.get("KERASQ_HOSTILE_ASSETS", ""))
        os.symlink(dest if os.path.isabs(dest) else dest, os.path.join(w, name))
    return setup


def bytes_named(name: bytes, data: bytes) -> Setup:
    """A file whose name is not UTF-8 (``name`` in bytes)."""
    def setup(w: str) -> None:
        with open(os.path.join(os.fsencode(w), name), "wb") as f:
            f.write(data)
    return setup


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


LONG = "n" * 300  # over NAME_MAX (255): ENAMETOOLONG
NON_UTF8 = os.fsdecode(b"cal\xff\xfe")  # surrogate-escaped in argv, as the shell passes it


def _path_cases() -> List[Case]:
    nan = np.full((4, 8, 8, 1), np.nan, "f4")
    cases = [
        Case("output", "convert-output-symlink-loop", CONVERT + ["-o", "{W}/loop.h5"],
             symlink("loop.h5", "loop.h5")),
        Case("output", "quantize-output-symlink-to-input", QUANTIZE + ["-o", "{W}/link.h5"],
             symlink("link.h5", "{A}/model.h5")),
        Case("output", "export-output-symlink-to-input", EXPORT + ["-o", "{W}/link.tflite"],
             symlink("link.tflite", "{A}/q.h5")),
        Case("output", "convert-output-symlink-to-prototxt",
             CONVERT + ["-o", "{W}/link.h5"], symlink("link.h5", "{A}/net.prototxt")),
        Case("output", "quantize-output-dir-symlink-to-assets",
             QUANTIZE + ["-o", "{W}/adir/model.h5"], symlink("adir", "{A}")),
        Case("output", "convert-output-name-too-long", CONVERT + ["-o", f"{{W}}/{LONG}.h5"]),
        Case("output", "export-output-name-too-long", EXPORT + ["-o", f"{{W}}/{LONG}.tflite"]),
        Case("output", "quantize-output-dir-too-long",
             QUANTIZE + ["-o", f"{{W}}/{LONG}/q.h5"]),
        Case("array-file", "quantize-calibration-symlink-loop",
             ["quantize", "{A}/model.h5", "--calibration", "{W}/loop.npy", "-o", "{W}/q.h5"],
             symlink("loop.npy", "loop.npy")),
        Case("array-file", "quantize-calibration-name-too-long",
             ["quantize", "{A}/model.h5", "--calibration", f"{{W}}/{LONG}.npy", "-o", "{W}/q.h5"]),
        Case("array-file", "quantize-calibration-non-utf8-name-nan",
             ["quantize", "{A}/model.h5", "--calibration", f"{{W}}/{NON_UTF8}.npy",
              "-o", "{W}/q.h5"], bytes_named(b"cal\xff\xfe.npy", _npy_bytes(nan))),
        Case("array-file", "quantize-calibration-non-utf8-name-missing",
             ["quantize", "{A}/model.h5", "--calibration", f"{{W}}/{NON_UTF8}.npy",
              "-o", "{W}/q.h5"]),
        Case("array-file", "export-data-non-utf8-name-strings",
             ["export", "{A}/q.h5", "--data", f"{{W}}/{NON_UTF8}.npy", "-o", "{W}/x.tflite"],
             bytes_named(b"cal\xff\xfe.npy", _npy_bytes(np.array(["a", "b"])))),
        Case("model-file", "quantize-model-symlink-loop", ["quantize", "{W}/m.h5", "-o", "{W}/q.h5"],
             symlink("m.h5", "m.h5")),
        Case("model-file", "quantize-model-name-too-long",
             ["quantize", f"{{W}}/{LONG}.h5", "-o", "{W}/q.h5"]),
        Case("model-file", "quantize-model-non-utf8-name-text",
             ["quantize", f"{{W}}/{NON_UTF8}.h5", "-o", "{W}/q.h5"],
             bytes_named(b"cal\xff\xfe.h5", b"not a model")),
        Case("caffe", "convert-prototxt-symlink-loop",
             ["convert", "{W}/loop.prototxt", "{A}/net.caffemodel", "-o", "{W}/m.h5"],
             symlink("loop.prototxt", "loop.prototxt")),
        Case("caffe", "convert-prototxt-non-utf8-name-nested",
             ["convert", f"{{W}}/{NON_UTF8}.prototxt", "-o", "{W}/m.h5"],
             bytes_named(b"cal\xff\xfe.prototxt", nested_text(5000, "layer {"))),
        Case("caffe", "convert-prototxt-nul-bytes",
             ["convert", "{W}/n.prototxt", "{A}/net.caffemodel", "-o", "{W}/m.h5"],
             write("n.prototxt", NET_PROTOTXT.replace("conv1", "conv\x001", 1).encode())),
        Case("caffe", "convert-prototxt-bom-and-nul",
             ["convert", "{W}/n.prototxt", "-o", "{W}/m.h5"],
             write("n.prototxt", b"\xef\xbb\xbf" + NET_PROTOTXT.encode() + b"\x00\x00")),
        Case("caffe", "convert-prototxt-utf16",
             ["convert", "{W}/n.prototxt", "-o", "{W}/m.h5"],
             write("n.prototxt", NET_PROTOTXT.encode("utf-16"))),
    ]
    good = caffemodel_bytes(net_weights(np.random.RandomState(0)))
    for eighth in range(1, 8):
        cut = len(good) * eighth // 8
        cases.append(Case("caffe", f"convert-caffemodel-cut-at-{eighth}-8",
                          ["convert", "{A}/net.prototxt", "{W}/cut.caffemodel", "-o", "{W}/m.h5"],
                          write("cut.caffemodel", good[:cut]), slow=eighth % 2 == 0))
    cal = ["quantize", "{A}/model.h5", "--calibration", "{W}/c.npy", "-o", "{W}/q.h5"]
    for name, array in {
        "float16-inf": np.full((4, 8, 8, 1), np.inf, np.float16),
        "float16-nan": np.full((4, 8, 8, 1), np.nan, np.float16),
        "bool": np.ones((4, 8, 8, 1), bool),
        "float64-beyond-float32": np.full((4, 8, 8, 1), 1e39, np.float64),
        "float64-one-beyond-float32": np.pad(np.full((1, 8, 8, 1), -3.5e38), ((3, 0), (0, 0),
                                                                               (0, 0), (0, 0))),
    }.items():
        cases.append(Case("non-finite" if "float16" in name else "array-file",
                          f"quantize-calibration-{name}", cal, npy("c.npy", array)))
    for value in ("1" + "0" * 30, str(1 << 63), "1e9", "0x10"):
        cases.append(Case("options", f"quantize-batch-size-{value[:12]}",
                          QUANTIZE + ["--batch-size", value, "-o", "{W}/q.h5"]))
    return cases
