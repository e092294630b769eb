"""A converted tf_keras model rebuilt as a Keras 3 model: same graph, names, configs, weights.

The Caffe lowering builds tf_keras models (the quantization tools need them); the Keras 3
output is that model translated node by node, so every Caffe-specific decision (layouts,
padding, folding, output names) is made once. Each tf_keras layer becomes

* its Keras 3 stock class of the same name, from the same config (tf_keras configs are
  Keras 3 configs, but for the renames in :data:`CONFIG_RENAMES`, the tf_keras-only keys
  in :data:`CONFIG_DROPS` — dropped only at the value Keras 3 implies — and
  BatchNormalization's one-element ``axis`` list, an int in Keras 3), or
* for a LeakyReLU with a negative slope (Caffe ReLU ``negative_slope < 0``, which Keras 3's
  LeakyReLU and ReLU refuse): a non-trainable PReLU whose one shared slope is that value
  (``relu(x) - a·relu(-x)`` equals ``max(x, a·x)`` bit for bit), or
* the Keras 3 twin of a kerasq custom layer (:mod:`.layers`), from the same config,

is called on the translated inputs in the tf_keras graph's order, and receives the
tf_keras layer's weights (same order and shapes; anything else is an error naming the
layer). The ``caffe_name``/``caffe_type`` tags of the lowering are copied.

Example:
    >>> from kerasq.converters.caffe import load
    >>> k3_model = to_keras3(load("deploy.prototxt", "w.caffemodel"))    # doctest: +SKIP
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Tuple

from kerasq._compat import keras as tf_keras
from kerasq._compat import tf
from kerasq.converters.caffe.keras3.layers import _TWINS, keras3, require_tensorflow_backend
from kerasq.errors import KerasqError, UnsupportedLayerError

log = logging.getLogger("kerasq.converters.caffe.keras3")

# tf_keras config key -> Keras 3 key, per stock class (Keras 3 still reads the old key but warns)
CONFIG_RENAMES: Dict[str, Dict[str, str]] = {"LeakyReLU": {"alpha": "negative_slope"}}
# tf_keras-only config keys and the one value Keras 3's class computes with
CONFIG_DROPS: Dict[str, Dict[str, Any]] = {
    "DepthwiseConv2D": {"groups": 1},
    "Conv2DTranspose": {"groups": 1},
}


def _plain(value: Any) -> Any:
    """tf tracking wrappers (ListWrapper, _DictWrapper) -> plain lists and dicts."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def keras3_config(layer: Any, class_name: str) -> Dict[str, Any]:
    """The tf_keras ``layer``'s config as the Keras 3 class ``class_name`` reads it.

    Example:
        >>> "groups" in keras3_config(tf_keras.layers.DepthwiseConv2D(3), "DepthwiseConv2D")
        False
    """
    config = _plain(dict(layer.get_config()))
    for old, new in CONFIG_RENAMES.get(class_name, {}).items():
        if old in config:
            config[new] = config.pop(old)
    for key, implied in CONFIG_DROPS.get(class_name, {}).items():
        if key in config and config.pop(key) != implied:
            raise UnsupportedLayerError(
                f"{class_name} with {key}={layer.get_config()[key]!r} has no Keras 3 equivalent",
                layer=_caffe_name(layer),
            )
    if class_name == "BatchNormalization" and isinstance(config.get("axis"), list):
        if len(config["axis"]) != 1:
            raise UnsupportedLayerError(
                f"BatchNormalization over axes {config['axis']} has no Keras 3 equivalent",
                layer=_caffe_name(layer),
            )
        config["axis"] = config["axis"][0]
    return config


def _caffe_name(layer: Any) -> str:
    """The Caffe layer a Keras layer was lowered from (errors name it), else its own name."""
    return str(getattr(layer, "caffe_name", None) or layer.name)


def keras3_class(layer: Any) -> Any:
    """The Keras 3 class that rebuilds the tf_keras ``layer`` (raises if there is none)."""
    cls = type(layer)
    if cls in _TWINS:
        return _TWINS[cls]
    k3 = keras3()
    if cls.__module__.startswith("tf_keras.") and hasattr(k3.layers, cls.__name__):
        return getattr(k3.layers, cls.__name__)
    raise UnsupportedLayerError(
        f"{cls.__name__} has no Keras 3 equivalent (only stock Keras layers and the "
        "converter's own layers are translated)",
        layer=_caffe_name(layer),
    )


def _negative_leaky_relu(layer: Any, slope: float) -> Any:
    k3 = keras3()
    return k3.layers.PReLU(
        alpha_initializer=k3.initializers.Constant(slope),
        shared_axes=list(range(1, len(layer.input_shape))),
        trainable=False,
        name=layer.name,
    )


def _keras3_layer(layer: Any) -> Tuple[Any, bool]:
    """The Keras 3 layer for ``layer`` and whether it takes ``layer``'s weights."""
    if type(layer) is tf_keras.layers.LeakyReLU and float(layer.alpha) < 0:
        return _negative_leaky_relu(layer, float(layer.alpha)), False
    cls = keras3_class(layer)
    config = keras3_config(layer, cls.__name__) if cls not in _TWINS.values() else _plain(
        dict(layer.get_config())
    )
    try:
        made = cls.from_config(config)
    except (TypeError, ValueError) as err:
        raise UnsupportedLayerError(
            f"Keras 3 {cls.__name__} refuses the config: {str(err).splitlines()[0]}",
            layer=_caffe_name(layer),
        ) from err
    return made, True


def _copy_weights(source: Any, target: Any) -> None:
    weights = source.get_weights()
    want = [tuple(w.shape) for w in target.weights]
    have = [tuple(w.shape) for w in weights]
    if want != have:
        raise KerasqError(
            f"Keras 3 {type(target).__name__} holds weights {want}, tf_keras has {have}",
            layer=_caffe_name(source),
        )
    target.set_weights(weights)


def _mapped(tensors: Dict[int, Any], value: Any) -> Any:
    """A tf_keras symbolic tensor's Keras 3 counterpart; other call arguments unchanged."""
    return tensors[id(value)] if hasattr(value, "_keras_history") else value


def to_keras3(model: Any) -> Any:
    """Rebuild the functional tf_keras ``model`` (a converted Caffe net) in Keras 3.

    Same inputs, outputs, layer names, configs and weights; the result computes the same
    numbers (up to float rounding of the backend kernels), on every Keras 3 backend but for
    the converter layers without a ``keras.ops`` form (``tensorflow_only_reason``: SSD's
    DetectionOutput), which need Keras 3's TensorFlow backend (refused here otherwise,
    naming the Caffe layer).

    Example:
        >>> k3_model = to_keras3(tf_keras_model)     # doctest: +SKIP
        >>> k3_model.save("net.keras")               # doctest: +SKIP
    """
    k3 = keras3()
    if not isinstance(model, tf_keras.Model) or not getattr(model, "_is_graph_network", False):
        raise KerasqError("to_keras3 expects a functional tf_keras model (a converted net)")
    tf_only = [
        layer for layer in model.layers
        if type(layer) in _TWINS and _TWINS[type(layer)].tensorflow_only_reason
    ]  # fmt: skip
    if tf_only:
        cls = _TWINS[type(tf_only[0])]
        try:
            require_tensorflow_backend(
                f"{cls.__name__} (a converter layer)", cls.tensorflow_only_reason
            )
        except UnsupportedLayerError as err:
            raise err.with_context(layer=_caffe_name(tf_only[0])) from None
    tensors: Dict[int, Any] = {}  # id(tf_keras KerasTensor) -> Keras 3 tensor
    inputs: List[Any] = []
    for tensor in model.inputs:
        layer = tensor._keras_history.layer
        made = k3.Input(
            shape=tuple(tensor.shape[1:]), dtype=tensor.dtype.name, name=layer.name
        )
        tensors[id(tensor)] = made
        inputs.append(made)
    built: Dict[int, Tuple[Any, bool]] = {}  # id(tf_keras layer) -> (Keras 3 layer, weights?)
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            layer = node.layer
            if isinstance(layer, tf_keras.layers.InputLayer):
                continue
            first_call = id(layer) not in built
            if first_call:
                built[id(layer)] = _keras3_layer(layer)
                for tag in ("caffe_name", "caffe_type"):
                    if hasattr(layer, tag):
                        setattr(built[id(layer)][0], tag, getattr(layer, tag))
            target, takes_weights = built[id(layer)]
            args = tf.nest.map_structure(lambda v: _mapped(tensors, v), node.call_args)
            kwargs = tf.nest.map_structure(lambda v: _mapped(tensors, v), node.call_kwargs)
            kwargs.pop("training", None)  # inference graph; Keras 3 passes it itself
            try:
                outputs = target(*args, **kwargs)
            except KerasqError as err:
                raise err.with_context(layer=_caffe_name(layer)) from None
            except (TypeError, ValueError) as err:
                raise UnsupportedLayerError(
                    f"Keras 3 {type(target).__name__} cannot be called as in tf_keras: "
                    f"{str(err).strip().splitlines()[0]}",
                    layer=_caffe_name(layer),
                ) from err
            for old, new in zip(tf.nest.flatten(node.outputs), tf.nest.flatten(outputs)):
                tensors[id(old)] = new
            if takes_weights and first_call:  # built by its first call: now it has weights
                _copy_weights(layer, target)
            log.debug("Keras 3: %s (%s)", layer.name, type(target).__name__)
    outputs = [tensors[id(t)] for t in model.outputs]
    # one input / output: a bare tensor, so the model is called and returns as in tf_keras
    return k3.Model(
        inputs[0] if len(inputs) == 1 else inputs,
        outputs[0] if len(outputs) == 1 else outputs,
        name=model.name,
    )


__all__ = ["to_keras3", "keras3_class", "keras3_config", "CONFIG_RENAMES", "CONFIG_DROPS"]
