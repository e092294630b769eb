"""Input preprocessing kept outside an exported file (``preprocessing="outside"``).

A converted Caffe net records its input preprocessing (``kerasq convert --mean/--scale/
--swap-rb``) as a leading ``CaffePreprocess`` layer computing

    y = (swap(round_in(x)) - mean) · scale

where ``round_in`` is the quantized model's rounding of the raw input onto its input grid
(the identity for integer pixels on a grid of step <= 1 that covers them), ``swap``
reverses the channel order, ``mean`` is per-channel values (C,) or a mean image (H, W, C),
and ``scale`` is a float. An int8 file holds this step exactly only for a power-of-two
scale and means on the int8 bias grid (:mod:`kerasq.export.graph`). With
``preprocessing="outside"`` the file instead takes ``y`` itself as its input (the input is
named ``<input>_preprocessed``) and quantizes it onto the preprocessing layer's output grid,
exactly as the Keras model does after computing ``y`` in float32. The constants go to a
JSON sidecar ``<file>.preprocessing.json`` (and a mean image to
``<file>.preprocessing.mean.npy``, float32 HWC) so the device computes ``y`` the same way;
:meth:`Preprocessing.apply` is that computation in numpy (float32, bit for bit the Keras
layer's).

Example:
    >>> result = export_tflite(qmodel, "m.tflite", preprocessing="outside",
    ...                        verify_data=x, verify=True)            # doctest: +SKIP
    >>> prep = load_preprocessing("m.tflite.preprocessing.json")     # doctest: +SKIP
    >>> TFLiteRunner(open("m.tflite", "rb").read())(prep.apply(x))   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from typing import Any, Dict, List, Optional, Union

import numpy as np

from kerasq.errors import ExportError
from kerasq.numerics.grid import GridSpec

#: ``inside``: the preprocessing is an exact int8 step of the file (or an error says why it
#: cannot be); ``outside``: the file takes the preprocessed tensor, constants in a sidecar.
PREPROCESSING_MODES = ("inside", "outside")
PREPROCESSED_SUFFIX = "_preprocessed"
SIDECAR_SUFFIX = ".preprocessing.json"
MEAN_IMAGE_SUFFIX = ".preprocessing.mean.npy"
FORMULA = "y = (swap_rb(round_to_input_grid(x)) - mean) * scale"

PathLike = Union[str, "os.PathLike[str]"]


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """The preprocessing of one model input, as a device applies it before the file.

    ``input_name``: the model's raw input (the Caffe input blob); ``tensor_name``: the
    file's input, the preprocessed tensor; ``layer``: the Keras preprocessing layer;
    ``mean``: None, (C,) values or an (H, W, C) image (float32); ``input_grid``: the
    model's rounding of the raw input (None: none).
    """

    input_name: str
    tensor_name: str
    layer: str
    swap_rb: bool
    mean: Optional[np.ndarray]
    scale: float
    input_grid: Optional[GridSpec] = None

    def apply(self, x: Any) -> np.ndarray:
        """``(swap(round_in(x)) - mean) · scale`` in float32, NHWC (the Keras layer's
        float32 operations in the same order, so the same bits).

        Example:
            >>> Preprocessing("data", "data_preprocessed", "p", True,
            ...               np.float32([1, 2, 3]), 0.5).apply(np.ones((1, 1, 1, 3)))
            array([[[[ 0. , -0.5, -1. ]]]], dtype=float32)
        """
        x = np.asarray(x, np.float32)
        if self.input_grid is not None:
            from kerasq.numerics.dfp import dfp_quantize

            g = self.input_grid
            x = np.asarray(dfp_quantize(x, g.bitwidth, int(g.frac_bits), signed=g.signed,
                                        rounding=g.rounding), np.float32)
        if self.swap_rb:
            x = x[..., ::-1]
        if self.mean is not None:
            x = x - np.asarray(self.mean, np.float32)
        if self.scale != 1.0:
            x = x * np.float32(self.scale)
        return np.ascontiguousarray(x, np.float32)

    def describe(self) -> str:
        """One line: what the device computes before feeding the file."""
        parts = [f"{self.tensor_name} = "]
        term = f"{self.input_name}[..., ::-1]" if self.swap_rb else self.input_name
        if self.mean is not None:
            mean = (f"mean image {'x'.join(str(d) for d in self.mean.shape)}"
                    if self.mean.ndim == 3 else "[" + ", ".join(f"{v:g}" for v in self.mean) + "]")
            term = f"({term} - {mean})"
        parts.append(term)
        if self.scale != 1.0:
            parts.append(f" * {self.scale!r}")
        if self.input_grid is not None:
            parts.append(f" ({self.input_name} first rounded to step {self.input_grid.step:g} "
                         f"in [{self.input_grid.qmin * self.input_grid.step:g}, "
                         f"{self.input_grid.qmax * self.input_grid.step:g}])")
        return "".join(parts)

    def to_json(self, mean_file: Optional[str] = None) -> Dict[str, Any]:
        """The sidecar's content; ``mean_file``: where a mean image was written."""
        data: Dict[str, Any] = {
            "formula": FORMULA,
            "input": self.input_name,
            "file_input": self.tensor_name,
            "layer": self.layer,
            "layout": "NHWC",
            "swap_rb": self.swap_rb,
            "channel_order": "reversed (RGB <-> BGR)" if self.swap_rb else "unchanged",
            "scale": self.scale,
            "mean": None,
            "mean_image": None,
            "input_grid": None,
        }
        if self.mean is not None and self.mean.ndim == 1:
            data["mean"] = [float(v) for v in self.mean]
        elif self.mean is not None:
            data["mean_image"] = {"file": mean_file, "shape": list(self.mean.shape),
                                  "layout": "HWC", "dtype": "float32"}
        if self.input_grid is not None:
            g = self.input_grid
            data["input_grid"] = {"step": float(g.step), "min": float(g.qmin * g.step),
                                  "max": float(g.qmax * g.step), "rounding": g.rounding}
        return data


@dataclasses.dataclass(frozen=True)
class PreprocessingSite:
    """Where a preprocessing layer sits: ``layer`` (the (wrapped) ``CaffePreprocess``),
    ``model_input`` (the model input tensor it reads), ``quantize_layer`` (the quantized
    model's input ``QuantizeLayer`` in between, or None) and ``output`` (its output tensor
    in the model)."""

    layer: Any
    model_input: Any
    quantize_layer: Any
    output: Any


def _source(tensor: Any) -> Any:
    """The (layer, node) that produced a Keras tensor."""
    history = tensor._keras_history
    return history.layer, history.layer._inbound_nodes[history.node_index]


def find_preprocessing(model: Any) -> List[PreprocessingSite]:
    """The preprocessing layers (a ``CaffePreprocess``, tfmot-wrapped or not) of ``model``
    that read a model input directly or through the quantized model's input
    ``QuantizeLayer``."""
    from kerasq.schemes import slots

    inputs = {id(t): t for t in model.inputs}
    found = []
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            if type(slots.inner_layer(node.layer)).__name__ != "CaffePreprocess":
                continue
            sources = tf_flatten(node.input_tensors)
            if len(sources) != 1:
                continue
            tensor, quantize_layer = sources[0], None
            layer, producer = _source(tensor)
            if slots.is_quantize_layer(layer):
                quantize_layer = layer
                inner = tf_flatten(producer.input_tensors)
                tensor = inner[0] if len(inner) == 1 else None
            if tensor is not None and id(tensor) in inputs:
                found.append(PreprocessingSite(node.layer, tensor, quantize_layer,
                                               tf_flatten(node.outputs)[0]))
    return found


def tf_flatten(value: Any) -> List[Any]:
    """A node's tensors as a flat list."""
    from kerasq._compat import tf

    return list(tf.nest.flatten(value))


def describe_layer(site: PreprocessingSite, input_grid: Optional[GridSpec]) -> Preprocessing:
    """The :class:`Preprocessing` of a preprocessing site."""
    from kerasq.schemes import slots

    inner = slots.inner_layer(site.layer)
    input_name = site.model_input.name.split(":")[0]
    weights = inner.get_weights()
    mean = np.asarray(weights[0], np.float32) if weights else None
    return Preprocessing(input_name, f"{input_name}{PREPROCESSED_SUFFIX}", inner.name,
                         bool(inner.swap_channels), mean, float(inner.scale), input_grid)


def sidecar_path(path: PathLike) -> str:
    """``<path>.preprocessing.json``."""
    return f"{os.fspath(path)}{SIDECAR_SUFFIX}"


def write_sidecar(path: PathLike, prep: Preprocessing) -> List[str]:
    """Write ``<path>.preprocessing.json`` (and ``<path>.preprocessing.mean.npy`` for a
    mean image) atomically; returns the paths written."""
    from kerasq._io import write_bytes_atomic

    written = []
    mean_file = None
    if prep.mean is not None and prep.mean.ndim == 3:
        mean_path = f"{os.fspath(path)}{MEAN_IMAGE_SUFFIX}"
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(prep.mean, np.float32), allow_pickle=False)
        write_bytes_atomic(mean_path, buffer.getvalue(), kind="npy")
        written.append(mean_path)
        mean_file = os.path.basename(mean_path)
    json_path = sidecar_path(path)
    text = json.dumps(prep.to_json(mean_file), indent=2) + "\n"
    write_bytes_atomic(json_path, text.encode(), kind="json")
    written.insert(0, json_path)
    return written


def load_preprocessing(json_path: PathLike) -> Preprocessing:
    """A :class:`Preprocessing` read back from a sidecar (the mean image from its file next
    to it); the input grid is kept as its step and range.

    Example:
        >>> prep = load_preprocessing("m.tflite.preprocessing.json")   # doctest: +SKIP
    """
    json_path = os.fspath(json_path)
    try:
        with open(json_path, encoding="utf-8") as f:
            data = json.load(f)
        mean = None
        if data.get("mean") is not None:
            mean = np.asarray(data["mean"], np.float32)
        elif data.get("mean_image"):
            mean_path = os.path.join(os.path.dirname(json_path), data["mean_image"]["file"])
            mean = np.load(mean_path, allow_pickle=False).astype(np.float32)
        grid = None
        if data.get("input_grid"):
            g = data["input_grid"]
            step = float(g["step"])
            frac_bits = -int(np.log2(step))
            qmin, qmax = int(round(g["min"] / step)), int(round(g["max"] / step))
            signed = qmin < 0
            bitwidth = int(np.ceil(np.log2(qmax + 1))) + (1 if signed else 0)
            grid = GridSpec(kind="dfp", bitwidth=bitwidth, frac_bits=frac_bits, signed=signed,
                            rounding=g.get("rounding", "nearest"))
        return Preprocessing(data["input"], data["file_input"], data.get("layer", ""),
                             bool(data["swap_rb"]), mean, float(data["scale"]), grid)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ExportError(f"cannot read the preprocessing sidecar: {err}", file=json_path)


__all__ = [
    "PREPROCESSING_MODES",
    "Preprocessing",
    "PreprocessingSite",
    "describe_layer",
    "find_preprocessing",
    "load_preprocessing",
    "sidecar_path",
    "write_sidecar",
]
