"""Layout transforms on functional Keras models: BatchNorm folding, input quantization.

Both work on the model's config (a graph of named layers) and rebuild the model, then
copy weights by layer name, so they handle any functional graph (branches, shared
inputs, converted Caffe nets) and never touch the caller's model.

BatchNorm folding (caffe-jacinto ``caffe optimize``): a BatchNormalization whose only
input is a Conv2D/Conv1D/DepthwiseConv2D/Dense/Conv2DTranspose with linear activation
that feeds nothing else is folded into it:
W' = W·s, b' = (b − μ)·s + β, s = γ/√(σ² + ε) along the output-channel axis.

Example:
    >>> folded, names = fold_batchnorm(model)  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import logging
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from kerasq._compat import keras
from kerasq.serialization import custom_objects
from kerasq.schemes.registry import FOLD_DEPTHWISE, LAYER_FACTS

logger = logging.getLogger("kerasq.schemes.transforms")

# class name -> kernel attribute, output-channel axis of the kernel (None: depthwise)
FOLDABLE = {
    name: (facts.kernel_attr, None if facts.fold_axis == FOLD_DEPTHWISE else facts.fold_axis)
    for name, facts in LAYER_FACTS.items() if facts.foldable
}


def as_functional(model: Any) -> Any:
    """A functional view of a built Sequential/functional model (same layer objects)."""
    if isinstance(model, keras.Sequential):
        return keras.Model(model.inputs, model.outputs, name=model.name)
    return model


def _refs(inbound_nodes: Any) -> List[list]:
    """All [layer_name, node_index, tensor_index, kwargs] references in a node list."""
    out: List[list] = []

    def walk(item: Any) -> None:
        if isinstance(item, list) and len(item) >= 3 and isinstance(item[0], str) \
                and isinstance(item[1], int):
            out.append(item)
        elif isinstance(item, (list, tuple)):
            for sub in item:
                walk(sub)
        elif isinstance(item, dict):
            for sub in item.values():
                walk(sub)

    walk(inbound_nodes)
    return out


def _consumers(config: Dict[str, Any]) -> Dict[str, List[str]]:
    cons: Dict[str, List[str]] = {}
    for layer in config["layers"]:
        for ref in _refs(layer.get("inbound_nodes", [])):
            cons.setdefault(ref[0], []).append(layer["name"])
    for ref in _refs(config.get("output_layers", [])):
        cons.setdefault(ref[0], []).append("<output>")
    return cons


def _rebuild(model: Any, config: Dict[str, Any], weights: Dict[str, List[np.ndarray]]) -> Any:
    objects = custom_objects()
    with keras.utils.custom_object_scope(objects):
        new = keras.Model.from_config(config, custom_objects=objects)
    for layer in new.layers:
        if layer.name in weights:
            layer.set_weights(weights[layer.name])
    return new


def fold_batchnorm(model: Any) -> Tuple[Any, Dict[str, str]]:
    """Fold BatchNormalization layers into their producers.

    Returns the new model and {producer name: folded BN name}; the model itself if
    nothing folds.
    """
    model = as_functional(model)
    config = copy.deepcopy(model.get_config())
    by_name = {l["name"]: l for l in config["layers"]}
    consumers = _consumers(config)
    folded: Dict[str, str] = {}
    new_weights: Dict[str, List[np.ndarray]] = {}
    for entry in config["layers"]:
        if entry["class_name"] != "BatchNormalization":
            continue
        bn = model.get_layer(entry["name"])
        refs = _refs(entry["inbound_nodes"])
        if len(entry["inbound_nodes"]) != 1 or len(refs) != 1:
            continue
        producer_name = refs[0][0]
        producer_entry = by_name.get(producer_name)
        if producer_entry is None or producer_entry["class_name"] not in FOLDABLE:
            continue
        producer = model.get_layer(producer_name)
        pcfg = producer_entry["config"]
        if len(producer_entry["inbound_nodes"]) != 1 or consumers.get(producer_name) != [bn.name]:
            continue
        if pcfg.get("activation", "linear") != "linear" or \
                pcfg.get("data_format", "channels_last") != "channels_last":
            continue
        axis = bn.axis if isinstance(bn.axis, (list, tuple)) else [bn.axis]
        rank = len(producer.output.shape)
        if [a % rank for a in axis] != [rank - 1]:
            continue
        if producer_name in folded:
            continue
        attr, out_axis = FOLDABLE[producer_entry["class_name"]]
        kernel = getattr(producer, attr).numpy().astype(np.float64)
        bias = producer.bias.numpy().astype(np.float64) if producer.use_bias else 0.0
        gamma = bn.gamma.numpy() if bn.scale else 1.0
        beta = bn.beta.numpy() if bn.center else 0.0
        mean, var = bn.moving_mean.numpy(), bn.moving_variance.numpy()
        s = np.asarray(gamma, np.float64) / np.sqrt(var.astype(np.float64) + bn.epsilon)
        if out_axis is None:  # depthwise (kh, kw, in, mult): out channel = in*mult
            kernel = kernel * s.reshape(kernel.shape[2], kernel.shape[3])
        elif out_axis == -2:
            kernel = kernel * s.reshape(-1, 1)
        else:
            kernel = kernel * s
        new_bias = (bias - mean) * s + beta
        pcfg["use_bias"] = True
        new_weights[producer_name] = [kernel.astype(np.float32), new_bias.astype(np.float32)]
        folded[producer_name] = bn.name
        # consumers of the BN now read the producer
        for layer in config["layers"]:
            for ref in _refs(layer.get("inbound_nodes", [])):
                if ref[0] == bn.name:
                    ref[0], ref[1], ref[2] = producer_name, refs[0][1], refs[0][2]
        for ref in _refs(config.get("output_layers", [])):
            if ref[0] == bn.name:
                ref[0], ref[1], ref[2] = producer_name, refs[0][1], refs[0][2]
    if not folded:
        return model, {}
    config["layers"] = [l for l in config["layers"] if l["name"] not in set(folded.values())]
    weights = {l.name: l.get_weights() for l in model.layers if l.name not in folded.values()}
    weights.update(new_weights)
    logger.info("folded %d BatchNormalization layer(s): %s", len(folded), folded)
    return _rebuild(model, config, weights), folded


def insert_input_quantizers(model: Any, quantizer: Optional[Any]) -> Any:
    """Put a tfmot ``QuantizeLayer(quantizer)`` after every float model input."""
    if quantizer is None:
        return model
    from kerasq.schemes.slots import quantize_layer_class

    qlayer_cls = quantize_layer_class()
    model = as_functional(model)
    config = copy.deepcopy(model.get_config())
    consumers = _consumers(config)
    new_layers = []
    changed = False
    for entry in config["layers"]:
        new_layers.append(entry)
        if entry["class_name"] != "InputLayer":
            continue
        users = [n for n in consumers.get(entry["name"], []) if n != "<output>"]
        by_name = {l["name"]: l for l in config["layers"]}
        if not users or all(by_name[u]["class_name"] == "QuantizeLayer" for u in users):
            continue
        dtype = entry["config"].get("dtype", "float32")
        if dtype not in ("float32", "float16", "float64", "bfloat16"):
            continue
        qname = f"{entry['name']}_quantize"
        q = qlayer_cls(quantizer=copy.deepcopy(quantizer), name=qname)
        serialized = keras.layers.serialize(q)
        serialized.update({"name": qname, "inbound_nodes": [[[entry["name"], 0, 0, {}]]]})
        new_layers.append(serialized)
        for layer in config["layers"]:
            if layer is entry:
                continue
            for ref in _refs(layer.get("inbound_nodes", [])):
                if ref[0] == entry["name"]:
                    ref[0] = qname
        changed = True
    if not changed:
        return model
    config["layers"] = new_layers
    weights = {l.name: l.get_weights() for l in model.layers}
    return _rebuild(model, config, weights)


__all__ = ["fold_batchnorm", "insert_input_quantizers", "as_functional", "FOLDABLE"]
