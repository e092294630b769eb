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
7. ``fold_batchnorm`` (optional, on by default): BatchNorm (global stats) and a following
   Scale, or a per-channel Scale alone, folded into the preceding Convolution /
   InnerProduct / Deconvolution when the intermediate blobs are not needed as outputs;
   other BatchNorm+Scale pairs merged into one BatchNorm node.
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
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

import numpy as np

from kerasq.converters.caffe.graph import Graph, Node
from kerasq.converters.caffe.proto import caffe_pb2
from kerasq.converters.caffe.reader import blob_to_array, fit_blob_shape, weights_by_layer
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
                    shapes[top] = tuple(int(d) for d in input_shapes[top])
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
                shapes[top] = tuple(int(d) for d in input_shapes[top])
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


# ---- BatchNorm folding --------------------------------------------------------------


def _normalize_nvidia_batchnorm(node: Node) -> None:
    """NVIDIA/caffe-jacinto BatchNorm with its own scale and bias (``scale_bias: true`` or 5
    blobs): the statistics are used as stored, the factor blob is ignored (as OpenCV does).
    Rewritten to kerasq's form ``[mean, var, [1], gamma, beta]``."""
    if node.type != "BatchNorm" or len(node.blobs) < 4:
        return
    if not (node.param.batch_norm_param.scale_bias or len(node.blobs) == 5):
        return
    mean, var, gamma, beta = node.blobs[0], node.blobs[1], node.blobs[-2], node.blobs[-1]
    node.blobs = [mean, var, np.ones(1, np.float32), gamma, beta]


def batchnorm_stats(node: Node, channels: int, source: str) -> Tuple[np.ndarray, np.ndarray, float]:
    """Return (mean, variance, eps) of a Caffe BatchNorm node: ``blob/sf`` with sf==0 -> 0."""
    if len(node.blobs) < 3:
        raise CaffeFormatError(
            f"BatchNorm needs 3 blobs (mean, variance, scale factor) in the caffemodel, "
            f"found {len(node.blobs)}",
            file=source,
            layer=node.caffe_name,
        )
    mean = fit_blob_shape(node.blobs[0], (channels,), source, node.caffe_name, "BatchNorm mean")
    var = fit_blob_shape(node.blobs[1], (channels,), source, node.caffe_name, "BatchNorm variance")
    sf_blob = np.asarray(node.blobs[2], dtype=np.float32).reshape(-1)
    if sf_blob.size != 1:
        raise CaffeFormatError(
            f"BatchNorm scale-factor blob must hold 1 value, holds {sf_blob.size}",
            file=source,
            layer=node.caffe_name,
        )
    sf = float(sf_blob[0])
    factor = np.float32(0.0 if sf == 0 else 1.0 / sf)
    eps = float(node.param.batch_norm_param.eps)
    return (mean * factor).astype(np.float32), (var * factor).astype(np.float32), eps


def _uses_global_stats(node: Node) -> bool:
    p = node.param.batch_norm_param
    return p.use_global_stats if p.HasField("use_global_stats") else True


def _out_channels(node: Node) -> Optional[int]:
    if node.type in (
        "Convolution",
        "DepthwiseConvolution",
        "ConvolutionDepthwise",
        "Deconvolution",
    ):
        return int(node.param.convolution_param.num_output)
    if node.type == "InnerProduct":
        return int(node.param.inner_product_param.num_output)
    return None


def _fold_into(producer: Node, scale: np.ndarray, shift: np.ndarray) -> None:
    """``producer(x) * scale + shift`` folded into the producer's weights and bias."""
    w = producer.blobs[0].astype(np.float64)
    c = scale.size
    if producer.type == "Deconvolution":
        g = int(producer.param.convolution_param.group)
        cin = w.shape[0]
        w = (
            w.reshape(g, cin // g, c // g, *w.shape[2:])
            * scale.reshape(g, 1, c // g, *([1] * (w.ndim - 2)))
        ).reshape(w.shape)
    elif producer.type == "InnerProduct" and producer.param.inner_product_param.transpose:
        w = w.reshape(-1, c) * scale.reshape(1, c)
    else:
        w = w.reshape(c, -1) * scale.reshape(c, 1)
    has_bias = _has_bias(producer)
    bias = producer.blobs[1].astype(np.float64).reshape(c) if has_bias else np.zeros(c)
    producer.blobs = [
        w.reshape(producer.blobs[0].shape).astype(np.float32),
        (bias * scale + shift).astype(np.float32),
    ]
    if producer.type == "InnerProduct":
        producer.param.inner_product_param.bias_term = True
    else:
        producer.param.convolution_param.bias_term = True


def _has_bias(node: Node) -> bool:
    if node.type == "InnerProduct":
        return bool(node.param.inner_product_param.bias_term)
    return bool(node.param.convolution_param.bias_term)


def _foldable_scale(node: Node, channels: int, source: str):
    """(gamma, beta) of a per-channel (axis 1) one-bottom Scale with blobs, else None."""
    p = node.param.scale_param
    if node.type != "Scale" or len(node.bottoms) != 1 or not node.blobs:
        return None
    if p.axis != 1 or p.num_axes != 1:
        return None
    gamma = fit_blob_shape(node.blobs[0], (channels,), source, node.caffe_name, "Scale")
    if not p.bias_term:
        return gamma, np.zeros(channels, np.float32)
    if len(node.blobs) < 2:
        raise CaffeFormatError(
            "Scale with bias_term needs 2 blobs", file=source or None, layer=node.caffe_name
        )
    beta = fit_blob_shape(node.blobs[1], (channels,), source, node.caffe_name, "Scale bias")
    return gamma, beta


def _chain_affine(graph: Graph, first: Node, channels: int, protected: Set[str]):
    """BatchNorm(+Scale) or Scale starting at ``first`` as (scale, shift, nodes), or None."""
    consumers = graph.consumers()
    if first.type == "BatchNorm":
        if not _uses_global_stats(first) or len(first.bottoms) != 1:
            return None
        mean, var, eps = batchnorm_stats(first, channels, graph.source)
        inv_std = 1.0 / np.sqrt(var.astype(np.float64) + eps)
        scale, shift = inv_std, -mean.astype(np.float64) * inv_std
        if len(first.blobs) == 5:  # own gamma/beta (NVIDIA form)
            gamma = fit_blob_shape(first.blobs[3], (channels,), graph.source, first.caffe_name)
            beta = fit_blob_shape(first.blobs[4], (channels,), graph.source, first.caffe_name)
            scale = scale * gamma.astype(np.float64)
            shift = shift * gamma.astype(np.float64) + beta
        chain = [first]
        nxt = consumers.get(first.tops[0], [])
        if len(nxt) == 1 and first.tops[0] not in protected:
            affine = _foldable_scale(nxt[0], channels, graph.source)
            if affine is not None:
                gamma, beta = (a.astype(np.float64) for a in affine)
                scale, shift = scale * gamma, shift * gamma + beta
                chain.append(nxt[0])
        return scale, shift, chain
    affine = _foldable_scale(first, channels, graph.source)
    if affine is None:
        return None
    gamma, beta = (a.astype(np.float64) for a in affine)
    return gamma, beta, [first]


def fold_batchnorm(graph: Graph, protected: Set[str]) -> int:
    """Fold BatchNorm(+Scale), or a per-channel Scale, into the preceding conv/IP.

    ``conv(x)·scale + shift`` becomes one conv with ``W' = W·scale`` (per output channel) and
    ``b' = b·scale + shift``. A fold happens only when the producer's output feeds nothing
    but the chain and is not in ``protected`` (blobs that must stay observable), the
    producer has weights and its output channels are axis 1 of the normalised blob.
    Remaining BatchNorm+Scale pairs are merged into one BatchNorm node (gamma/beta appended
    as blobs 3 and 4). Returns the number of folds and merges.
    """
    folds = 0
    i = 0
    while i < len(graph.nodes):
        first = graph.nodes[i]
        i += 1
        if first.type not in ("BatchNorm", "Scale") or len(first.bottoms) != 1:
            continue
        producer = graph.producers().get(first.bottoms[0])
        if producer is None or len(producer.tops) != 1 or not producer.blobs:
            channels = None
        else:
            channels = _out_channels(producer)
        ip_axis = producer.param.inner_product_param.axis if producer is not None else 1
        foldable = (
            channels is not None
            and producer.tops[0] not in protected
            and not (producer.type == "InnerProduct" and ip_axis not in (1, -1))
            and len(graph.consumers().get(producer.tops[0], [])) == 1
            and not (_has_bias(producer) and len(producer.blobs) < 2)
        )
        if not foldable:
            folds += _merge_batchnorm_scale(graph, first, protected)
            continue
        found = _chain_affine(graph, first, channels, protected)
        if found is None:
            continue
        scale, shift, chain = found
        _fold_into(producer, scale, shift)
        last_top = chain[-1].tops[0]
        producer.tops = [last_top]
        producer.caffe_tops = [graph.blob_names.get(last_top, last_top)]
        graph.nodes = [n for n in graph.nodes if all(n is not r for r in chain)]
        log.info("folded %s into %s", " + ".join(r.caffe_name for r in chain), producer.caffe_name)
        folds += 1
        i -= 1  # ``first`` was removed: the next node now sits at its index
    return folds


def _merge_batchnorm_scale(graph: Graph, bn: Node, protected: Set[str]) -> int:
    """BatchNorm (global stats) + per-channel Scale -> one BatchNorm node with gamma/beta."""
    if bn.type != "BatchNorm" or not _uses_global_stats(bn) or len(bn.blobs) != 3:
        return 0
    nxt = graph.consumers().get(bn.tops[0], [])
    if len(nxt) != 1 or bn.tops[0] in protected or nxt[0].type != "Scale":
        return 0
    channels = int(np.asarray(bn.blobs[0]).size)
    affine = _foldable_scale(nxt[0], channels, graph.source)
    if affine is None:
        return 0
    bn.blobs = list(bn.blobs) + [affine[0].astype(np.float32), affine[1].astype(np.float32)]
    bn.tops = list(nxt[0].tops)
    bn.caffe_tops = [graph.blob_names.get(t, t) for t in bn.tops]
    graph.nodes = [n for n in graph.nodes if n is not nxt[0]]
    log.info("merged %s into %s", nxt[0].caffe_name, bn.caffe_name)
    return 1


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
    keep_all_tops: bool = False,
    outputs: Optional[Sequence[str]] = None,
) -> Graph:
    """Run the normalization passes and return the graph to lower.

    ``fold`` folds BatchNorm(+Scale) into convolutions; blobs that stay observable are the
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
    for node in graph.nodes:
        _normalize_nvidia_batchnorm(node)
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


def drop_flatten_before_inner_product(graph: Graph, protected: Set[str]) -> int:
    """Remove ``Flatten(axis 1)`` whose only consumers are ``InnerProduct(axis 1)`` layers.

    InnerProduct with axis 1 flattens exactly like that Flatten, and its weights are then
    reordered to the Keras layout at conversion time: no run-time transpose is left.
    Returns the number of Flatten layers removed.
    """
    removed = 0
    consumers = graph.consumers()
    keep = []
    for node in graph.nodes:
        p = node.param.flatten_param
        users = consumers.get(node.tops[0], []) if len(node.tops) == 1 else []
        if (
            node.type == "Flatten"
            and p.axis == 1
            and p.end_axis == -1
            and len(node.bottoms) == 1
            and node.tops[0] not in protected
            and users
            and all(
                u.type == "InnerProduct" and u.param.inner_product_param.axis == 1 for u in users
            )
        ):
            for user in users:
                user.bottoms = [node.bottoms[0] if b == node.tops[0] else b for b in user.bottoms]
            removed += 1
            log.info(
                "dropped %s: %s flatten themselves",
                node.caffe_name,
                ", ".join(u.caffe_name for u in users),
            )
            continue
        keep.append(node)
    graph.nodes = keep
    return removed


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
