"""Bad input through the Python API: every public function raises a ``kerasq.errors``
subclass with a one-line message naming the argument (or the file) and the reason.

The table below pairs each public function (README, ``kerasq.__all__``, ``kerasq.export``,
``kerasq.prune``, ``kerasq.integer``, ``kerasq.evaluate``, ``kerasq.converters.caffe``,
``kerasq.serialization``, ``kerasq.data``, ``kerasq.report``, ``kerasq.schemes``) with bad
arguments of every category: None, wrong type, wrong shape / rank, empty arrays, NaN/Inf,
string / object / complex arrays, non-existent paths, directories, FIFOs, devices,
wrong-kind files, file contents given as a path, zero / negative sizes, unknown layer,
top and option names, bad keyword values, bad quantization configs. Each row states the
exception class expected and the text the message must name; a row passes only if that
class is raised (no other exception, no success), the message is one line, and it names
the argument. No file is written by any row.
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
from typing import Any, Callable, List

import numpy as np
import pytest

from kerasq.errors import (
    ArgumentError,
    CaffeFormatError,
    DataError,
    ExportError,
    KerasqError,
    ModelFormatError,
    OutputError,
    QuantizationConfigError,
)
from reliability import hostile_cases as hc


@dataclasses.dataclass
class Env:
    """What the rows use: a float model, a calibrated quantized model, files of each kind."""

    d: str
    model: Any
    qmodel: Any
    report: Any

    def __getattr__(self, name: str) -> str:  # e.g. env.fifo -> "<d>/fifo"
        if name.startswith("_"):
            raise AttributeError(name)
        return os.path.join(self.__dict__["d"], name)

    @property
    def x(self) -> np.ndarray:
        return np.random.RandomState(0).rand(4, 8, 8, 1).astype("f4")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from kerasq._compat import keras

    import kerasq
    from kerasq.report import build_report

    d = str(tmp_path_factory.mktemp("api_bad"))
    hc.make_assets(d)
    os.mkfifo(os.path.join(d, "fifo"))
    for ext in (".tflite", ".onnx", ".json"):
        os.mkfifo(os.path.join(d, "fifo" + ext))
    os.makedirs(os.path.join(d, "dir", "inside"))
    with open(os.path.join(d, "dir", "keep.txt"), "w") as f:
        f.write("keep")
    os.makedirs(os.path.join(d, "empty_dir"))
    with open(os.path.join(d, "text.txt"), "w") as f:
        f.write("just text\n")
    for name in ("text.h5", "text.tflite", "text.npy", "text.keras", "text.onnx", "text.json"):
        with open(os.path.join(d, name), "w") as f:
            f.write("just text\n")
    np.save(os.path.join(d, "strings.npy"), np.array([["a", "b"]] * 4))
    np.save(os.path.join(d, "nan.npy"), np.full((4, 8, 8, 1), np.nan, "f4"))
    hc.h5_forged_layer("forged.h5", hc.DENSE_40000)(d)
    hc.h5_forged_layer("forged_conv.h5", hc.CONV_1E9, inputs=1)(d)
    hc.keras_forged_layer("forged.keras", hc.DENSE_40000)(d)
    rng = np.random.RandomState(0)
    inp = keras.Input((8, 8, 1), name="data")
    h = keras.layers.Conv2D(2, 3, name="conv1", activation="relu")(inp)
    h = keras.layers.Flatten(name="flat")(h)
    out = keras.layers.Dense(4, name="ip1")(h)
    model = keras.Model(inp, out, name="tiny")
    qmodel = kerasq.quantize_model(model)
    x = rng.rand(16, 8, 8, 1).astype("f4")
    kerasq.calibrate(qmodel, x)
    report = build_report(qmodel, None, latency_runs=1)
    before = sorted(os.listdir(d))
    yield Env(d, model, qmodel, report)
    assert sorted(os.listdir(d)) == before, "a bad-input call wrote a file"


@dataclasses.dataclass
class Row:
    name: str
    call: Callable[[Env], Any]
    error: type
    names: str  # text the message must hold: the argument name, or "{d}" for the folder


ROWS: List[Row] = []


def row(name: str, error: type, names: str) -> Callable[[Callable[[Env], Any]], None]:
    def add(call: Callable[[Env], Any]) -> None:
        ROWS.append(Row(name, call, error, names))
    return add


def rows(prefix: str, error: type, names: str, call: Callable[[Env, Any], Any],
         values: dict) -> None:
    """One row per ``values`` item: ``call(env, value(env))``."""
    for label, make in values.items():
        ROWS.append(Row(f"{prefix}-{label}", (lambda e, c=call, m=make: c(e, m(e))),
                        error, names))


# bad array data of every kind; each is a function of the env
BAD_ARRAYS = {
    "none": lambda e: None,
    "path-string": lambda e: e.__getattr__("cal.npy"),
    "int": lambda e: 7,
    "scalar-array": lambda e: np.float32(1.0),
    "strings": lambda e: np.array([["a", "b"]] * 4),
    "object": lambda e: np.array([1, None, "a"], dtype=object),
    "complex": lambda e: np.ones((4, 8, 8, 1), np.complex64),
    "bytes": lambda e: np.array([b"ab", b"cd"]),
    "empty": lambda e: np.zeros((0, 8, 8, 1), "f4"),
    "nan": lambda e: np.where(np.arange(256).reshape(4, 8, 8, 1) == 77, np.nan,
                              e.x).astype("f4"),
    "inf": lambda e: np.full((4, 8, 8, 1), np.inf, "f4"),
    "wrong-shape": lambda e: np.zeros((4, 5, 5, 1), "f4"),
    "wrong-channels": lambda e: np.zeros((4, 8, 8, 3), "f4"),
    "wrong-rank": lambda e: np.zeros((4, 64), "f4"),
    "rank-5": lambda e: np.zeros((2, 4, 8, 8, 1), "f4"),
    "nchw": lambda e: np.zeros((4, 1, 8, 8), "f4"),
    "ragged-list": lambda e: [[1.0, 2.0], [3.0]],
}
# the same data where only the array checks apply (no model to compare shapes with)
ARRAY_ONLY = {k: v for k, v in BAD_ARRAYS.items()
              if k not in ("wrong-shape", "wrong-channels", "wrong-rank", "rank-5", "nchw")}
BAD_INTS = {"zero": lambda e: 0, "negative": lambda e: -3, "float": lambda e: 1.5,
            "string": lambda e: "32", "bool": lambda e: True, "none": lambda e: None,
            "nan": lambda e: math.nan}
BAD_BOOLS = {"string": lambda e: "no", "int": lambda e: 2, "none-like": lambda e: [],
             "array": lambda e: np.zeros(2)}
NOT_MODELS = {"none": lambda e: None, "path": lambda e: e.__getattr__("q.h5"),
              "array": lambda e: np.zeros((2, 8, 8, 1)), "dict": lambda e: {"layers": []},
              "class": lambda e: type(e.model)}
# output paths that would destroy something or cannot be written: (value, error, names)
OUTPUT_HAZARDS = {
    "directory-with-files": (lambda e, ext: e.dir, OutputError, "{d}"),
    "fifo": (lambda e, ext: e.__getattr__("fifo" + ext), OutputError, "fifo"),
    "device": (lambda e, ext: "/dev/null", OutputError, "/dev/null"),
    "parent-is-file": (lambda e, ext: os.path.join(e.__getattr__("text.txt"), "m" + ext),
                       OutputError, "text.txt"),
    "wrong-kind-file": (lambda e, ext: e.__getattr__("text" + ext), OutputError, "text"),
    "wrong-extension": (lambda e, ext: e.__getattr__("m.caffemodel"), OutputError, "caffemodel"),
    "an-input": (lambda e, ext: e.__getattr__("net.prototxt"), OutputError, "net.prototxt"),
    "int": (lambda e, ext: 5, ArgumentError, "path"),
    "bytes": (lambda e, ext: b"m" + ext.encode(), ArgumentError, "path"),
    "empty": (lambda e, ext: "", ArgumentError, "path"),
    "root": (lambda e, ext: "/", OutputError, "/"),
}
# input paths that are not a readable file of the right kind: (value, error, names)
INPUT_HAZARDS = {
    "none": (lambda e: None, ArgumentError, "{arg}"),
    "int": (lambda e: 3, ArgumentError, "{arg}"),
    "bytes": (lambda e: b"x", ArgumentError, "{arg}"),
    "missing": (lambda e: e.missing_file, None, "missing_file"),
    "directory": (lambda e: e.dir, None, "dir"),
    "fifo": (lambda e: e.fifo, None, "fifo"),
    "dev-zero": (lambda e: "/dev/zero", None, "/dev/zero"),
    "text": (lambda e: e.__getattr__("text.txt"), None, "text.txt"),
    "contents-not-path": (lambda e: hc.NET_PROTOTXT, ArgumentError, "{arg}"),
}


# ------------------------------------------------------------------ quantize_model / config
def _quantize(e: Env, **kw: Any) -> Any:
    import kerasq

    return kerasq.quantize_model(kw.pop("model", e.model), **kw)


rows("quantize_model-model", ModelFormatError, "model", lambda e, v: _quantize(e, model=v),
     NOT_MODELS)
row("quantize_model-model-already-quantized", ModelFormatError, "model")(
    lambda e: _quantize(e, model=e.qmodel))
rows("quantize_model-preserve_sparsity", ArgumentError, "preserve_sparsity",
     lambda e, v: _quantize(e, preserve_sparsity=v), BAD_BOOLS)
for _label, _config, _field in [
    ("string", "dfp", "config"), ("list", [8, 8], "config"), ("int", 8, "config"),
    ("unknown-field", {"bitwidth": 8}, "bitwidth"),
    ("bitwidth-0", {"bitwidth_weights": 0}, "bitwidth_weights"),
    ("bitwidth-99", {"bitwidth_activations": 99}, "bitwidth_activations"),
    ("bitwidth-float", {"bitwidth_weights": 7.5}, "bitwidth_weights"),
    ("bitwidth-string", {"bitwidth_weights": "eight"}, "bitwidth_weights"),
    ("bitwidth-bool", {"bitwidth_bias": True}, "bitwidth_bias"),
    ("precision", {"precision": "int3"}, "precision"),
    ("precision-none", {"precision": None}, "precision"),
    ("rounding", {"rounding": "up"}, "rounding"),
    ("percentile-nan", {"percentile": math.nan}, "percentile"),
    ("ema-zero", {"ema_update_factor": 0.0}, "ema_update_factor"),
    ("range-expansion-inf", {"range_expansion": math.inf}, "range_expansion"),
    ("exp-bits", {"exp_bits": 0}, "exp_bits"),
    ("pow2-order", {"pow2_exp_min": 0, "pow2_exp_max": -4}, "pow2_exp_min"),
    ("start-negative", {"quantization_start": -1}, "quantization_start"),
    ("ignored-string", {"ignored_layers": "conv1"}, "ignored_layers"),
    ("unknown-layers", {"unknown_layers": "skip"}, "unknown_layers"),
    ("bool-string", {"per_channel_weights": "yes"}, "per_channel_weights"),
    ("override-bad", {"overrides": {"conv1": {"bitwidth_weights": 1}}}, "conv1"),
    ("override-unknown-field", {"overrides": {"conv1": {"bits": 4}}}, "bits"),
    ("ignored-unknown-name", {"ignored_layers": ["conv9"]}, "conv9"),
    ("override-unknown-name", {"overrides": {"conv_9": {"bitwidth_weights": 4}}}, "conv_9"),
    ("override-unknown-type", {"overrides": {"Convolutoin": {"bitwidth_weights": 4}}},
     "Convolutoin"),
]:
    row(f"quantize_model-config-{_label}", QuantizationConfigError, _field)(
        lambda e, c=_config: _quantize(e, config=c))


def _qconfig(**kw: Any) -> Any:
    from kerasq import QuantizationConfig

    return QuantizationConfig(**kw)


row("QuantizationConfig-bitwidth-0", QuantizationConfigError, "bitwidth_weights")(
    lambda e: _qconfig(bitwidth_weights=0))
row("QuantizationConfig-mant-bits", QuantizationConfigError, "mant_bits")(
    lambda e: _qconfig(mant_bits=40))
row("QuantizationConfig-from_json-garbage", QuantizationConfigError, "JSON")(
    lambda e: _qconfig().from_json("{bitwidth_weights: 8"))
row("QuantizationConfig-from_json-list", QuantizationConfigError, "config")(
    lambda e: _qconfig().from_json("[1, 2]"))
row("QuantizationConfig-from_json-nested", QuantizationConfigError, "JSON")(
    lambda e: _qconfig().from_json("[" * 100000 + "]" * 100000))
row("QuantizationConfig-from_dict-none", QuantizationConfigError, "config")(
    lambda e: _qconfig().from_dict(None))
row("QuantizationConfig-replace-unknown", QuantizationConfigError, "bits")(
    lambda e: _qconfig().replace(bits=4))
row("QuantizationConfig-from_caffe-missing", CaffeFormatError, "missing_file")(
    lambda e: _qconfig().from_caffe(e.missing_file))
row("QuantizationConfig-from_caffe-fifo", CaffeFormatError, "fifo")(
    lambda e: _qconfig().from_caffe(e.fifo))


# ------------------------------------------------------------------ calibrate
def _calibrate(e: Env, **kw: Any) -> Any:
    import kerasq

    return kerasq.calibrate(kw.pop("qmodel", e.qmodel), kw.pop("data", e.x), **kw)


rows("calibrate-qmodel", ModelFormatError, "qmodel", lambda e, v: _calibrate(e, qmodel=v),
     NOT_MODELS)
row("calibrate-qmodel-float", ModelFormatError, "qmodel")(
    lambda e: _calibrate(e, qmodel=e.model))
rows("calibrate-data", DataError, "data",
     lambda e, v: _calibrate(e, data=v),
     {k: v for k, v in BAD_ARRAYS.items() if k != "ragged-list"})
rows("calibrate-batch_size", ArgumentError, "batch_size",
     lambda e, v: _calibrate(e, batch_size=v), BAD_INTS)
rows("calibrate-steps", ArgumentError, "steps", lambda e, v: _calibrate(e, steps=v),
     {k: v for k, v in BAD_INTS.items() if k != "none"})


# ------------------------------------------------------------------ integer.run
def _run(e: Env, **kw: Any) -> Any:
    import kerasq.integer

    return kerasq.integer.run(kw.pop("qmodel", e.qmodel), kw.pop("x", e.x), **kw)


rows("integer.run-qmodel", ModelFormatError, "qmodel", lambda e, v: _run(e, qmodel=v),
     NOT_MODELS)
row("integer.run-qmodel-float", ModelFormatError, "qmodel")(lambda e: _run(e, qmodel=e.model))
rows("integer.run-x", DataError, "x", lambda e, v: _run(e, x=v), BAD_ARRAYS)
rows("integer.run-return_integers", ArgumentError, "return_integers",
     lambda e, v: _run(e, return_integers=v), BAD_BOOLS)


# ------------------------------------------------------------------ export
def _tflite(e: Env, **kw: Any) -> Any:
    from kerasq.export import to_tflite

    return to_tflite(kw.pop("qmodel", e.qmodel), kw.pop("path", None), **kw)


def _onnx(e: Env, **kw: Any) -> Any:
    from kerasq.export import to_onnx

    return to_onnx(kw.pop("model", e.qmodel), kw.pop("path", None), **kw)


rows("to_tflite-qmodel", ModelFormatError, "qmodel", lambda e, v: _tflite(e, qmodel=v),
     NOT_MODELS)
rows("to_onnx-model", ModelFormatError, "model", lambda e, v: _onnx(e, model=v), NOT_MODELS)
for _hazard, (_make, _error, _names) in OUTPUT_HAZARDS.items():
    if _hazard == "wrong-kind-file":
        row(f"to_tflite-path-{_hazard}", _error, _names)(
            lambda e, m=_make: _tflite(e, path=m(e, ".tflite"), target="float"))
    else:
        row(f"to_tflite-path-{_hazard}", _error, _names)(
            lambda e, m=_make: _tflite(e, path=m(e, ".tflite")))
    row(f"to_onnx-path-{_hazard}", _error, _names)(
        lambda e, m=_make: _onnx(e, path=m(e, ".onnx")))
row("to_tflite-path-onnx-extension", OutputError, "m.onnx")(
    lambda e: _tflite(e, path=e.__getattr__("m.onnx")))
row("to_onnx-path-tflite-extension", OutputError, "m.tflite")(
    lambda e: _onnx(e, path=e.__getattr__("m.tflite")))
for _label, _target in [("int4", "int4"), ("none", None), ("list", ["int8"]), ("upper", "INT8")]:
    row(f"to_tflite-target-{_label}", ExportError, "target")(
        lambda e, t=_target: _tflite(e, target=t))
row("to_onnx-target-int4", ExportError, "target")(lambda e: _onnx(e, target="int4"))
rows("to_tflite-verify_data", DataError, "verify_data",
     lambda e, v: _tflite(e, verify_data=v),
     {k: v for k, v in BAD_ARRAYS.items() if k not in ("none", "ragged-list")})
rows("to_tflite-representative_data", DataError, "representative_data",
     lambda e, v: _tflite(e, representative_data=v),
     {k: v for k, v in BAD_ARRAYS.items() if k in ("strings", "empty", "nan", "wrong-shape",
                                                    "path-string", "object")})
rows("to_onnx-verify_data", DataError, "verify_data", lambda e, v: _onnx(e, verify_data=v),
     {k: v for k, v in BAD_ARRAYS.items() if k in ("strings", "empty", "nan", "inf",
                                                    "wrong-shape", "nchw", "path-string")})
rows("to_tflite-int_io", ArgumentError, "int_io", lambda e, v: _tflite(e, int_io=v), BAD_BOOLS)
rows("to_tflite-verify", ArgumentError, "verify", lambda e, v: _tflite(e, verify=v), BAD_BOOLS)
row("to_tflite-verify-without-data", ExportError, "verify_data")(
    lambda e: _tflite(e, verify=True))
row("to_tflite-int_io-float-target", ExportError, "int_io")(
    lambda e: _tflite(e, int_io=True, target="float"))
rows("to_onnx-opset", ArgumentError, "opset", lambda e, v: _onnx(e, opset=v),
     {**{k: v for k, v in BAD_INTS.items() if k != "none"}, "too-old": lambda e: 6})


# ------------------------------------------------------------------ prune
def _prune(e: Env, **kw: Any) -> Any:
    import kerasq.prune as kp

    return kp.prune_model(kw.pop("model", e.model), **kw)


rows("prune_model-model", ModelFormatError, "model", lambda e, v: _prune(e, model=v),
     NOT_MODELS)
row("prune_model-layers-unknown", ArgumentError, "layers")(
    lambda e: _prune(e, layers=["no_such_layer"]))
row("prune_model-layers-string", ArgumentError, "layers")(lambda e: _prune(e, layers="conv1"))
row("prune_model-layers-ints", ArgumentError, "layers")(lambda e: _prune(e, layers=[1, 2]))
row("prune_model-layers-int", ArgumentError, "layers")(lambda e: _prune(e, layers=3))
row("prune_model-schedule", ModelFormatError, "schedule")(lambda e: _prune(e, schedule="50%"))
rows("prune.strip-model", ModelFormatError, "model",
     lambda e, v: __import__("kerasq.prune", fromlist=["strip"]).strip(v), NOT_MODELS)
rows("prune.one_shot_prune-model", ModelFormatError, "model",
     lambda e, v: __import__("kerasq.prune", fromlist=["x"]).one_shot_prune(v, None),
     NOT_MODELS)


# ------------------------------------------------------------------ evaluate
def _evaluate(e: Env, **kw: Any) -> Any:
    from kerasq.evaluate import evaluate

    y = np.arange(4) % 4
    return evaluate(kw.pop("model", e.model), kw.pop("x", e.x), kw.pop("y", y), **kw)


rows("evaluate-model", ModelFormatError, "model", lambda e, v: _evaluate(e, model=v),
     {"none": lambda e: None, "int": lambda e: 3, "array": lambda e: np.zeros(3),
      "dict": lambda e: {}})
rows("evaluate-x", DataError, "x", lambda e, v: _evaluate(e, x=v), BAD_ARRAYS)
rows("evaluate-batch_size", ArgumentError, "batch_size",
     lambda e, v: _evaluate(e, batch_size=v), BAD_INTS)
row("evaluate-kinds-not-dict", ArgumentError, "kinds")(lambda e: _evaluate(e, kinds="auto"))
row("evaluate-kinds-unknown-output", KerasqError, "nope")(
    lambda e: _evaluate(e, kinds={"nope": "classifier"}))
row("evaluate-kinds-bad-kind", KerasqError, "kind")(
    lambda e: _evaluate(e, kinds={"ip1": "ranking"}))
row("evaluate-y-wrong-count", KerasqError, "label")(lambda e: _evaluate(e, y=np.zeros(3, "i8")))
row("evaluate-nothing-to-score", KerasqError, "reference")(lambda e: _evaluate(e, y=None))
for _hazard, (_make, _error, _names) in INPUT_HAZARDS.items():
    if _hazard in ("fifo", "text", "dev-zero"):
        _paths = {"fifo": lambda e: e.__getattr__("fifo.tflite"),
                  "text": lambda e: e.__getattr__("text.tflite"),
                  "dev-zero": lambda e: "/dev/zero"}
        _make = _paths[_hazard]
        _names = {"fifo": "fifo.tflite", "text": "text.tflite"}.get(_hazard, _names)
    if _hazard in ("none", "int"):  # not a path: refused as a model of the wrong type
        _error = ModelFormatError
    if _hazard == "bytes":  # bytes are TFLite file contents
        _error, _names = ModelFormatError, "TFLite"
    _err = _error or KerasqError
    row(f"evaluate-model-path-{_hazard}", _err, _names.replace("{arg}", "model"))(
        lambda e, m=_make: _evaluate(e, model=m(e)))
    if _hazard != "none":  # reference=None: no reference (a valid call)
        row(f"evaluate-reference-path-{_hazard}", _err, _names.replace("{arg}", "reference"))(
            lambda e, m=_make: _evaluate(e, y=None, reference=m(e)))


# ------------------------------------------------------------------ converters.caffe
def _load(e: Env, *args: Any, **kw: Any) -> Any:
    from kerasq.converters import caffe

    if not args:
        args = (e.__getattr__("net.prototxt"), e.__getattr__("net.caffemodel"))
    return caffe.load(*args, **kw)


def _forward(e: Env, inputs: Any = "default", **kw: Any) -> Any:
    from kerasq.converters import caffe

    if isinstance(inputs, str) and inputs == "default":
        inputs = {"data": np.zeros((1, 1, 8, 8), "f4")}
    return caffe.forward(e.__getattr__("net.prototxt"), e.__getattr__("net.caffemodel"),
                         inputs, **kw)


for _hazard, (_make, _error, _names) in INPUT_HAZARDS.items():
    row(f"caffe.load-prototxt-{_hazard}", _error or CaffeFormatError,
        _names.replace("{arg}", "prototxt"))(
        lambda e, m=_make: _load(e, m(e), e.__getattr__("net.caffemodel")))
    if _hazard != "none":  # caffemodel=None means "no weights"
        row(f"caffe.load-caffemodel-{_hazard}", _error or CaffeFormatError,
            _names.replace("{arg}", "caffemodel"))(
            lambda e, m=_make: _load(e, e.__getattr__("net.prototxt"), m(e)))
    row(f"caffe.convert-prototxt-{_hazard}", _error or CaffeFormatError,
        _names.replace("{arg}", "prototxt"))(
        lambda e, m=_make: __import__("kerasq.converters.caffe", fromlist=["x"]).convert(
            m(e)))
row("caffe.load-swapped-files", CaffeFormatError, "net.caffemodel")(
    lambda e: _load(e, e.__getattr__("net.caffemodel"), e.__getattr__("net.prototxt")))
row("caffe.load-prototxt-is-npy", CaffeFormatError, "cal.npy")(
    lambda e: _load(e, e.__getattr__("cal.npy")))
row("caffe.load-unknown-option", ArgumentError, "frobnicate")(lambda e: _load(e, frobnicate=1))
row("caffe.load-input_shape-string", ArgumentError, "input_shape")(
    lambda e: _load(e, input_shape="1,1,8,8"))
row("caffe.load-input_shape-zero", CaffeFormatError, "data")(
    lambda e: _load(e, input_shape={"data": (0, 1, 8, 8)}))
row("caffe.load-input_shape-negative", CaffeFormatError, "data")(
    lambda e: _load(e, input_shape={"data": (1, 1, -8, 8)}))
row("caffe.load-input_shape-unknown-blob", CaffeFormatError, "nope")(
    lambda e: _load(e, input_shape={"nope": (1, 1, 8, 8)}))
row("caffe.load-outputs-string", ArgumentError, "outputs")(lambda e: _load(e, outputs="ip1"))
row("caffe.load-outputs-unknown", CaffeFormatError, "nope")(lambda e: _load(e, outputs=["nope"]))
for _label, _scale in [("nan", math.nan), ("zero", 0.0), ("negative", -1.0), ("string", "1/255")]:
    row(f"caffe.load-scale-{_label}", ArgumentError, "scale")(
        lambda e, s=_scale: _load(e, scale=s))
row("caffe.load-swap_rb-string", ArgumentError, "swap_rb")(lambda e: _load(e, swap_rb="yes"))
row("caffe.load-mean-missing-file", CaffeFormatError, "missing.binaryproto")(
    lambda e: _load(e, mean=e.__getattr__("missing.binaryproto")))
row("caffe.load-mean-nan", DataError, "mean")(lambda e: _load(e, mean=[math.nan]))
row("caffe.load-mean-wrong-count", CaffeFormatError, "mean")(lambda e: _load(e, mean=[1, 2, 3]))
row("caffe.load-mean-strings", DataError, "mean")(lambda e: _load(e, mean=["blue"]))
row("caffe.forward-inputs-none", ArgumentError, "inputs")(lambda e: _forward(e, None))
row("caffe.forward-inputs-array", ArgumentError, "inputs")(
    lambda e: _forward(e, np.zeros((1, 1, 8, 8), "f4")))
rows("caffe.forward-inputs-data", DataError, "inputs['data']",
     lambda e, v: _forward(e, {"data": v}), ARRAY_ONLY)
row("caffe.forward-inputs-unknown-name", CaffeFormatError, "data")(
    lambda e: _forward(e, {"nope": np.zeros((1, 1, 8, 8), "f4")}))
row("caffe.forward-blobs-string", ArgumentError, "blobs")(lambda e: _forward(e, blobs="ip1"))
row("caffe.forward-blobs-unknown", CaffeFormatError, "nope")(
    lambda e: _forward(e, blobs=["nope"]))


# ------------------------------------------------------------------ load_model
def _load_model(e: Env, path: Any, **kw: Any) -> Any:
    import kerasq

    return kerasq.load_model(path, **kw)


for _hazard, (_make, _error, _names) in INPUT_HAZARDS.items():
    if _hazard == "text":
        _make, _names = (lambda e: e.__getattr__("text.h5")), "text.h5"
    row(f"load_model-{_hazard}", _error or KerasqError, _names.replace("{arg}", "path"))(
        lambda e, m=_make: _load_model(e, m(e)))
row("load_model-directory-not-savedmodel", ModelFormatError, "dir")(
    lambda e: _load_model(e, e.dir))
row("load_model-empty-directory", ModelFormatError, "empty_dir")(
    lambda e: _load_model(e, e.empty_dir))
row("load_model-npy-as-model", ModelFormatError, "cal.npy")(
    lambda e: _load_model(e, e.__getattr__("cal.npy")))
row("load_model-prototxt-as-model", ModelFormatError, "net.prototxt")(
    lambda e: _load_model(e, e.__getattr__("net.prototxt")))
row("load_model-text.keras", KerasqError, "text.keras")(
    lambda e: _load_model(e, e.__getattr__("text.keras")))
row("load_model-h5-config-dense-40000x40000", DataError, "huge_dense")(
    lambda e: _load_model(e, e.__getattr__("forged.h5")))
row("load_model-h5-config-conv-1e9-filters", DataError, "huge_conv")(
    lambda e: _load_model(e, e.__getattr__("forged_conv.h5")))
row("load_model-keras-config-dense-40000x40000", DataError, "huge_dense")(
    lambda e: _load_model(e, e.__getattr__("forged.keras")))


def _saved_model(name: str, mutate: Any) -> str:
    """A hostile SavedModel of ``hostile_cases`` in a folder of its own (outside ``env.d``)."""
    import tempfile

    folder = tempfile.mkdtemp(prefix="kerasq-api-savedmodel-")
    hc.saved_model(name, mutate)(folder)
    return os.path.join(folder, name)


for _label, _name, _mutate, _error, _text in [
    ("truncated-variables", "sm", hc._truncate_data, DataError, "truncated"),
    ("index-claims-17TB", "sm", hc._claim_huge_kernel, DataError, "16 GiB limit"),
    ("no-keras-metadata", "sm", hc._remove("keras_metadata.pb"), ModelFormatError,
     "keras_metadata.pb"),
    ("dir-named.h5", "m.h5", None, ModelFormatError, "directory"),
]:
    row(f"load_model-savedmodel-{_label}", _error, _text)(
        lambda e, n=_name, m=_mutate: _load_model(e, _saved_model(n, m)))
rows("load_model-compile", ArgumentError, "compile",
     lambda e, v: _load_model(e, e.__getattr__("q.h5"), compile=v), BAD_BOOLS)


# ------------------------------------------------------------------ search_bitwidths
def _search(e: Env, **kw: Any) -> Any:
    import kerasq

    return kerasq.search_bitwidths(kw.pop("model", e.model), kw.pop("eval_fn", lambda m: 1.0),
                                   kw.pop("data", e.x), **kw)


rows("search_bitwidths-model", ModelFormatError, "model", lambda e, v: _search(e, model=v),
     NOT_MODELS)
for _label, _fn in [("none", None), ("string", "accuracy"), ("number", 0.9)]:
    row(f"search_bitwidths-eval_fn-{_label}", ArgumentError, "eval_fn")(
        lambda e, f=_fn: _search(e, eval_fn=f))
rows("search_bitwidths-data", DataError, "data", lambda e, v: _search(e, data=v),
     {k: v for k, v in BAD_ARRAYS.items() if k != "ragged-list"})
for _label, _margin, _error in [("nan", math.nan, ArgumentError),
                                ("inf", math.inf, ArgumentError),
                                ("negative", -1.0, QuantizationConfigError),
                                ("string", "1%", QuantizationConfigError)]:
    row(f"search_bitwidths-error_margin-{_label}", _error, "error_margin")(
        lambda e, m=_margin: _search(e, error_margin=m))
row("search_bitwidths-candidates-empty", QuantizationConfigError, "candidates")(
    lambda e: _search(e, candidates=[]))
row("search_bitwidths-candidates-1", QuantizationConfigError, "candidates")(
    lambda e: _search(e, candidates=[1, 8]))
row("search_bitwidths-parts-unknown", QuantizationConfigError, "parts")(
    lambda e: _search(e, parts=["bias"]))
rows("search_bitwidths-batch_size", ArgumentError, "batch_size",
     lambda e, v: _search(e, batch_size=v), BAD_INTS)


# ------------------------------------------------------------------ kerasq.data
def _data(name: str) -> Callable[..., Any]:
    import kerasq.data

    return getattr(kerasq.data, name)


for _hazard, (_make, _error, _names) in INPUT_HAZARDS.items():
    row(f"data.load_arrays-{_hazard}", _error or DataError, _names.replace("{arg}", "data"))(
        lambda e, m=_make: _data("load_arrays")(m(e)))
row("data.load_arrays-strings", DataError, "strings.npy")(
    lambda e: _data("load_arrays")(e.__getattr__("strings.npy")))
row("data.load_arrays-nan", DataError, "nan.npy")(
    lambda e: _data("load_arrays")(e.__getattr__("nan.npy")))
row("data.load_arrays-text-npy", DataError, "text.npy")(
    lambda e: _data("load_arrays")(e.__getattr__("text.npy")))
row("data.load_inputs_and_labels-npy-needs-labels", DataError, "cal.npy")(
    lambda e: _data("load_inputs_and_labels")(e.__getattr__("cal.npy"), need_labels=True))
row("data.load_model_inputs-wrong-shape", DataError, "cal.npy")(
    lambda e: _data("load_model_inputs")(e.__getattr__("cal.npy"),
                                         type("M", (), {"inputs": [np.zeros((1, 5, 5, 1))]})()))
rows("data.match_layout-array", DataError, "input",
     lambda e, v: _data("match_layout")(v, (None, 8, 8, 1)),
     {k: v for k, v in BAD_ARRAYS.items() if k in ("none", "strings", "object", "wrong-shape",
                                                    "wrong-rank", "scalar-array")})
row("data.match_layout-layout", DataError, "layout")(
    lambda e: _data("match_layout")(e.x, (None, 8, 8, 1), "hwcn"))
row("data.check_model_file-fifo", DataError, "fifo")(
    lambda e: _data("check_model_file")(e.fifo))
row("data.check_model_file-forged", DataError, "huge_dense")(
    lambda e: _data("check_model_file")(e.__getattr__("forged.h5")))


# ------------------------------------------------------------------ report
def _build(e: Env, **kw: Any) -> Any:
    from kerasq.report import build_report

    return build_report(kw.pop("model", e.qmodel), kw.pop("data", None), **kw)


def _write(e: Env, report: Any = None, path: Any = None) -> Any:
    from kerasq.report import write_report

    return write_report(e.report if report is None else report, path)


rows("report.build_report-model", ModelFormatError, "model", lambda e, v: _build(e, model=v),
     NOT_MODELS)
rows("report.build_report-data", DataError, "data", lambda e, v: _build(e, data=v),
     {k: v for k, v in BAD_ARRAYS.items() if k != "none"})
rows("report.build_report-latency_runs", ArgumentError, "latency_runs",
     lambda e, v: _build(e, latency_runs=v), BAD_INTS)
rows("report.build_report-batch_size", ArgumentError, "batch_size",
     lambda e, v: _build(e, batch_size=v), BAD_INTS)
for _hazard, (_make, _error, _names) in INPUT_HAZARDS.items():
    if _hazard == "none":
        continue  # no TFLite file: a valid call
    row(f"report.build_report-tflite_path-{_hazard}",
        _error or (KerasqError if _hazard == "text" else DataError),
        _names.replace("{arg}", "tflite_path"))(
        lambda e, m=_make: _build(e, tflite_path=m(e)))
row("report.write_report-report-none", KerasqError, "report")(
    lambda e: _write(e, report="not a report", path=e.__getattr__("r.json")))
row("report.write_report-pdf", KerasqError, "r.pdf")(
    lambda e: _write(e, path=e.__getattr__("r.pdf")))
for _hazard, (_make, _error, _names) in OUTPUT_HAZARDS.items():
    if _hazard in ("wrong-extension", "bytes"):
        continue
    row(f"report.write_report-path-{_hazard}", _error if _error is not OutputError
        else KerasqError, _names)(lambda e, m=_make: _write(e, path=m(e, ".json")))
rows("schemes.report-qmodel", ModelFormatError, "qmodel",
     lambda e, v: __import__("kerasq.schemes", fromlist=["report"]).report(v), NOT_MODELS)
rows("schemes.report-data", DataError, "data",
     lambda e, v: __import__("kerasq.schemes", fromlist=["report"]).report(e.qmodel, v),
     {k: v for k, v in BAD_ARRAYS.items() if k not in ("none", "ragged-list")})


# ------------------------------------------------------------------ the test
NAMES = [r.name for r in ROWS]
assert len(NAMES) == len(set(NAMES)), sorted(n for n in NAMES if NAMES.count(n) > 1)


@pytest.mark.parametrize("case", ROWS, ids=NAMES)
def test_bad_argument_raises_a_one_line_kerasq_error(case: Row, env: Env) -> None:
    def watchdog(signum: int, frame: Any) -> None:
        raise TimeoutError(f"{case.name} hung")  # a FIFO opened, /dev/zero read, ...

    old = signal.signal(signal.SIGALRM, watchdog)
    signal.alarm(120)
    try:
        with pytest.raises(KerasqError) as info:
            case.call(env)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    err = info.value
    message = str(err)
    assert isinstance(err, case.error), f"{type(err).__name__} ({message}), not {case.error}"
    assert message and "\n" not in message and "\r" not in message, repr(message)
    expected = case.names.replace("{d}", env.d)
    assert expected in message, f"{message!r} does not name {expected!r}"
    assert len(message) < 600, message


def test_every_category_and_public_function_is_in_the_table() -> None:
    functions = {n.split("-")[0] for n in NAMES}
    assert {"quantize_model", "calibrate", "QuantizationConfig", "integer.run", "to_tflite",
            "to_onnx", "prune_model", "prune.strip", "evaluate", "caffe.load", "caffe.convert",
            "caffe.forward", "load_model", "search_bitwidths", "data.load_arrays",
            "report.build_report", "report.write_report", "schemes.report"} <= functions
    for word in ("none", "strings", "object", "empty", "nan", "wrong-shape", "missing",
                 "directory", "fifo", "dev-zero", "zero", "negative", "unknown"):
        assert any(word in n for n in NAMES), word
    assert len(ROWS) >= 300


def test_config_size_estimate_accepts_real_models_and_names_the_forged_layer(tmp_path) -> None:
    """The parameter estimate is a lower bound: real saved models (a 3M-parameter Dense,
    a conv net, a quantized one, channels-first) pass; the forged 7 KB files are refused
    with one line naming the file and the layer, before Keras builds anything."""
    import kerasq
    from kerasq._compat import keras
    from kerasq.data import check_model_file

    inp = keras.Input((3000,))
    wide = keras.Model(inp, keras.layers.Dense(1000, name="wide")(inp))
    img = keras.Input((3, 16, 16))
    conv = keras.layers.Conv2D(64, 3, data_format="channels_first", name="cf")(img)
    cf = keras.Model(img, conv)
    qin = keras.Input((8, 8, 1))
    q = kerasq.quantize_model(keras.Model(qin, keras.layers.Conv2D(300, 3, name="c")(qin)))
    for name, model in (("wide", wide), ("cf", cf), ("q", q)):
        for ext in (".h5", ".keras") if name != "q" else (".h5",):
            path = str(tmp_path / (name + ext))
            model.save(path)
            assert check_model_file(path) == path
    for setup, path, layer in ((hc.h5_forged_layer("f.h5", hc.DENSE_40000), "f.h5", "huge_dense"),
                               (hc.keras_forged_layer("f.keras", hc.DENSE_40000), "f.keras",
                                "huge_dense"),
                               (hc.h5_forged_layer("c.h5", hc.CONV_1E9, inputs=1), "c.h5",
                                "huge_conv")):
        setup(str(tmp_path))
        full = str(tmp_path / path)
        assert os.path.getsize(full) < 12_000
        with pytest.raises(DataError) as info:
            check_model_file(full)
        assert str(info.value).startswith(f"{full}: {layer}: config claims ")
