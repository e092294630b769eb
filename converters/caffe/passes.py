"""Graph normalization: from a parsed net (+ weights) to a :class:`Graph` ready for lowering.

Passes, in order (:func:`build_graph`):

1. ``upgrade``: V0/V1 -> V2 layers, legacy net inputs -> ``Input`` layers.
2. ``phase filter``: Caffe's ``NetStateRule`` logic for the TEST phase (level 0, stages
   from the ``stages`` option).
3. ``inputs``: data layers (Data, ImageData, HDF5Data, ...) become inputs of the shape the
   user gives (``input_shape`` option); the user may also override declared shapes.
4. ``drop training-only layers``: losses, Accuracy, Silence, HDF5Output.
5. ``SSA``: in-place tops get a fresh id per writer; duplicate layer names made unique.
6. ``weights``: blobs attached by layer name (k-th duplicate gets the k-th stored
   entry; ``param { name }`` sharing honoured); layers the prototxt lacks are ignored.
7. ``fold_batchnorm`` (optional, on by default; see :mod:`.fold`): BatchNorm (global
   stats) and a following Scale, or a per-channel Scale alone, folded into the preceding
   Convolution / InnerProduct / Deconvolution when the intermediate blobs are not needed as
   outputs; other BatchNorm+Scale pairs merged into one BatchNorm node.
8. ``Flatten`` feeding only ``InnerProduct(axis 1)`` layers is dropped (they flatten the
   same way, with weights reordered instead of a run-time transpose).

Example:
    >>> from kerasq.converters.caffe.reader import parse_prototxt_text
    >>> net = parse_prototxt_text('input: "x" input_dim: 1 input_dim: 2 input_dim: 3 input_dim: 3 '
    ...     'layer { name: "r" type: "ReLU" bottom: "x" top: "x" }')
    >>> g = build_graph(net, None, source="n.prototxt")
    >>> [(n.name, n.bottoms, n.tops) for n in g.nodes]
    [('r', ['x'], ['x#1'])]
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

import numpy as np

from kerasq.converters.caffe.fold import (  # noqa: F401  (batchnorm_stats re-exported)
    batchnorm_stats,
    drop_flatten_before_inner_product,
    fold_batchnorm,
    normalize_batchnorm_blobs,
)
from kerasq.converters.caffe.graph import Graph, Node
from kerasq.converters.caffe.proto import caffe_pb2
from kerasq.converters.caffe.reader import blob_to_array, weights_by_layer
from kerasq.converters.caffe.upgrade import upgrade_net
from kerasq.errors import CaffeFormatError

log = logging.getLogger("kerasq.converters.caffe.passes")

DATA_LAYER_TYPES = frozenset(
    {
        "Data",
        "ImageData",
        "HDF5Data",
        "WindowData",
        "MemoryData",
        "DummyData",
        "AnnotatedData",
        "VideoData",
    }
)
TRAIN_ONLY_TYPES = frozenset({"Accuracy", "Silence", "HDF5Output"})

# Quantized-training layer types read as their float counterparts: the float weights are in
# the caffemodel; the quantization parameters are read by QuantizationConfig.from_caffe.
TYPE_ALIASES = {
    "ConvolutionRistretto": "Convolution",
    "DeconvolutionRistretto": "Deconvolution",
    "FcRistretto": "InnerProduct",
    "LRNRistretto": "LRN",
}


def _is_train_only(layer_type: str) -> bool:
    return layer_type in TRAIN_ONLY_TYPES or layer_type.endswith("Loss")


# ---- phase filter -------------------------------------------------------------------


def _rule_met(rule: caffe_pb2.NetStateRule, stages: Set[str], level: int) -> bool:
    if rule.HasField("phase") and rule.phase != caffe_pb2.TEST:
        return False
    if rule.HasField("min_level") and level < rule.min_level:
        return False
    if rule.HasField("max_level") and level > rule.max_level:
        return False
    if any(s not in stages for s in rule.stage):
        return False
    if any(s in stages for s in rule.not_stage):
        return False
    return True


def filter_phase(
    layers: Sequence[caffe_pb2.LayerParameter], stages: Iterable[str] = (), level: int = 0
) -> List[caffe_pb2.LayerParameter]:
    """Keep the layers Caffe instantiates in the TEST phase (``Net::FilterNet``)."""
    stage_set = set(stages)
    kept = []
    for layer in layers:
        if layer.HasField("phase") and layer.phase != caffe_pb2.TEST:
            continue
        if layer.include:
            if not any(_rule_met(r, stage_set, level) for r in layer.include):
                continue
        elif any(_rule_met(r, stage_set, level) for r in layer.exclude):
            continue
        kept.append(layer)
    return kept


# ---- inputs -------------------------------------------------------------------------


def _integer_dims(dims: Any, top: str, source: str) -> Tuple[int, ...]:
    """``dims`` as ints; fractional, boolean or non-numeric dims are refused (no truncation)."""
    out = []
    for d in (dims if isinstance(dims, (list, tuple)) else [dims]):
        if isinstance(d, bool) or not isinstance(d, (int, float, np.integer, np.floating)) or (
                isinstance(d, (float, np.floating)) and not float(d).is_integer()):
            raise CaffeFormatError(f"input_shape for {top!r} has a non-integer dimension {d!r}",
                                   file=source or None)
        out.append(int(d))
    return tuple(out)


def _declared_data_shape(layer: caffe_pb2.LayerParameter) -> Optional[Tuple[int, ...]]:
    if layer.type == "MemoryData":
        p = layer.memory_data_param
        if p.batch_size and p.channels and p.height and p.width:
            return (p.batch_size, p.channels, p.height, p.width)
    if layer.type == "DummyData":
        p = layer.dummy_data_param
        if p.shape:
            return tuple(int(d) for d in p.shape[0].dim)
        if p.num:
            return (p.num[0], p.channels[0], p.height[0], p.width[0])
    return None


def _resolve_inputs(
    layers: List[caffe_pb2.LayerParameter],
    input_shapes: Mapping[str, Sequence[int]],
    source: str,
) -> Tuple[List[caffe_pb2.LayerParameter], Dict[str, Tuple[int, ...]], List[str]]:
    """Split Input/data layers off; return (other layers, input shapes, dropped tops)."""
    shapes: Dict[str, Tuple[int, ...]] = {}
    dropped: List[str] = []
    rest = []
    used_overrides = set()
    for layer in layers:
        if layer.type == "Input":
            declared = list(layer.input_param.shape)
            if declared and len(declared) not in (1, len(layer.top)):
                raise CaffeFormatError(
                    f"Input layer has {len(layer.top)} tops but {len(declared)} shapes",
                    file=source,
                    layer=layer.name or None,
                )
            for i, top in enumerate(layer.top):
                if top in input_shapes:
                    shapes[top] = _integer_dims(input_shapes[top], top, source)
                    used_overrides.add(top)
                elif declared:
                    shapes[top] = tuple(int(d) for d in declared[min(i, len(declared) - 1)].dim)
                else:
                    raise CaffeFormatError(
                        f"Input top {top!r} has no shape; pass "
                        f"input_shape={{{top!r}: (N, C, H, W)}} "
                        f"(CLI: --input-shape {top}:1,3,224,224)",
                        file=source,
                        layer=layer.name or None,
                    )
        elif layer.type in DATA_LAYER_TYPES or (layer.type == "Python" and not layer.bottom):
            if not layer.top:
                continue
            top = layer.top[0]
            if top in input_shapes:
                shapes[top] = _integer_dims(input_shapes[top], top, source)
                used_overrides.add(top)
            else:
                declared = _declared_data_shape(layer)
                if declared is None:
                    raise CaffeFormatError(
                        f"{layer.type} layer has no fixed shape; give it with "
                        f"input_shape={{{top!r}: (N, C, H, W)}} "
                        f"(CLI: --input-shape {top}:1,3,224,224)",
                        file=source,
                        layer=layer.name or None,
                    )
                shapes[top] = declared
            dropped.extend(layer.top[1:])  # labels
            t = layer.transform_param
            if t.mean_file or t.mean_value or t.scale != 1.0:
                log.warning(
                    "%s: data layer %r preprocesses with transform_param (mean_file=%r, "
                    "mean_value=%s, scale=%g); that is not part of the net: pass mean=/scale= "
                    "(CLI --mean/--scale) to record it in the model",
                    source,
                    layer.name,
                    t.mean_file,
                    list(t.mean_value),
                    t.scale,
                )
        else:
            rest.append(layer)
    unknown = set(input_shapes) - used_overrides
    if unknown:
        raise CaffeFormatError(
            f"input_shape names {sorted(unknown)} but the net's inputs are {sorted(shapes)}",
            file=source,
        )
    for top, shape in shapes.items():
        if not shape or any(d <= 0 for d in shape):
            raise CaffeFormatError(f"input {top!r} has an invalid shape {list(shape)}", file=source)
    return rest, shapes, dropped


# ---- weights ------------------------------------------------------------------------


def _attach_weights(nodes: List[Node], table: Dict[str, List[List[np.ndarray]]]) -> None:
    seen: Dict[str, int] = {}
    by_share_name: Dict[str, np.ndarray] = {}
    used: Set[int] = set()  # arrays already given to a node: later users get a copy
    for node in nodes:
        k = seen.get(node.caffe_name, 0)
        seen[node.caffe_name] = k + 1
        entries = table.get(node.caffe_name)
        if entries:
            chosen = entries[min(k, len(entries) - 1)]
            # No copy on first use: big models would otherwise hold their weights twice.
            node.blobs = [b.copy() if id(b) in used else b for b in chosen]
            used.update(id(b) for b in chosen)
        for i, spec in enumerate(node.param.param):
            if not spec.name:
                continue
            if spec.name in by_share_name:  # a later sharer uses the owner's blob
                if i >= len(node.blobs):
                    node.blobs.extend([None] * (i + 1 - len(node.blobs)))  # type: ignore[list-item]
                if node.blobs[i] is None:
                    node.blobs[i] = by_share_name[spec.name].copy()
            elif i < len(node.blobs):
                by_share_name[spec.name] = node.blobs[i]


# ---- the pipeline -------------------------------------------------------------------


def build_graph(
    net: caffe_pb2.NetParameter,
    weights: Optional[caffe_pb2.NetWeights],
    *,
    source: str = "",
    weights_source: str = "",
    input_shape: Optional[Mapping[str, Sequence[int]]] = None,
    stages: Iterable[str] = (),
    fold: bool = False,
    batchnorm: str = "auto",
    keep_all_tops: bool = False,
    outputs: Optional[Sequence[str]] = None,
) -> Graph:
    """Run the normalization passes and return the graph to lower.

    ``fold`` folds BatchNorm(+Scale) into convolutions; ``batchnorm`` ("auto", "bvlc",
    "jacinto") chooses the BatchNorm blob semantics (:func:`.fold.normalize_batchnorm_blobs`); blobs that stay observable are the
    net outputs, or every top's final value when ``keep_all_tops`` is true. ``outputs``
    (Caffe top names) prunes the net to what they need; they are then the observable blobs.
    """
    # The net's own NetState (stages, level) applies unless stages are given; phase is TEST.
    stage_list = list(stages) or list(net.state.stage)
    layers = filter_phase(upgrade_net(net, source), stage_list, int(net.state.level))
    layers, shapes, dropped = _resolve_inputs(layers, dict(input_shape or {}), source)
    dropped_set = set(dropped)
    layers = [layer for layer in layers if not _is_train_only(layer.type)]

    graph = Graph(source=source, name=net.name)
    current: Dict[str, str] = {}
    versions: Dict[str, int] = {}

    def define(name: str) -> str:
        n = versions.get(name, -1) + 1
        versions[name] = n
        blob_id = name if n == 0 else f"{name}#{n}"
        current[name] = blob_id
        graph.blob_names[blob_id] = name
        return blob_id

    for name, shape in shapes.items():
        graph.inputs[define(name)] = shape
    used_names: Set[str] = set()
    for index, layer in enumerate(layers):
        caffe_name = layer.name or f"{layer.type.lower()}{index}"
        bottoms = []
        for bottom in layer.bottom:
            if bottom not in current:
                why = " (a label/extra top of a data layer)" if bottom in dropped_set else ""
                raise CaffeFormatError(
                    f"bottom {bottom!r} is not produced by any earlier layer{why}",
                    file=source,
                    layer=caffe_name,
                )
            bottoms.append(current[bottom])
        unique = caffe_name
        k = 1
        while unique in used_names:
            unique = f"{caffe_name}_{k}"
            k += 1
        used_names.add(unique)
        for i, top in enumerate(layer.top):
            in_place = i < len(layer.bottom) and layer.bottom[i] == top
            if not in_place and (top in current or top in layer.top[:i]):
                raise CaffeFormatError(  # Caffe: "Top blob produced by multiple sources"
                    f"top {top!r} is already produced by an earlier layer (only in-place "
                    "writes, top = bottom, may reuse a name)",
                    file=source,
                    layer=caffe_name,
                )
        tops = [define(t) for t in layer.top]
        text_blobs = [blob_to_array(b, source, caffe_name) for b in layer.blobs]
        del layer.blobs[:]  # hyper-parameters only; weights come from the caffemodel
        graph.nodes.append(
            Node(
                name=unique,
                type=TYPE_ALIASES.get(layer.type, layer.type),
                bottoms=bottoms,
                tops=tops,
                caffe_tops=list(layer.top),
                param=layer,
                caffe_name=caffe_name,
                blobs=text_blobs,
            )
        )  # blobs written in the prototxt: fallback

    if weights is not None:
        table = weights if isinstance(weights, dict) else weights_by_layer(weights, weights_source)
        _attach_weights(graph.nodes, table)  # a dict: already streamed (stream_reader)
    normalize_batchnorm_blobs(graph.nodes, batchnorm, weights_source or source)
    if outputs is not None:
        prune_to_outputs(graph, outputs)
    if outputs is not None:
        protected = set(graph.outputs)
    elif keep_all_tops:
        protected = set(graph.final_ids().values())
    else:
        protected = set(graph.output_ids())
    if fold:
        fold_batchnorm(graph, protected)
    drop_flatten_before_inner_product(graph, protected)
    return graph


def prune_to_outputs(graph: Graph, names: Sequence[str]) -> List[str]:
    """Keep only the layers (and inputs) needed to compute the Caffe tops ``names``.

    Sets and returns ``graph.outputs`` (their SSA ids, value after the last in-place writer).
    Layers past the requested tops, e.g. SSD post-processing, are never lowered.
    """
    final = graph.final_ids()
    unknown = [n for n in names if n not in final]
    if unknown:
        raise CaffeFormatError(
            f"no top named {unknown} in this net (tops: {sorted(final)[:20]}...)",
            file=graph.source or None,
        )
    ids = [final[n] for n in names]
    producers = graph.producers()
    needed: Set[int] = set()
    reached: Set[str] = set()
    stack = list(ids)
    while stack:
        blob_id = stack.pop()
        if blob_id in reached:
            continue
        reached.add(blob_id)
        node = producers.get(blob_id)
        if node is not None and id(node) not in needed:
            needed.add(id(node))
            stack.extend(node.bottoms)
    graph.nodes = [n for n in graph.nodes if id(n) in needed]
    graph.inputs = {k: v for k, v in graph.inputs.items() if k in reached}
    graph.outputs = ids
    return ids


__all__ = [
    "build_graph",
    "prune_to_outputs",
    "drop_flatten_before_inner_product",
    "filter_phase",
    "fold_batchnorm",
    "batchnorm_stats",
    "DATA_LAYER_TYPES",
    "TYPE_ALIASES",
    "TRAIN_ONLY_TYPES",
]
