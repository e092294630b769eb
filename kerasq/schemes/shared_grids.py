"""One grid for tensors that an integer runtime forces onto one scale.

TFLite's int8 CONCATENATION (and AVERAGE_POOL_2D, MAX_POOL_2D, RESHAPE, ...) requires its
inputs and its output to share scale and zero point. If the quantizers of the tensors
feeding a ``Concatenate`` chose different fractional lengths, the converter requantizes
the finer inputs onto the output's grid, so the integer file rounds twice where the Keras
model rounded once (one-step differences that grow through the net). tfmot's
``ConcatTransform`` ties those quantizers; kerasq does the same for dynamic fixed point:

    every DFP quantizer of a group {concat output, each concat input} stores the union
    range [min_i min_i, max_i max_i], hence one fl = min_i fl_i (the widest range) and one
    signedness (signed if any member is).

Groups are found through layers that only move values (max pooling, reshape, flatten,
padding...), which keep their producer's grid. Average pooling is grouped with its input
too (TFLite's AVERAGE_POOL_2D also keeps the scale). Only power-of-two DFP activation
quantizers with a data-derived fl take part; a pinned ``frac_bits`` or caffe-jacinto's
non-power-of-two scales are left alone.

:func:`kerasq.calibrate` calls :func:`unify_shared_grids` after collecting ranges, the
export calls it before building the deploy graph, and :class:`SharedGridCallback` runs it
after every QAT training batch (each quantizer updates its own range during the step).

Example:
    >>> kerasq.calibrate(qmodel, x)                       # doctest: +SKIP
    >>> unify_shared_grids(qmodel)  # already done by calibrate; returns the groups  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from kerasq._compat import keras, tf
from kerasq.schemes import slots

logger = logging.getLogger("kerasq.schemes.shared_grids")

# Layers whose output must share its input grid(s) in TFLite int8.
SCALE_SHARING = frozenset({
    "Concatenate", "Add", "Subtract", "AveragePooling1D", "AveragePooling2D", "AveragePooling3D",
})
# Layers (without an output quantizer) whose output values are input values.
_MOVERS = frozenset({
    "Reshape", "Flatten", "Permute", "Dropout", "MaxPooling1D", "MaxPooling2D",
    "MaxPooling3D", "GlobalMaxPooling1D", "GlobalMaxPooling2D", "ZeroPadding1D",
    "ZeroPadding2D", "Cropping1D", "Cropping2D", "EdgePadding2D", "BatchReshape",
})

_Member = tuple[Any, Any, str]  # (quantizer, its variables, "layer/what" for logging)


def _inbound(layer: Any) -> list[Any]:
    nodes = getattr(layer, "inbound_nodes", None) or []
    if len(nodes) != 1:
        return []
    inbound = nodes[0].inbound_layers
    return list(inbound) if isinstance(inbound, (list, tuple)) else [inbound]


def _eligible(quantizer: Any) -> bool:
    from kerasq.schemes.quantizers import DFPActivationQuantizer

    return (isinstance(quantizer, DFPActivationQuantizer) and quantizer.power2_range
            and not quantizer.apply_offset and quantizer.frac_bits is None)


def _own_quantizer(layer: Any) -> _Member | None:
    """The quantizer on ``layer``'s output, if any (QuantizeLayer or output quantizer)."""
    slot = slots.input_slot(layer)
    if slot is not None:
        return (*slot.base(), f"{layer.name}/input")
    slot = slots.output_slot(layer)
    if slot is not None:
        return (*slot.base(), f"{slot.layer.name}/output")
    return None


def _producer_quantizer(layer: Any) -> _Member | None:
    """The quantizer whose grid ``layer``'s output is on (through value-moving layers)."""
    seen = 0
    while layer is not None and seen < 64:
        member = _own_quantizer(layer)
        if member is not None:
            return member
        if type(slots.inner_layer(layer)).__name__ not in _MOVERS:
            return None
        inbound = _inbound(layer)
        layer = inbound[0] if len(inbound) == 1 else None
        seen += 1
    return None


# layers whose output values are multiples of their input's step: the movers, AbsVal
# (|x|; its int8 tensor has the unsigned grid of that step, see kerasq.export.graph) and
# the converter's AxisSlice (Caffe Slice)
_STEP_KEEPERS = _MOVERS | {"AbsVal", "AxisSlice"}


def _step_producer(layer: Any) -> _Member | None:
    """The quantizer whose step 2^-fl ``layer``'s output values are multiples of: as
    :func:`_producer_quantizer`, through every layer of :data:`_STEP_KEEPERS`."""
    seen = 0
    while layer is not None and seen < 64:
        member = _own_quantizer(layer)
        if member is not None:
            return member
        if type(slots.inner_layer(layer)).__name__ not in _STEP_KEEPERS:
            return None
        inbound = _inbound(layer)
        layer = inbound[0] if len(inbound) == 1 else None
        seen += 1
    return None


_FUSABLE_ACTIVATIONS = frozenset({"ReLU", "Activation"})


def _fused_activation_quantizer(layer: Any) -> _Member | None:
    """For an Add without an output quantizer followed only by a ReLU (tfmot's Add+ReLU
    pattern): the ReLU's quantizer. TFLite fuses the ReLU into the ADD, whose output is then
    on the ReLU's grid; the ADD rounds ties upwards, so its inputs must share that grid for
    the sum to be exact."""
    nodes = getattr(layer, "outbound_nodes", None) or []
    if len(nodes) != 1:
        return None
    consumer = nodes[0].outbound_layer
    inner = slots.inner_layer(consumer)
    if type(inner).__name__ not in _FUSABLE_ACTIVATIONS:
        return None
    if type(inner).__name__ == "Activation" and \
            getattr(getattr(inner, "activation", None), "__name__", "") != "relu":
        return None
    return _own_quantizer(consumer)


def shared_grid_groups(qmodel: Any) -> list[list[_Member]]:
    """Groups of (quantizer, variables, name) that must share one grid, each of size >= 2."""
    parent: dict[int, int] = {}
    members: dict[int, _Member] = {}

    def find(k: int) -> int:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    def add(member: _Member) -> int:
        key = id(member[1])
        if key not in parent:
            parent[key], members[key] = key, member
        return key

    for layer in qmodel.layers:
        if type(slots.inner_layer(layer)).__name__ not in SCALE_SHARING:
            continue
        out = _own_quantizer(layer) or _fused_activation_quantizer(layer)
        if out is None or not _eligible(out[0]):
            continue
        root = add(out)
        for producer in _inbound(layer):
            member = _producer_quantizer(producer)
            if member is None or not _eligible(member[0]) \
                    or member[0].bitwidth != out[0].bitwidth:
                continue
            parent[find(add(member))] = find(root)
    groups: dict[int, list[_Member]] = {}
    for key in parent:
        groups.setdefault(find(key), []).append(members[key])
    return [g for g in groups.values() if len(g) > 1]


def unify_shared_grids(qmodel: Any) -> list[list[str]]:
    """Give every group of :func:`shared_grid_groups` the union range (one fl, one sign).

    Quantizers that have not seen data yet (``count == 0``) are skipped. Returns the
    names of the groups that were unified. Idempotent.
    """
    unified = []
    for group in shared_grid_groups(qmodel):
        ready = [(q, v, n) for q, v, n in group if int(v["count"].numpy()) > 0]
        if len(ready) < 2:
            continue
        low = min(float(v["min"].numpy()) for _, v, _ in ready)
        high = max(float(v["max"].numpy()) for _, v, _ in ready)
        for quantizer, qvars, _ in ready:
            lo, hi = tf.constant(low, tf.float32), tf.constant(high, tf.float32)
            quantizer._store(qvars, lo, hi, quantizer.params_from_range(lo, hi))
        names = [n for _, _, n in ready]
        logger.debug("shared grid for %s: range [%g, %g]", names, low, high)
        unified.append(names)
    return unified


def _weight_entry(wrapper: Any, attr: str) -> tuple[Any, Any] | None:
    slot = slots.find_weight_slot(wrapper, attr)
    return slot.base() if slot is not None else None


def link_accumulator_biases(qmodel: Any) -> list[str]:
    """Put every 32-bit bias on its layer's int32 accumulator grid 2^-(fl_in + fl_w).

    For each layer with an ``AccumulatorBiasQuantizer``: fl_in is the fl of the DFP
    quantizer whose grid the layer's input is on, fl_w the kernel's per-channel fl (a
    depthwise kernel's (in, multiplier) fls flattened in TFLite's channel order). TFLite
    stores a conv/dense bias as int32 with scale s_in·s_w, so this is the bias the integer
    file computes with. Layers whose input or kernel grid is not DFP stay float
    (``linked`` 0). Returns the names of the linked layers. Idempotent.
    """
    from kerasq.schemes.quantizers import AccumulatorBiasQuantizer, DFPWeightQuantizer

    linked = []
    for layer in qmodel.layers:
        bias = _weight_entry(layer, "bias")
        if bias is None or not isinstance(bias[0], AccumulatorBiasQuantizer):
            continue
        _, bias_vars = bias
        kernel = _weight_entry(layer, "kernel") or _weight_entry(layer, "depthwise_kernel")
        inbound = _inbound(layer)
        producer = _step_producer(inbound[0]) if len(inbound) == 1 else None
        ok = (kernel is not None and isinstance(kernel[0], DFPWeightQuantizer)
              and kernel[0].power2_range and not kernel[0].apply_offset
              and producer is not None and _eligible_input(producer[0])
              and int(producer[1]["count"].numpy()) > 0)
        if not ok:
            bias_vars["linked"].assign(0.0)
            continue
        q_in, v_in = producer[0], producer[1]
        fl_in = q_in.frac_bits if q_in.frac_bits is not None else int(v_in["frac_bits"].numpy())
        fl_w = np.asarray(kernel[1]["frac_bits"].numpy(), np.float32).reshape(-1)
        if kernel[0].frac_bits is not None:
            fl_w = np.full_like(fl_w, kernel[0].frac_bits)
        units = int(bias_vars["frac_bits"].shape[-1])
        if fl_w.size == 1:
            fl_w = np.full(units, fl_w[0], np.float32)
        if fl_w.size != units:
            bias_vars["linked"].assign(0.0)
            continue
        bias_vars["frac_bits"].assign(fl_w + float(fl_in))
        bias_vars["linked"].assign(1.0)
        linked.append(slots.inner_layer(layer).name)
    return linked


def _eligible_input(quantizer: Any) -> bool:
    from kerasq.schemes.quantizers import DFPActivationQuantizer

    return (isinstance(quantizer, DFPActivationQuantizer) and quantizer.power2_range
            and not quantizer.apply_offset)


def align_for_int8(qmodel: Any) -> dict[str, list[Any]]:
    """Make ``qmodel`` compute what its TFLite int8 file computes: one grid per
    scale-sharing group (:func:`unify_shared_grids`), then biases on the accumulator grid
    (:func:`link_accumulator_biases`). Returns {"groups": ..., "biases": ...}."""
    slots.refresh_weight_state(qmodel)  # kernel fl of the current weights (after the last step)
    groups = unify_shared_grids(qmodel)
    return {"groups": groups, "biases": link_accumulator_biases(qmodel)}


class SharedGridCallback(keras.callbacks.Callback):
    """Keras callback for QAT: :func:`align_for_int8` after every training batch.

    Example: ``qmodel.fit(x, y, callbacks=[SharedGridCallback()])``.
    """

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        align_for_int8(self.model)

    def on_train_end(self, logs: Any = None) -> None:
        align_for_int8(self.model)


__all__ = [
    "SCALE_SHARING",
    "SharedGridCallback",
    "align_for_int8",
    "link_accumulator_biases",
    "shared_grid_groups",
    "unify_shared_grids",
]
