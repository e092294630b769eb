"""Public entry points: :func:`load` (Caffe net -> Keras model) and :func:`forward`.

Example:
    >>> from kerasq.converters import caffe
    >>> model = caffe.load("deploy.prototxt", "weights.caffemodel")            # doctest: +SKIP
    >>> tops = caffe.forward("deploy.prototxt", "weights.caffemodel",
    ...                      {"data": x_nchw})                                   # doctest: +SKIP
    >>> tops["prob"].shape                                                       # doctest: +SKIP
    (1, 1000)
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Dict, Iterable, List, Mapping, Optional, Union

import numpy as np

from kerasq.converters.caffe.graph import Graph
from kerasq.converters.caffe.keras_layers import CaffePreprocess
from kerasq.converters.caffe.layout import Blob
from kerasq.converters.caffe.passes import build_graph
from kerasq.converters.caffe.reader import read_binaryproto, read_caffemodel, read_prototxt
from kerasq.data import (
    check_array,
    check_bool,
    check_mapping,
    check_names,
    check_number,
    check_path,
)
from kerasq.errors import ArgumentError, CaffeFormatError, KerasqError

log = logging.getLogger("kerasq.converters.caffe")

PathLike = Union[str, "os.PathLike[str]"]

_LOAD_OPTIONS = frozenset(
    {
        "input_shape",
        "fold_batchnorm",
        "batchnorm",
        "mean",
        "scale",
        "swap_rb",
        "dynamic_spatial",
        "stages",
        "model_name",
        "progress",
        "outputs",
        "keras",
    }
)


def custom_objects() -> Dict[str, Any]:
    """Custom Keras layers used by converted models (for ``keras.models.load_model``).

    Example:
        >>> from kerasq._compat import keras
        >>> m = keras.models.load_model("m.h5", custom_objects=custom_objects())  # doctest: +SKIP
    """
    from kerasq.converters.caffe.keras_layers import ALL_LAYERS

    objects: Dict[str, Any] = {}
    for cls in ALL_LAYERS:
        objects[cls.__name__] = cls
        objects["kerasq>" + cls.__name__] = cls
    return objects


def _check_options(options: Mapping[str, Any]) -> None:
    unknown = set(options) - _LOAD_OPTIONS
    if unknown:
        raise ArgumentError(f"unknown option(s) {sorted(unknown)}; known: "
                            f"{', '.join(sorted(_LOAD_OPTIONS))}", layer=sorted(unknown)[0])
    check_mapping(options.get("input_shape"), "input_shape")
    check_names(options.get("outputs"), "outputs", what="top")
    if options.get("scale") is not None:
        check_number(options["scale"], "scale", positive=True)
    mean = options.get("mean")
    if mean is not None and not isinstance(mean, (str, os.PathLike)):
        check_array(mean if isinstance(mean, (list, tuple, np.ndarray)) else [mean], "mean")
    if options.get("swap_rb") is not None:
        check_bool(options["swap_rb"], "swap_rb")
    if options.get("keras", 2) not in (2, 3):
        raise ArgumentError(f"keras={options['keras']!r}: 2 (tf_keras, the default) or 3 (Keras 3)",
                            layer="keras")


def _as_requested(model: Any, options: Mapping[str, Any], source: PathLike) -> Any:
    """The tf_keras ``model``, or its Keras 3 rebuild when ``keras=3`` (errors name ``source``)."""
    if options.get("keras", 2) != 3:
        return model
    from kerasq.converters.caffe.keras3 import to_keras3

    try:
        return to_keras3(model)
    except KerasqError as err:
        raise err.with_context(file=os.fspath(source)) from None


def _mean_array(
    mean: Any, channels: int, height: Optional[int], width: Optional[int]
) -> np.ndarray:
    """Mean as a Keras-layout array: (C,) values or an (H, W, C) image."""
    if isinstance(mean, (str, os.PathLike)):
        image = read_binaryproto(mean)
        image = image.reshape(image.shape[-3:]) if image.ndim >= 3 else image
        if image.ndim != 3 or image.shape[0] != channels:
            raise CaffeFormatError(
                f"mean image has shape {list(image.shape)}, expected {channels} channels",
                file=os.fspath(mean),
            )
        if (height, width) == image.shape[1:]:
            return image.transpose(1, 2, 0).astype(np.float32)
        log.warning(
            "mean image is %dx%d but the input is %sx%s: using its per-channel average",
            image.shape[1],
            image.shape[2],
            height,
            width,
        )
        return image.mean(axis=(1, 2)).astype(np.float32)
    values = np.asarray(mean, dtype=np.float32).reshape(-1)
    if values.size == 1:
        values = np.repeat(values, channels)
    if values.size != channels:
        raise CaffeFormatError(f"{values.size} mean values for {channels} input channels")
    return values


def _preprocessor(options: Mapping[str, Any]):
    mean = options.get("mean")
    scale = float(options.get("scale") or 1.0)
    swap = bool(options.get("swap_rb", False))
    if mean is None and scale == 1.0 and not swap:
        return None

    def apply(ctx, blob_id: str, blob: Blob) -> Blob:
        if blob.rank != 4:
            return blob
        _, c, h, w = blob.shape
        mean_array = _mean_array(mean, c, h, w) if mean is not None else None
        layer = CaffePreprocess(
            mean_array.shape if mean_array is not None else None,
            scale,
            swap,
            name=ctx.reserve(ctx.graph.blob_names.get(blob_id, blob_id) + "_preprocess"),
        )
        tensor = layer(blob.tensor)
        if mean_array is not None:
            layer.set_weights([mean_array])
        return Blob(tensor, blob.shape, blob.perm)

    return apply


STREAM_MIN_BYTES = 64 * 2**20


def _read_weights(caffemodel: PathLike) -> Any:
    """Big caffemodels are streamed blob by blob (weights held once, no 2 GB protobuf limit)."""
    path = os.fspath(caffemodel)
    if os.path.isfile(path) and os.path.getsize(path) >= STREAM_MIN_BYTES:
        from kerasq.converters.caffe.stream_reader import read_caffemodel_table

        return read_caffemodel_table(path)
    return read_caffemodel(path)


def _graph(
    prototxt: PathLike,
    caffemodel: Optional[PathLike],
    options: Mapping[str, Any],
    keep_all_tops: bool,
    outputs: Optional[List[str]] = None,
) -> Graph:
    net = read_prototxt(prototxt)
    weights = _read_weights(caffemodel) if caffemodel is not None else None
    return build_graph(
        net,
        weights,
        source=os.fspath(prototxt),
        weights_source=os.fspath(caffemodel) if caffemodel is not None else "",
        input_shape=options.get("input_shape"),
        stages=options.get("stages", ()),
        fold=bool(options.get("fold_batchnorm", True)),
        batchnorm=str(options.get("batchnorm", "auto")),
        keep_all_tops=keep_all_tops,
        outputs=outputs,
    )


def load(prototxt: PathLike, caffemodel: Optional[PathLike] = None, **options: Any):
    """Convert a Caffe net to a functional Keras model (NHWC, free batch dimension): tf_keras
    by default, Keras 3 with ``keras=3`` (the same model rebuilt by
    :func:`kerasq.converters.caffe.keras3.to_keras3`).

    Options: ``input_shape`` (dict blob -> NCHW shape; needed for data layers, may
    override declared inputs), ``fold_batchnorm`` (True), ``batchnorm`` ("auto"; "bvlc" or "jacinto" choose the
    BatchNorm factor-blob and blob-order semantics where a file is ambiguous), ``mean`` (per-channel values or a
    ``.binaryproto`` path), ``scale`` (float), ``swap_rb`` (bool) — recorded as a leading
    ``CaffePreprocess`` layer computing ``(swap(x) - mean) * scale`` — ``dynamic_spatial``
    (False; True leaves H and W free for fully convolutional nets), ``stages``,
    ``progress`` (callable ``(index, total, layer_name)`` called after each layer),
    ``outputs`` (Caffe top names to expose instead of the net outputs; layers not needed for
    them, e.g. SSD post-processing, are dropped).

    Model inputs are the Caffe input blobs (4-D ones as NHWC); outputs are the blobs no
    layer consumes, each named after its Caffe top.

    Example:
        >>> model = load("lenet.prototxt", "lenet.caffemodel")  # doctest: +SKIP
        >>> model.output_names                                  # doctest: +SKIP
        ['prob']
    """
    from kerasq.converters.caffe.lower import lower_graph

    check_path(prototxt, "prototxt")
    check_path(caffemodel, "caffemodel", optional=True)
    _check_options(options)
    wanted = options.get("outputs")
    graph = _graph(
        prototxt,
        caffemodel,
        options,
        keep_all_tops=False,
        outputs=list(wanted) if wanted is not None else None,
    )
    model, _ = lower_graph(graph, options, preprocess=_preprocessor(options))
    return _as_requested(model, options, prototxt)


@dataclasses.dataclass(frozen=True)
class CaffeLayer:
    """Where a Keras layer of a converted model comes from: the Caffe layer's ``name`` and
    canonical ``caffe_type``, and its own quantization settings (empty when it has none)."""

    name: str
    caffe_type: str
    quantization: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class ConvertedNet:
    """A converted model with its Caffe origin, joined once by Keras layer name.

    ``model``: the tf_keras model (Keras 3 with ``keras=3``); ``layers``: Keras layer name ->
    :class:`CaffeLayer` for every layer lowered from a Caffe layer (helper layers such as
    ``ip1_flatten`` included);
    ``quantization``: the net's caffe-jacinto / Ristretto settings
    (:class:`~kerasq.converters.caffe.quantization.CaffeQuantization`; ``present`` is False for
    a plain prototxt). Keras layer names survive ``.h5`` save and reload, so ``layers`` applies
    to a reloaded model too; ``QuantizationConfig.from_caffe`` keys its overrides by the same
    names.
    """

    model: Any
    layers: Mapping[str, CaffeLayer]
    quantization: Any


def convert(
    prototxt: PathLike,
    caffemodel: Optional[PathLike] = None,
    *,
    solver: Optional[PathLike] = None,
    **options: Any,
) -> ConvertedNet:
    """:func:`load` plus the Caffe origin and quantization settings of every Keras layer.

    ``solver``: a caffe-jacinto solver with quantization fields (0.15). Options as for
    :func:`load`.

    Example:
        >>> net = convert("test.prototxt", "w.caffemodel")           # doctest: +SKIP
        >>> net.layers["conv1_3x3"].caffe_type, net.quantization.flavor  # doctest: +SKIP
        ('Convolution', 'jacinto-0.16')
    """
    from kerasq.converters.caffe.quantization import read_quantization_settings

    model = load(prototxt, caffemodel, **options)
    settings = read_quantization_settings(prototxt, solver)
    own = {layer.name: dict(layer.fields) for layer in settings.layers}
    layers = {
        layer.name: CaffeLayer(
            layer.caffe_name, layer.caffe_type, own.get(layer.caffe_name, {})
        )
        for layer in model.layers
        if isinstance(getattr(layer, "caffe_type", None), str)
    }
    return ConvertedNet(model, layers, settings)


def _to_nhwc(array: np.ndarray, blob: Blob) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(array, blob.perm))


def _to_nchw(array: np.ndarray, blob: Blob) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(array, np.argsort(blob.perm)))


def forward(
    prototxt: PathLike,
    caffemodel: Optional[PathLike],
    inputs: Mapping[str, np.ndarray],
    blobs: Optional[Iterable[str]] = None,
    **options: Any,
) -> Dict[str, np.ndarray]:
    """Run the converted net on NCHW ``inputs``; return Caffe tops (NCHW) by name.

    ``inputs`` maps Caffe input blob names to arrays; their shapes replace the declared
    ones (as after Caffe's reshape), so other batch or spatial sizes work. ``blobs``
    selects top names (default: every top named in the prototxt, inputs included; when given,
    layers not needed for them are not built); each holds the value after its last in-place
    writer, as Caffe reports it. ``options`` as
    for :func:`load` (BatchNorm folding never hides a reported top; ``keras=3`` runs the
    Keras 3 model).

    Example:
        >>> out = forward("deploy.prototxt", "w.caffemodel", {"data": x})  # doctest: +SKIP
    """
    from kerasq.converters.caffe.lower import lower_graph

    check_path(prototxt, "prototxt")
    check_path(caffemodel, "caffemodel", optional=True)
    check_mapping(inputs, "inputs", optional=False)
    for key, value in inputs.items():
        check_array(value, f"inputs[{key!r}]")
    check_names(blobs, "blobs", what="top")
    _check_options(options)
    arrays = {k: np.asarray(v, dtype=np.float32) for k, v in inputs.items()}
    opts = dict(options)
    shapes = dict(opts.pop("input_shape", None) or {})
    shapes.update({k: tuple(v.shape) for k, v in arrays.items()})
    opts["input_shape"] = shapes
    opts["dynamic_spatial"] = False
    names_wanted = list(blobs) if blobs is not None else None
    opts.pop("outputs", None)
    graph = _graph(prototxt, caffemodel, opts, keep_all_tops=True, outputs=names_wanted)
    missing = [
        graph.blob_names.get(i, i) for i in graph.inputs if graph.blob_names.get(i, i) not in arrays
    ]
    if missing:
        raise CaffeFormatError(
            f"no input array given for net input(s) {missing}", file=os.fspath(prototxt)
        )
    final = graph.final_ids()
    names: List[str] = list(blobs) if blobs is not None else list(final)
    unknown = [n for n in names if n not in final]
    if unknown:
        raise CaffeFormatError(f"no top named {unknown} in this net", file=os.fspath(prototxt))
    ids = [final[n] for n in names]
    model, table = lower_graph(graph, opts, outputs=ids, preprocess=_preprocessor(opts))
    model = _as_requested(model, opts, prototxt)
    feed = [_to_nhwc(arrays[graph.blob_names.get(i, i)], table[i]) for i in graph.inputs]
    results = model(feed if len(feed) > 1 else feed[0], training=False)
    if not isinstance(results, (list, tuple)):
        results = [results]
    return {name: _to_nchw(np.asarray(r), table[i]) for name, i, r in zip(names, ids, results)}


__all__ = ["load", "forward", "convert", "custom_objects", "ConvertedNet", "CaffeLayer"]
