"""Where an int8 file first departs from the Keras model: a per-layer comparison.

Every activation grid of the deploy graph (one per kerasq activation quantizer) is a
tensor of the TFLite file. :func:`layer_report` runs the file with all intermediate tensors
kept, dequantizes each of those tensors and compares it with the same quantizer's output
in the Keras model, in steps of that grid, in graph order. The first row with a non-zero
error is the first layer whose integer output diverges; quantizers whose tensor the
converter fused away (e.g. an Add's grid when a ReLU is fused into the ADD) are skipped.

Example:
    >>> rows = layer_report(content, qmodel, plan, x[:16])            # doctest: +SKIP
    >>> first_divergence(rows)                                        # doctest: +SKIP
    {'layer': 'res1_add', 'max_error_steps': 1.0, 'exact_fraction': 0.97, ...}
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np

from kerasq._compat import keras, quiet_native_stderr

log = logging.getLogger("kerasq.export.diagnose")


def _model_outputs(qmodel: Any) -> dict[int, Any]:
    """id(layer) -> its output tensor in ``qmodel``'s own graph.

    ``layer.output`` is the output of the layer's FIRST call, which can belong to another
    graph: tfmot's quantize_apply calls the input ``QuantizeLayer`` (and kerasq's passes
    may call a wrapper) while building intermediate models, so a probe model built from it
    failed with "Graph disconnected"."""
    found: dict[int, Any] = {}
    for nodes in getattr(qmodel, "_nodes_by_depth", {}).values():
        for node in nodes:
            if not node.is_input:
                outputs = node.outputs
                found.setdefault(id(node.layer), outputs)
    return found


def _keras_tensor(qmodel: Any, owner: str, what: str, outputs: dict[int, Any] | None = None) -> Any:
    outputs = _model_outputs(qmodel) if outputs is None else outputs
    for layer in qmodel.layers:
        inner = getattr(layer, "layer", layer)
        if (what == "input" and layer.name == owner) or (
                inner.name == owner and what in ("output", "post")):
            return outputs.get(id(layer), layer.output)
    return None


def _file_tensor(details: list[dict[str, Any]], layer_name: str, owner: str = "",
                 shape: tuple[int, ...] | None = None) -> dict[str, Any] | None:
    """The int8/int16 tensor of the quantizer layer ``layer_name``; else (``owner`` and
    ``shape`` given) the last activation of that shape named after the layer ``owner``: the
    converter names a convolution's output after the ops it fused (conv, add, ReLU), not
    after the fake quant that set its scale."""
    def named(name: str) -> list[dict[str, Any]]:
        return [t for t in details
                if any(name in p.split("/") for p in t["name"].split(";"))
                and t["dtype"] in (np.int8, np.int16)]

    hits = named(layer_name)
    if not hits and owner and shape is not None:
        hits = [t for t in named(owner) if tuple(int(d) for d in t["shape"]) == shape]
    return hits[-1] if hits else None


def layer_report(content: bytes, qmodel: Any, plan: Any, data: np.ndarray) -> list[dict[str, Any]]:
    """One row per activation grid found in the file, in graph order: ``layer`` (the Keras
    layer), ``what``, ``max_error_steps``, ``exact_fraction``, ``step``."""
    from ai_edge_litert.interpreter import Interpreter

    data = np.asarray(data, np.float32)
    with quiet_native_stderr():
        interpreter = Interpreter(model_content=content, experimental_preserve_all_tensors=True)
        inp = interpreter.get_input_details()[0]
        interpreter.resize_tensor_input(inp["index"], [len(data), *inp["shape"][1:]])
        interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], data)
    interpreter.invoke()
    details = interpreter.get_tensor_details()
    wanted = []
    outputs = _model_outputs(qmodel)
    for name, spec in plan.activation_layers.items():
        owner, _, what = name[: -len("_q")].rpartition("_")
        tensor = _keras_tensor(qmodel, owner, what, outputs)
        shape = None
        if tensor is not None and what == "output" and None not in tuple(tensor.shape)[1:]:
            shape = (len(data), *(int(d) for d in tuple(tensor.shape)[1:]))
        found = _file_tensor(details, name, owner, shape)
        if tensor is not None and found is not None:
            wanted.append((owner, what, spec, tensor, found))
    if not wanted:
        return []
    probe = keras.Model(qmodel.inputs, [w[3] for w in wanted])
    values = probe(data, training=False)
    values = values if isinstance(values, (list, tuple)) else [values]
    rows = []
    for (owner, what, spec, _, found), want in zip(wanted, values):
        got = interpreter.get_tensor(found["index"]).astype(np.float64)
        scale = found["quantization_parameters"]["scales"]
        zero = found["quantization_parameters"]["zero_points"]
        if len(scale) != 1:
            continue
        got = (got - zero[0]) * scale[0]
        want = np.asarray(want, np.float64)
        if got.size != want.size:
            continue
        err = np.abs(got.reshape(want.shape) - want)
        step = float(spec.step)
        rows.append({
            "layer": owner,
            "what": what,
            "step": step,
            "max_error_steps": float(err.max() / step) if err.size else 0.0,
            "exact_fraction": float(np.mean(err == 0)) if err.size else 1.0,
        })
    return rows


def first_divergence(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The first row of :func:`layer_report` whose integer output differs, or None."""
    return next((r for r in rows if r["max_error_steps"] > 0), None)


def describe_divergence(rows: list[dict[str, Any]]) -> str:
    """One line for an error message: the first diverging layer and its figures."""
    row = first_divergence(rows)
    if row is None:
        return "every intermediate grid found in the file is identical"
    return (f"first divergence at {row['layer']} ({row['what']}): "
            f"{row['max_error_steps']:.3g} steps, "
            f"{100 * row['exact_fraction']:.2f}% identical")


def write_report(path: str, rows: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    """The per-layer rows and a summary as JSON (written atomically)."""
    from kerasq._io import write_bytes_atomic

    body = {"summary": summary, "first_divergence": first_divergence(rows), "layers": rows}
    write_bytes_atomic(path, json.dumps(body, indent=2).encode())


__all__ = ["describe_divergence", "first_divergence", "layer_report", "write_report"]
