"""Keras 3 <-> tf_keras: the tf_keras *twin* of a Keras 3 model, and state exchange.

kerasq's quantization decisions (BatchNorm folding, which tensors are quantized, merged
producers, shared grids, accumulator biases) and its TFLite export live on the tf_keras
path. The Keras 3 path reuses them instead of copying them:

* :func:`to_tf_keras` rebuilds a float Keras 3 model layer by layer in tf_keras (same
  names, configs and weights);
* :func:`from_tfmot` turns the tfmot-quantized twin into a Keras 3 model of
  :class:`~kerasq.keras3.layers.QuantizedLayer` / ``InputQuantizer`` with the same
  quantizers (Keras 3 classes of the same config) and the same state;
* :func:`push` / :func:`pull` copy weights and every quantizer variable between a Keras 3
  quantized model and its twin (slot by slot, in tfmot's slot order).

A twin is rebuilt from the Keras 3 quantized model alone (:func:`rebuild_twin`: its
float layers, the stored ``QuantizationConfig``), so a reloaded .keras file exports too.

Example:
    >>> twin = rebuild_twin(k3_qmodel)  # doctest: +SKIP
"""

from __future__ import annotations

import inspect
import logging
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from kerasq._compat import keras as tfk
from kerasq._compat import keras3
from kerasq.errors import ModelFormatError, UnsupportedLayerError
from kerasq.keras3.layers import InputQuantizer, QuantizedLayer, layer_variable
from kerasq.keras3.quantizers import from_tf_keras
from kerasq.schemes import slots

keras = keras3()
logger = logging.getLogger("kerasq.keras3")

# (layer, [(source layer name, tensor index)], called with a list)
Node = Tuple[Any, List[Tuple[str, int]], bool]

_DROP_SUFFIXES = ("_initializer", "_regularizer", "_constraint")


def _translate(config: Dict[str, Any], cls: type) -> Dict[str, Any]:
    """Keep the config keys ``cls`` accepts (initializers, regularizers, dtype policies
    dropped: weights are copied, not initialised)."""
    accepted = set(inspect.signature(cls.__init__).parameters) | {"name", "trainable"}
    out = {}
    for key, value in config.items():
        if key not in accepted or key.endswith(_DROP_SUFFIXES) or key in ("dtype",):
            continue
        out[key] = value
    return out


def _layer_class(module: Any, class_name: str, where: str) -> type:
    cls = getattr(module.layers, class_name, None)
    if cls is None:
        raise UnsupportedLayerError(f"{class_name} has no {where} equivalent")
    return cls


def _history_refs(args: Any) -> Tuple[List[Tuple[str, int]], bool]:
    refs: List[Tuple[str, int]] = []

    def walk(item: Any) -> None:
        if isinstance(item, dict) and item.get("class_name") == "__keras_tensor__":
            name, _, index = item["config"]["keras_history"]
            refs.append((name, int(index)))
        elif isinstance(item, (list, tuple)):
            for sub in item:
                walk(sub)
        elif isinstance(item, dict):
            for sub in item.values():
                walk(sub)

    walk(args)
    is_list = bool(args) and isinstance(args[0], (list, tuple))
    return refs, is_list


def _pairs(entries: Any) -> List[List[Any]]:
    if entries and isinstance(entries[0], str):
        return [entries]
    return list(entries)


def k3_graph(model: Any) -> Tuple[List[Tuple[str, Tuple[Any, ...]]], List[Node],
                                  List[Tuple[str, int]]]:
    """(inputs [(name, batch shape)], nodes in call order, outputs [(name, index)])."""
    if isinstance(model, keras.Sequential):
        if not model.inputs:
            raise ModelFormatError("the Sequential model is not built; give it a keras.Input",
                                   layer=model.name)
        nodes: List[Node] = []
        previous = "input"
        for layer in model.layers:
            nodes.append((layer, [(previous, 0)], False))
            previous = layer.name
        return [("input", tuple(model.inputs[0].shape))], nodes, [(previous, 0)]
    if not hasattr(model, "_operations") and not hasattr(model, "get_config"):
        raise ModelFormatError("needs a Sequential or functional Keras 3 model",
                               layer=model.name)
    config = model.get_config()
    if "layers" not in config:
        raise ModelFormatError("subclassed Keras 3 models have no graph to quantize",
                               layer=model.name)
    inputs = []
    nodes = []
    input_names = {name for name, _, _ in _pairs(config["input_layers"])}
    for entry in config["layers"]:
        layer = model.get_layer(entry["name"])
        if entry["name"] in input_names:
            inputs.append((entry["name"], tuple(entry["config"]["batch_shape"])))
            continue
        if len(entry["inbound_nodes"]) != 1:
            raise UnsupportedLayerError("a layer called more than once (shared weights)",
                                        layer=entry["name"])
        refs, is_list = _history_refs(entry["inbound_nodes"][0]["args"])
        nodes.append((layer, refs, is_list))
    outputs = [(name, int(index)) for name, _, index in _pairs(config["output_layers"])]
    return inputs, nodes, outputs


def tf_graph(model: Any) -> Tuple[List[Tuple[str, Tuple[Any, ...]]], List[Node],
                                  List[Tuple[str, int]]]:
    """The same description for a functional tf_keras model."""
    config = model.get_config()
    inputs, nodes = [], []
    input_names = {name for name, _, _ in config["input_layers"]}
    for entry in config["layers"]:
        layer = model.get_layer(entry["name"])
        if entry["name"] in input_names:
            inputs.append((entry["name"], tuple(entry["config"]["batch_input_shape"])))
            continue
        flat = entry["inbound_nodes"][0]
        refs = [(ref[0], int(ref[2])) for ref in flat]
        nodes.append((layer, refs, len(refs) > 1))
    outputs = [(name, int(index)) for name, _, index in config["output_layers"]]
    return inputs, nodes, outputs


def _assemble(inputs: Sequence[Tuple[str, Tuple[Any, ...]]], nodes: Sequence[Node],
              outputs: Sequence[Tuple[str, int]], make: Callable[[Any], Any],
              input_fn: Callable[..., Any], model_cls: Any, name: str) -> Tuple[Any, Dict]:
    tensors: Dict[str, Any] = {}
    model_inputs = []
    for in_name, shape in inputs:
        tensor = input_fn(batch_shape=shape, name=in_name)
        tensors[in_name] = tensor
        model_inputs.append(tensor)
    made: Dict[str, Any] = {}
    for layer, refs, is_list in nodes:
        args = []
        for src, index in refs:
            value = tensors[src]
            args.append(value[index] if isinstance(value, (list, tuple)) else value)
        new = make(layer)
        if new is None:  # identity
            tensors[layer.name] = args[0]
            continue
        made[layer.name] = new
        tensors[layer.name] = new(args if is_list else args[0])
    outs = [tensors[n] if not isinstance(tensors[n], (list, tuple)) else tensors[n][i]
            for n, i in outputs]
    model = model_cls(model_inputs if len(model_inputs) > 1 else model_inputs[0],
                      outs if len(outs) > 1 else outs[0], name=name)
    return model, made


def _tf_input(batch_shape: Tuple[Any, ...], name: str) -> Any:
    return tfk.Input(batch_shape=batch_shape, name=name)


def _k3_input(batch_shape: Tuple[Any, ...], name: str) -> Any:
    return keras.Input(batch_shape=batch_shape, name=name)


def _to_tf_layer(layer: Any, activation: Optional[str] = None, config: Any = None) -> Any:
    cls = _layer_class(tfk, type(layer).__name__, "tf_keras")
    cfg = _translate(config if config is not None else layer.get_config(), cls)
    if activation is not None and "activation" in cfg:
        cfg["activation"] = activation
    return cls.from_config(cfg)


def _to_k3_layer(layer: Any, linear: bool = False) -> Any:
    cls = _layer_class(keras, type(layer).__name__, "Keras 3")
    cfg = _translate(layer.get_config(), cls)
    if linear and "activation" in cfg:
        cfg["activation"] = "linear"
    return cls.from_config(cfg)


def to_tf_keras(model: Any) -> Any:
    """The float tf_keras twin of a Sequential / functional Keras 3 model (weights copied)."""
    inputs, nodes, outputs = k3_graph(model)
    twin, made = _assemble(inputs, nodes, outputs, _to_tf_layer, _tf_input, tfk.Model,
                           model.name)
    for layer, _, _ in nodes:
        made[layer.name].set_weights([np.asarray(w) for w in layer.get_weights()])
    return twin


def _activation_name(wrapper: Any) -> Optional[str]:
    fn = slots.activation_function(wrapper)
    if fn is None:
        return None
    name = tfk.activations.serialize(fn)
    if isinstance(name, dict):
        name = name.get("config", name.get("class_name"))
    return None if name in (None, "linear") else str(name)


def from_tfmot(tfq: Any, config: Dict[str, Any], preserve_sparsity: bool) -> Any:
    """A Keras 3 quantized model with the layers, quantizers and state of a tfmot model."""
    inputs, nodes, outputs = tf_graph(tfq)

    def make(layer: Any) -> Any:
        if slots.is_quantize_layer(layer):
            quantizer = layer.quantizer
            return InputQuantizer(from_tf_keras(quantizer) if quantizer is not None else None,
                                  name=layer.name)
        if slots.is_quantize_wrapper(layer):
            inner = slots.inner_layer(layer)
            weight_q = [(s.attr, from_tf_keras(s.quantizer)) for s in slots.weight_slots(layer)]
            acts = {s.role: from_tf_keras(s.quantizer) for s in slots.activation_slots(layer)}
            out = slots.output_slot(layer)
            return QuantizedLayer(
                _to_k3_layer(inner, linear=True), weight_q, activation=_activation_name(layer),
                pre_quantizer=acts.get("pre"), post_quantizer=acts.get("post"),
                output_quantizer=from_tf_keras(out.quantizer) if out is not None else None,
                quantization_config=config, preserve_sparsity=preserve_sparsity,
                name=layer.name)
        return _to_k3_layer(layer)

    k3q, _ = _assemble(inputs, nodes, outputs, make, _k3_input, keras.Model, tfq.name)
    pull(tfq, k3q)
    return k3q


def rebuild_float_tf_keras(k3q: Any) -> Tuple[Any, Dict[str, Any], bool]:
    """(float tf_keras model, QuantizationConfig dict, preserve_sparsity) of a Keras 3
    quantized model: input quantizers dropped, each wrapped layer with its activation."""
    inputs, nodes, outputs = k3_graph(k3q)
    config: Optional[Dict[str, Any]] = None
    sparsity = False

    def make(layer: Any) -> Any:
        nonlocal config, sparsity
        if isinstance(layer, InputQuantizer):
            return None
        if isinstance(layer, QuantizedLayer):
            config = layer.quantization_config
            sparsity = sparsity or layer.preserve_sparsity
            return _to_tf_layer(layer.layer, activation=layer.activation_name or "linear")
        return _to_tf_layer(layer)

    float_model, made = _assemble(inputs, nodes, outputs, make, _tf_input, tfk.Model,
                                  k3q.name)
    for layer, _, _ in nodes:
        source = layer.layer if isinstance(layer, QuantizedLayer) else layer
        if layer.name in made and source.weights:
            made[layer.name].set_weights([np.asarray(w) for w in source.get_weights()])
    if config is None:
        raise ModelFormatError("not a kerasq Keras 3 quantized model (no QuantizedLayer)",
                               layer=k3q.name)
    return float_model, config, sparsity


def _flat_tf(variables: Any) -> List[Any]:
    if not isinstance(variables, dict):
        return list(variables) if isinstance(variables, (list, tuple)) else [variables]
    out: List[Any] = []
    for key in sorted(variables):
        value = variables[key]
        out.extend(_flat_tf(value) if isinstance(value, dict) else [value])
    return out


def _pairs_of(k3q: Any, tfq: Any) -> List[Tuple[Any, Any]]:
    k3_layers = [l for l in k3q.layers if not isinstance(l, keras.layers.InputLayer)]
    tf_layers = [l for l in tfq.layers if not isinstance(l, tfk.layers.InputLayer)]
    if len(k3_layers) != len(tf_layers):
        raise ModelFormatError(f"the tf_keras twin has {len(tf_layers)} layers, the Keras 3 "
                               f"model {len(k3_layers)}", layer=k3q.name)
    return list(zip(k3_layers, tf_layers))


def _weight_pairs(k3_layer: Any, tf_layer: Any) -> List[Tuple[Any, Any]]:
    if isinstance(k3_layer, QuantizedLayer):
        inner3 = k3_layer.layer
        tf_vars: Dict[str, Any] = {}
        for var in [s.weight for s in slots.weight_slots(tf_layer)] + list(
                slots.inner_layer(tf_layer).weights):
            tf_vars.setdefault(slots.weight_attr(var), var)
        found = []
        for attr, var in tf_vars.items():
            found.append((layer_variable(inner3, attr), var))
        return found
    if isinstance(k3_layer, InputQuantizer):
        return []
    return list(zip(k3_layer.weights, tf_layer.weights))


def _slot_pairs(k3_layer: Any, tf_layer: Any) -> List[Tuple[Any, Any]]:
    if not isinstance(k3_layer, (QuantizedLayer, InputQuantizer)):
        return []
    k3_slots = k3_layer.slot_variables()
    tf_slots = slots.layer_slots(tf_layer)
    if len(k3_slots) != len(tf_slots):
        raise ModelFormatError(f"{len(tf_slots)} quantizers in the tf_keras twin, "
                               f"{len(k3_slots)} in the Keras 3 layer", layer=k3_layer.name)
    found = []
    for (_, _, _, k3_vars), tf_slot in zip(k3_slots, tf_slots):
        tf_vars = _flat_tf(tf_slot.variables)
        if len(tf_vars) != len(k3_vars):
            raise ModelFormatError("quantizer state differs from the tf_keras twin",
                                   layer=k3_layer.name)
        found.extend(zip(k3_vars, tf_vars))
    return found


def _all_pairs(k3q: Any, tfq: Any) -> List[Tuple[Any, Any]]:
    found = []
    for k3_layer, tf_layer in _pairs_of(k3q, tfq):
        found.extend(_weight_pairs(k3_layer, tf_layer))
        found.extend(_slot_pairs(k3_layer, tf_layer))
    return found


def push(k3q: Any, tfq: Any) -> None:
    """Copy every weight and quantizer variable of the Keras 3 model into its twin."""
    for v3, vtf in _all_pairs(k3q, tfq):
        vtf.assign(np.asarray(keras.ops.convert_to_numpy(v3)).astype(vtf.dtype.as_numpy_dtype)
                   .reshape(vtf.shape))


def pull(tfq: Any, k3q: Any) -> None:
    """Copy every weight and quantizer variable of the twin into the Keras 3 model."""
    for v3, vtf in _all_pairs(k3q, tfq):
        v3.assign(np.asarray(vtf.numpy()).astype(v3.dtype).reshape(v3.shape))


__all__ = ["to_tf_keras", "from_tfmot", "rebuild_float_tf_keras", "push", "pull", "k3_graph",
           "tf_graph"]
