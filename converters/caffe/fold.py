"""Exact graph simplifications that make converted nets smaller and quantization friendly.

* :func:`fold_batchnorm`: ``conv(x)·scale + shift`` -> one conv with ``W' = W·scale`` (per
  output channel) and ``b' = b·scale + shift``, for BatchNorm (global stats, scale factor
  ``s``: ``mean/s``, ``var/s``, ``s == 0 -> 0``), BatchNorm+Scale and a lone per-channel
  Scale after a Convolution / Deconvolution / InnerProduct; remaining BatchNorm+Scale pairs
  merged into one BatchNorm node (gamma/beta appended as blobs 3 and 4).
* :func:`normalize_batchnorm_blobs`: BatchNorm blobs brought to ``[mean, var, factor]`` (+
  gamma, beta for NVIDIA Caffe / caffe-jacinto BatchNorm with its own scale and bias, also
  from caffe-jacinto 0.15's blob order), with BVLC or caffe-jacinto factor semantics.
* :func:`drop_flatten_before_inner_product`: ``Flatten(axis 1)`` feeding only
  ``InnerProduct(axis 1)`` removed (the weights are reordered instead).

Blobs in ``protected`` (outputs, or every reported top for ``forward``) are never hidden.

Example:
    >>> from kerasq.converters.caffe.graph import Graph
    >>> fold_batchnorm(Graph(), protected=set())
    0
"""

from __future__ import annotations

import logging
from typing import List, Optional, Sequence, Set, Tuple

import numpy as np

from kerasq.converters.caffe.graph import Graph, Node
from kerasq.converters.caffe.reader import fit_blob_shape
from kerasq.errors import CaffeFormatError

log = logging.getLogger("kerasq.converters.caffe.fold")


BATCHNORM_SEMANTICS = ("auto", "bvlc", "jacinto")


def _is_jacinto_style(node: Node) -> bool:
    """A BatchNorm written by NVIDIA Caffe / caffe-jacinto: its own scale and bias."""
    p = node.param.batch_norm_param
    return (
        len(node.blobs) == 5
        or p.scale_bias
        or p.HasField("scale_filler")
        or p.HasField("bias_filler")
    )


def _legacy_order(node: Node, mode: str, ambiguous: List[str]) -> bool:
    """True if a 5-blob BatchNorm holds caffe-jacinto 0.15's order (scale, bias, mean, var,
    reserved[1]); caffe-jacinto 0.16 recognises it by a 5th blob of count 1."""
    if len(node.blobs) != 5 or node.blobs[4].size != 1:
        return False
    if node.blobs[2].size != 1:
        return True  # only the 0.15 order fits: blob 2 is per-channel (the mean)
    # one channel: both orders fit. caffe-jacinto's rule (5th blob of count 1) unless bvlc.
    ambiguous.append(node.caffe_name)
    return mode != "bvlc"


def normalize_batchnorm_blobs(nodes: Sequence[Node], mode: str = "auto", source: str = "") -> str:
    """Bring every BatchNorm's blobs to ``[mean, var, factor(, gamma, beta)]`` and apply the
    factor semantics ``mode`` chooses; return the semantics used ("bvlc" or "jacinto").

    * 5 blobs in caffe-jacinto 0.15 / NVIDIA Caffe 0.15 / DIGITS order (scale, bias, mean,
      var, reserved[1]) are reordered, as caffe-jacinto 0.16's ``net.cpp`` does when the 5th
      blob has count 1.
    * NVIDIA / caffe-jacinto BatchNorm with its own scale and bias (``scale_bias: true`` or 5
      blobs) uses the statistics as stored: its factor blob is ignored (set to 1), as
      caffe-jacinto 0.16/0.17 and OpenCV do.
    * The factor blob of a 3-blob BatchNorm: BVLC divides by it (``0 -> 0`` statistics),
      caffe-jacinto 0.16/0.17 ignore it. ``mode="bvlc"`` or ``"jacinto"`` decides; ``"auto"``
      takes caffe-jacinto's rule when the net has a BatchNorm with its own scale and bias
      (a caffe-jacinto / NVIDIA Caffe file), BVLC's otherwise.

    A warning names the layers whose numbers depend on the choice and the semantics used.

    Example:
        >>> normalize_batchnorm_blobs([], "auto")
        'bvlc'
    """
    if mode not in BATCHNORM_SEMANTICS:
        raise CaffeFormatError(
            f"batchnorm={mode!r}: must be one of {', '.join(BATCHNORM_SEMANTICS)}", file=source
        )
    norms = [n for n in nodes if n.type == "BatchNorm" and n.blobs]
    semantics = mode
    if mode == "auto":
        semantics = "jacinto" if any(_is_jacinto_style(n) for n in norms) else "bvlc"
    ambiguous_order: List[str] = []
    legacy: List[str] = []
    factor_dependent: List[str] = []
    for node in norms:
        if _legacy_order(node, mode, ambiguous_order):
            gamma, beta, mean, var, reserved = node.blobs
            node.blobs = [mean, var, reserved, gamma, beta]
            legacy.append(node.caffe_name)
        if len(node.blobs) < 4 or not (
            node.param.batch_norm_param.scale_bias or len(node.blobs) == 5
        ):
            if len(node.blobs) >= 3 and semantics == "jacinto":
                factor = np.asarray(node.blobs[2], np.float32).reshape(-1)
                if factor.size == 1 and factor[0] != 1.0:
                    factor_dependent.append(node.caffe_name)
                    node.blobs = [node.blobs[0], node.blobs[1], np.ones(1, np.float32)]
            elif len(node.blobs) >= 3:
                factor = np.asarray(node.blobs[2], np.float32).reshape(-1)
                if factor.size == 1 and factor[0] != 1.0 and mode == "auto":
                    factor_dependent.append(node.caffe_name)
            continue
        mean, var, gamma, beta = node.blobs[0], node.blobs[1], node.blobs[-2], node.blobs[-1]
        node.blobs = [mean, var, np.ones(1, np.float32), gamma, beta]
    if legacy:
        log.warning(
            "%s: BatchNorm blobs in caffe-jacinto 0.15 order (scale, bias, mean, var, reserved) "
            "recognised by a 5th blob of count 1, as caffe-jacinto 0.16 does: %s",
            source, _names(legacy),
        )
    if ambiguous_order:
        used = "caffe-jacinto 0.15 order" if mode != "bvlc" else "NVIDIA Caffe 0.16 order"
        log.warning(
            "%s: BatchNorm with one channel fits both blob orders; used the %s "
            "(choose with batchnorm='bvlc'|'jacinto', CLI --batchnorm): %s",
            source, used, _names(ambiguous_order),
        )
    if factor_dependent:
        how = (
            "ignored (caffe-jacinto 0.16/0.17 semantics)"
            if semantics == "jacinto"
            else "applied (BVLC semantics: statistics / factor, factor 0 -> 0)"
        )
        chosen = "detected" if mode == "auto" else "chosen"
        log.warning(
            "%s: BatchNorm scale-factor blob is not 1; it is %s, %s (choose with "
            "batchnorm='bvlc'|'jacinto', CLI --batchnorm): %s",
            source, how, chosen, _names(factor_dependent),
        )
    return semantics


def _names(names: List[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


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
        producer.folded += [n for r in chain for n in (r.caffe_name, *r.folded)]
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
    bn.folded += [nxt[0].caffe_name, *nxt[0].folded]
    bn.caffe_tops = [graph.blob_names.get(t, t) for t in bn.tops]
    graph.nodes = [n for n in graph.nodes if n is not nxt[0]]
    log.info("merged %s into %s", nxt[0].caffe_name, bn.caffe_name)
    return 1


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


__all__ = [
    "fold_batchnorm",
    "batchnorm_stats",
    "normalize_batchnorm_blobs",
    "BATCHNORM_SEMANTICS",
    "drop_flatten_before_inner_product",
]
