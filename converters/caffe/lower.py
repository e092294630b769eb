"""Lowering a normalized :class:`Graph` to a Keras functional model.

:class:`LoweringContext` is what every handler gets: unique Keras layer names derived
from Caffe names, layout changes (:meth:`LoweringContext.caffe_order`,
:meth:`LoweringContext.channels_last`), weight access with shape checks and errors
that name the file and the layer.

Example:
    >>> model, blobs = lower_graph(graph, options={})   # doctest: +SKIP
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Mapping, NoReturn, Optional, Sequence, Set, Tuple, Type

import numpy as np

from kerasq._compat import keras, tf
from kerasq.converters.caffe import layers as _handlers  # noqa: F401  (registers handlers)
from kerasq.converters.caffe.graph import Graph, Node, sanitize_name
from kerasq.converters.caffe.layers import _registry
from kerasq.converters.caffe.layout import NHWC, Blob, default_perm, identity
from kerasq.converters.caffe.reader import fit_blob_shape
from kerasq.errors import CaffeFormatError, KerasqError, UnsupportedLayerError
from kerasq.serialization import tag_layers

log = logging.getLogger("kerasq.converters.caffe.lower")



class LoweringContext:
    """State shared by the handlers while one graph is lowered."""

    def __init__(self, graph: Graph, options: Optional[Mapping[str, Any]] = None) -> None:
        self.graph = graph
        self.options: Dict[str, Any] = dict(options or {})
        self.dynamic_spatial: bool = bool(self.options.get("dynamic_spatial", False))
        first = next(iter(graph.inputs.values()), (1,))
        self.batch_size: int = int(first[0]) if first else 1  # declared N (Reshape specs use it)
        self.source = graph.source
        self.blobs_read: Dict[int, Set[int]] = {}  # id(node) -> blob indices read
        self._names: Set[str] = set()
        self._output_names: Dict[str, str] = {}  # reserved Keras name -> output blob id
        self.node: Optional[Node] = None  # the node being lowered

    def reserve_outputs(self, blob_ids: Sequence[str]) -> None:
        """Keep the Caffe top names of the model outputs for the layers producing them."""
        for blob_id in blob_ids:
            wanted = sanitize_name(self.graph.blob_names.get(blob_id, blob_id))
            if wanted not in self._output_names:
                self._output_names[wanted] = blob_id
                self._names.add(wanted)

    # -- names ---------------------------------------------------------------------
    def reserve(self, name: str) -> str:
        """Reserve and return a unique Keras name based on ``name``."""
        base = sanitize_name(name)
        unique, k = base, 1
        while unique in self._names:
            unique = f"{base}_{k}"
            k += 1
        self._names.add(unique)
        return unique

    def name(self, node: Node, suffix: str = "") -> str:
        """A valid unique Keras layer name derived from the Caffe layer name.

        Names of model outputs are reserved: the layer finally producing an output is
        renamed to its Caffe top name when the model is assembled.
        """
        return self.reserve(node.name + (f"_{suffix}" if suffix else ""))

    # -- errors --------------------------------------------------------------------
    def error(
        self, node: Node, reason: str, cls: Type[KerasqError] = UnsupportedLayerError
    ) -> NoReturn:
        """Raise ``cls(reason)`` naming the file and the layer."""
        raise cls(reason, file=self.source or None, layer=node.caffe_name)

    # -- weights -------------------------------------------------------------------
    def blob(self, node: Node, index: int, shape: Sequence[int], what: str = "") -> np.ndarray:
        """Learned blob ``index`` of ``node`` reshaped to ``shape`` (legacy dims accepted)."""
        label = what or f"blob {index}"
        self.blobs_read.setdefault(id(node), set()).add(index)
        if index >= len(node.blobs) or node.blobs[index] is None:
            self.error(
                node,
                f"missing weights: {node.type} needs {label} of shape {list(shape)} but the "
                f"caffemodel has {len(node.blobs)} blob(s) for this layer"
                + ("" if node.blobs else " (no caffemodel given, or no layer of this name in it)"),
                CaffeFormatError,
            )
        array = fit_blob_shape(node.blobs[index], shape, self.source, node.caffe_name, label)
        if not np.isfinite(array).all():
            flat = int(np.argmax(~np.isfinite(array.reshape(-1))))
            where = tuple(int(i) for i in np.unravel_index(flat, array.shape))
            self.error(node, f"{label} holds {array.reshape(-1)[flat]} at index {where}; "
                       "non-finite weights are refused", CaffeFormatError)
        return array.astype(np.float32, copy=False)  # no copy: big models hold weights once

    # -- layout --------------------------------------------------------------------
    def to_perm(self, blob: Blob, perm: Sequence[int], node: Optional[Node] = None) -> Blob:
        """Same data with Keras layout ``perm`` (inserts a Permute or Reshape if needed)."""
        perm = tuple(perm)
        if blob.perm == perm:
            return blob
        if perm[0] != 0 or blob.perm[0] != 0:
            raise UnsupportedLayerError(
                "layouts that move the batch axis are not supported", file=self.source or None
            )
        owner = node or self.node
        base = owner.name if owner is not None else "layout"
        target_shape = tuple(blob.shape[p] for p in perm)
        old_order = [p for p in blob.perm if blob.shape[p] != 1]
        new_order = [p for p in perm if blob.shape[p] != 1]
        static = all(d is not None for d in target_shape[1:])
        if old_order == new_order and static:
            tensor = keras.layers.Reshape(target_shape[1:], name=self.reserve(base + "_relayout"))(
                blob.tensor
            )
        else:
            dims = tuple(blob.perm.index(p) for p in perm[1:])
            tensor = keras.layers.Permute(dims, name=self.reserve(base + "_permute"))(blob.tensor)
        return Blob(tensor, blob.shape, perm)

    def caffe_order(self, blob: Blob, node: Optional[Node] = None) -> Blob:
        """Same data with identity perm (Keras layout == Caffe layout)."""
        return self.to_perm(blob, identity(blob.rank), node)

    def channels_last(self, blob: Blob, node: Optional[Node] = None) -> Blob:
        """A 4-D blob as NHWC (perm (0, 2, 3, 1))."""
        if blob.rank != 4:
            raise UnsupportedLayerError(
                f"expected a 4-D blob, got shape {list(blob.shape)}",
                file=self.source or None,
                layer=(node or self.node).caffe_name if (node or self.node) else None,
            )
        return self.to_perm(blob, NHWC, node)

    def same_layout(self, blobs: Sequence[Blob], node: Optional[Node] = None) -> List[Blob]:
        """Bring every blob to the first one's layout (for element-wise ops, Concat...)."""
        return [blobs[0]] + [self.to_perm(b, blobs[0].perm, node) for b in blobs[1:]]


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _check(ctx: LoweringContext, node: Node, blob: Blob) -> None:
    """Catch shape-inference bugs early: Keras static shape vs the Caffe shape."""
    actual = tuple(blob.tensor.shape)
    expected = blob.keras_shape
    ok = len(actual) == len(expected) and all(
        a is None or e is None or a == e for a, e in zip(actual[1:], expected[1:])
    )
    if not ok:
        ctx.error(
            node,
            f"internal shape mismatch: Keras {list(actual)} vs Caffe-derived "
            f"{list(expected)} (perm {blob.perm})",
            KerasqError,
        )


def make_input(ctx: LoweringContext, blob_id: str, shape: Tuple[int, ...]) -> Tuple[Any, Blob]:
    """A Keras Input for a Caffe input blob (NCHW -> NHWC for 4-D); batch is free."""
    caffe_shape: Tuple[Optional[int], ...] = (None,) + tuple(shape[1:])
    if ctx.dynamic_spatial and len(shape) == 4:
        caffe_shape = (None, shape[1], None, None)
    perm = default_perm(len(shape))
    keras_shape = tuple(caffe_shape[p] for p in perm)[1:]
    name = ctx.reserve(ctx.graph.blob_names.get(blob_id, blob_id))
    tensor = keras.Input(shape=keras_shape, name=name)
    return tensor, Blob(tensor, caffe_shape, perm)


def lower_graph(
    graph: Graph,
    options: Optional[Mapping[str, Any]] = None,
    outputs: Optional[Sequence[str]] = None,
    preprocess: Optional[Any] = None,
) -> Tuple[Any, Dict[str, Blob]]:
    """Build the Keras model for ``graph``; returns ``(model, blob id -> Blob)``.

    ``outputs``: blob ids to expose (default: the net outputs), NHWC for 4-D blobs and in
    Caffe order for other ranks (the returned table holds their final layout). Outputs whose
    Keras layer
    is not named after the Caffe top get a linear ``Activation`` named after it.
    ``preprocess``: optional callable(ctx, blob_id, Blob) -> Blob applied to each input.
    """
    ctx = LoweringContext(graph, options)
    output_ids = list(outputs) if outputs is not None else graph.output_ids()
    ctx.reserve_outputs(output_ids)
    blobs: Dict[str, Blob] = {}
    model_inputs = []
    for blob_id, shape in graph.inputs.items():
        tensor, blob = make_input(ctx, blob_id, shape)
        model_inputs.append(tensor)
        if preprocess is not None:
            blob = preprocess(ctx, blob_id, blob)
        blobs[blob_id] = blob
    total = len(graph.nodes)
    origin: Dict[str, Tuple[str, str]] = {}  # Keras layer name -> (Caffe name, Caffe type)
    folded: Dict[str, str] = {}  # Keras layer name -> Caffe layers folded into it, comma-joined
    progress = ctx.options.get("progress")
    for index, node in enumerate(graph.nodes, 1):
        ctx.node = node
        try:
            fn = _registry.get(node.type)
        except UnsupportedLayerError as err:
            raise err.with_context(file=graph.source or None, layer=node.caffe_name) from None
        inputs = [blobs[b] for b in node.bottoms]
        if not inputs and node.type != "Silence":
            ctx.error(node, f"{node.type} layer has no bottom", CaffeFormatError)
        before = set(ctx._names)
        try:
            results = fn(ctx, node, inputs)
        except KerasqError as err:
            raise err.with_context(file=graph.source or None, layer=node.caffe_name)

        except (ValueError, TypeError, IndexError) as err:
            # Keras/TF refusing a configuration the handler did not foresee.
            raise UnsupportedLayerError(
                f"cannot lower {node.type}: {_first_line(err)}",
                file=graph.source or None,
                layer=node.caffe_name,
            ) from err
        read = ctx.blobs_read.pop(id(node), None)
        if read and len(node.blobs) > max(read) + 1:  # Caffe: "Incompatible number of blobs"
            ctx.error(node, f"the caffemodel has {len(node.blobs)} blobs for this layer, "
                      f"{node.type} uses {max(read) + 1}", CaffeFormatError)
        node.blobs = []  # the weights live in the Keras layer now (big models: memory)
        for keras_name in set(ctx._names) - before:
            origin[keras_name] = (node.caffe_name, node.type)
            if node.folded:
                folded[keras_name] = ",".join(node.folded)
        if len(results) != len(node.tops):
            ctx.error(
                node,
                f"handler returned {len(results)} blobs for {len(node.tops)} tops",
                KerasqError,
            )
        for top, blob in zip(node.tops, results):
            _check(ctx, node, blob)
            blobs[top] = blob
        log.info(
            "[%d/%d] %s (%s) -> %s",
            index,
            total,
            node.caffe_name,
            node.type,
            ", ".join(str(list(b.shape)) for b in results),
        )
        if progress is not None:
            progress(index, total, node.caffe_name)
    ctx.node = None
    model_outputs = []
    renamed: Set[int] = set()
    for blob_id in output_ids:
        if blob_id not in blobs:
            raise CaffeFormatError(
                f"requested output {blob_id!r} is not a blob of this net", file=graph.source or None
            )
        blob = blobs[blob_id]
        keep_caffe_order = getattr(blob.tensor._keras_history.layer, "caffe_order_output", False)
        if blob.perm != default_perm(blob.rank) and blob.perm[0] == 0 and not keep_caffe_order:
            # Outputs have a fixed layout: NHWC for 4-D blobs, Caffe order otherwise
            # (layers whose result is a table, e.g. SSD detections, keep Caffe order).
            producer = next((n for n in graph.nodes if blob_id in n.tops), None)
            blob = blobs[blob_id] = ctx.to_perm(blob, default_perm(blob.rank), producer)
        tensor = blob.tensor
        wanted = sanitize_name(graph.blob_names.get(blob_id, blob_id))
        layer = tensor._keras_history.layer
        reserved = ctx._output_names.get(wanted) == blob_id
        if layer.name == wanted and not any(tensor is t for t in model_outputs):
            pass
        elif (
            reserved
            and not isinstance(layer, keras.layers.InputLayer)
            and not any(tensor is t for t in model_outputs)
            and len(layer._inbound_nodes) == 1
            and len(tf.nest.flatten(layer.output)) == 1
            and id(layer) not in renamed
        ):
            renamed.add(id(layer))
            if layer.name in origin:
                origin[wanted] = origin.pop(layer.name)
            if layer.name in folded:
                folded[wanted] = folded.pop(layer.name)
            layer._name = wanted  # the Caffe top names the layer producing it
            del ctx._output_names[wanted]
        else:
            if reserved:
                del ctx._output_names[wanted]
            else:
                wanted = ctx.reserve(wanted)
            tensor = keras.layers.Activation("linear", name=wanted)(tensor)
        model_outputs.append(tensor)
    model_name = (options or {}).get("model_name") or graph.name or "caffe_net"
    model = keras.Model(model_inputs, model_outputs, name=sanitize_name(model_name))
    tag_caffe_layers(model, origin, folded)
    return model, blobs


def tag_caffe_layers(model: Any, origin: Mapping[str, Tuple[str, str]],
                     folded: Optional[Mapping[str, str]] = None) -> None:
    """Give every Keras layer lowered from a Caffe layer the attributes ``caffe_name`` and
    ``caffe_type`` (canonical type, e.g. ``Convolution`` for ``ConvolutionRistretto``).

    ``QuantizationConfig.for_layer`` and the quantize registry read ``caffe_type``, so type
    overrides (``{"Convolution": {...}}``) reach converted layers. ``caffe_type`` is saved in
    the model config (:func:`kerasq.serialization.tag_layers`): a .h5 / .keras file reloaded
    with ``kerasq.load_model`` has it again, and so are ``caffe_name`` and ``caffe_folded``
    (the comma-joined names of the Caffe layers folded into the layer, e.g. its BatchNorm
    and Scale), by which ``QuantizationConfig.check_layer_names`` recognises the layer
    names of a config read from the net's prototxt.
    """
    caffe_types, caffe_names = {}, {}
    for layer in model.layers:
        found = origin.get(layer.name)
        if found is not None:
            layer.caffe_name, caffe_types[layer.name] = found
            caffe_names[layer.name] = found[0]
    tag_layers(model, "caffe_type", caffe_types)
    tag_layers(model, "caffe_name", caffe_names)
    if folded:
        tag_layers(model, "caffe_folded", {k: v for k, v in folded.items()
                                           if k in {lay.name for lay in model.layers}})


__all__ = ["LoweringContext", "lower_graph", "sanitize_name", "make_input", "tag_caffe_layers"]
