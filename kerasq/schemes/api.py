"""Public entry points: :func:`quantize_model`; :func:`load_model`, :func:`custom_objects`
and :func:`quantize_scope` are re-exported from :mod:`kerasq.serialization`.

Example (post-training quantization is two calls)::

    import kerasq
    qmodel = kerasq.quantize_model(model)              # symmetric power-of-two DFP 8/8
    kerasq.calibrate(qmodel, x_calibration)            # ranges and fractional lengths
    qmodel.save("q.h5"); same = kerasq.load_model("q.h5")
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Mapping, Optional, Union

import numpy as np

from kerasq._compat import keras, tfmot
from kerasq.data import check_bool, check_keras_model
from kerasq.errors import KerasqError, ModelFormatError, QuantizationConfigError
from kerasq.schemes.config import QuantizationConfig
from kerasq.schemes.registry import MERGING_CONSUMERS, float_valued_layers, layer_role
from kerasq.schemes.scheme import KerasqQuantizeScheme
from kerasq.schemes.slots import KERNEL_ATTRS, quantize_layer_class, refresh_weight_state
from kerasq.schemes.sparsity import SparsityPreservingQuantizer, init_quantizer_masks
from kerasq.schemes.transforms import _consumers, as_functional
from kerasq.serialization import custom_objects, load_model, quantize_scope

logger = logging.getLogger("kerasq.schemes")


def _check_model(model: Any) -> None:
    if not isinstance(model, keras.Model):
        raise ModelFormatError(
            f"quantize_model needs a tf_keras Model (from kerasq._compat), got "
            f"{type(model).__module__}.{type(model).__name__}")
    if not (isinstance(model, keras.Sequential) or getattr(model, "_is_graph_network", False)):
        raise ModelFormatError("quantize_model needs a Sequential or functional model; "
                               "subclassed models have no graph to quantize", layer=model.name)
    if not model.built:
        raise ModelFormatError("the model is not built; call model.build(input_shape) first",
                               layer=model.name)


def _has_exact_zero_kernels(model: Any) -> bool:
    for layer in model.layers:
        for attr in sorted(KERNEL_ATTRS):
            w = getattr(layer, attr, None)
            if w is not None and hasattr(w, "numpy") and np.any(w.numpy() == 0):
                return True
    return False


def _merges_into(consumer: Any, config: QuantizationConfig) -> bool:
    """True if ``consumer`` quantizes its own output so its producer need not."""
    cfg = config.for_layer(consumer)
    if cfg.precision == "float" or not cfg.quantize_activations:
        return False
    name = type(consumer).__name__
    if name in MERGING_CONSUMERS:
        return True
    if name == "Activation":
        return consumer.get_config().get("activation") in ("relu", "relu6")
    return False


def _wrap_sparsity(qconfig: Any) -> Any:
    for attr, q in list(getattr(qconfig, "weight_quantizers", {}).items()):
        if attr != "bias":
            qconfig.weight_quantizers[attr] = SparsityPreservingQuantizer(q)
    return qconfig


def quantize_model(model: Any, config: Optional[Union[QuantizationConfig, Mapping[str, Any]]] = None,
                   *, preserve_sparsity: Optional[bool] = None) -> Any:
    """Return a QAT-ready fake-quantized copy of ``model`` (the model is not modified).

    Each layer gets the QuantizeConfig of :class:`~kerasq.schemes.registry.KerasqQuantizeRegistry`
    for ``config.for_layer(layer)``; BatchNorm is folded first (``fold_batchnorm``); a
    producer whose consumers all quantize their own output (ReLU, BatchNorm) is not
    quantized (caffe-jacinto's rule); model inputs are quantized. ``preserve_sparsity``
    wraps kernel quantizers in ``kerasq.schemes.sparsity.SparsityPreservingQuantizer`` (None: if
    any kernel has exact zeros). Call :func:`kerasq.calibrate` next for PTQ, or
    ``compile``/``fit`` for QAT (ranges start from calibration if done, else from the first batch).

    Example: ``qmodel = kerasq.quantize_model(model, QuantizationConfig(bitwidth_weights=4))``.
    """
    if config is None:
        config = QuantizationConfig()
    elif isinstance(config, Mapping):
        config = QuantizationConfig.from_dict(config)
    elif not isinstance(config, QuantizationConfig):
        raise QuantizationConfigError(
            f"expected a QuantizationConfig or a dict, got {type(config).__name__}",
            layer="config")
    check_keras_model(model, "model", quantized=False)
    config.check_layer_names(model)
    if preserve_sparsity is not None:
        check_bool(preserve_sparsity, "preserve_sparsity")
    _check_model(model)
    if preserve_sparsity is None:
        preserve_sparsity = _has_exact_zero_kernels(model)
        if preserve_sparsity:
            logger.info("%s: kernels contain exact zeros; sparsity is preserved", model.name)
    kq = tfmot().quantization.keras
    scheme = KerasqQuantizeScheme(config)
    transform = scheme.get_layout_transformer()
    with quantize_scope():
        base, _ = transform.apply(as_functional(model), {})
    # the transform rebuilds the layers from their configs: carry the converter's tags over
    caffe_types = {lay.name: lay.caffe_type for lay in model.layers
                   if isinstance(getattr(lay, "caffe_type", None), str)}
    for layer in base.layers:
        if layer.name in caffe_types:
            layer.caffe_type = caffe_types[layer.name]
    registry = scheme.get_quantize_registry()
    graph = base.get_config()
    consumers = _consumers(graph)
    plan: Dict[str, Any] = {}
    producers: Dict[str, List[str]] = {}
    for producer, users_of in consumers.items():
        for user in users_of:
            producers.setdefault(user, []).append(producer)
    floats = float_valued_layers({lay.name: lay for lay in base.layers}, producers)
    for layer in base.layers:
        if isinstance(layer, (keras.layers.InputLayer, quantize_layer_class())):
            continue
        if layer.name in floats and layer_role(layer) != "float":
            # a Concatenate / passthrough of float-role values (SSD priors) stays float
            plan[layer.name] = registry.get_quantize_config(layer, quantize_output=False)
            continue
        users = [base.get_layer(n) for n in consumers.get(layer.name, []) if n != "<output>"]
        is_output = "<output>" in consumers.get(layer.name, [])
        merged = bool(users) and not is_output and all(_merges_into(u, config) for u in users)
        try:
            qconfig = registry.get_quantize_config(
                layer, quantize_output=not merged,
                folded_batchnorm=transform.folded.get(layer.name, ""))
        except KerasqError as err:
            raise err.with_context(layer=layer.name) from None
        if preserve_sparsity:
            qconfig = _wrap_sparsity(qconfig)
        plan[layer.name] = qconfig

    def annotate(layer: Any) -> Any:
        clone = layer.__class__.from_config(layer.get_config())
        if layer.name in plan:
            return kq.quantize_annotate_layer(clone, quantize_config=plan[layer.name])
        return clone

    with quantize_scope():
        annotated = keras.models.clone_model(base, clone_function=annotate)
        annotated.set_weights(base.get_weights())
        # the layout transform ran above (once): tfmot gets a scheme that does not repeat it
        qmodel = kq.quantize_apply(annotated, KerasqQuantizeScheme(config, layout_applied=True))
    refresh_weight_state(qmodel)
    if preserve_sparsity:
        init_quantizer_masks(qmodel)
    logger.info("%s: quantized %d layers (%s)", model.name, len(plan), config.precision)
    return qmodel


__all__ = ["quantize_model", "load_model", "custom_objects", "quantize_scope",
           "refresh_weight_state"]
