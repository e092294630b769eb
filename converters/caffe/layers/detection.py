"""Caffe-SSD detection layers: PriorBox and DetectionOutput (weiliu89/caffe semantics).

PriorBox     a constant [1, 2, H*W*num_priors*4] from bottom[0]'s H x W and the image size
             (bottom[1]'s, or img_size / img_h / img_w); see
             :func:`~kerasq.converters.caffe.keras_layers.detection.prior_box_array`.
DetectionOutput  decode + per-class NMS + keep_top_k on [loc, conf, priors] giving
             Caffe's [1, 1, N, 7] detections (image id, label, score, xmin, ymin, xmax, ymax).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from kerasq.converters.caffe.keras_layers import detection as dl
from kerasq.converters.caffe.layers._registry import register
from kerasq.converters.caffe.layout import Blob

from kerasq.errors import CaffeFormatError

if TYPE_CHECKING:  # pragma: no cover
    from kerasq.converters.caffe.graph import Node
    from kerasq.converters.caffe.lower import LoweringContext

log = logging.getLogger("kerasq.converters.caffe.layers.detection")


def _pair(ctx, node, p, one: str, h: str, w: str, what: str):
    """Caffe-SSD's rule: ``one`` sets both; else ``h`` and ``w`` together; else (0, 0)."""
    has_one, has_h, has_w = p.HasField(one), p.HasField(h), p.HasField(w)
    if has_one and (has_h or has_w):
        ctx.error(node, f"give either {one} or {h}/{w}, not both", cls=CaffeFormatError)
    if has_one:
        value = getattr(p, one)
        return value, value
    if has_h != has_w:
        ctx.error(node, f"{h} and {w} must be given together", cls=CaffeFormatError)
    if has_h:
        return getattr(p, h), getattr(p, w)
    del what
    return 0, 0


@register("PriorBox")
def lower_prior_box(ctx: LoweringContext, node: Node, inputs: list[Blob]) -> list[Blob]:
    """PriorBox: the Caffe-SSD prior boxes and variances of bottom[0]'s grid, as a constant."""
    if len(inputs) != 2:
        ctx.error(node, f"PriorBox needs 2 bottoms, got {len(inputs)}", cls=CaffeFormatError)
    feature, image = inputs
    if feature.rank != 4 or image.rank != 4:
        ctx.error(
            node,
            f"PriorBox needs 4-D bottoms, got {list(feature.shape)} and {list(image.shape)}",
            cls=CaffeFormatError,
        )
    p = node.param.prior_box_param
    min_sizes = [float(v) for v in p.min_size]
    max_sizes = [float(v) for v in p.max_size]
    if not min_sizes:
        ctx.error(node, "PriorBox needs at least one min_size", cls=CaffeFormatError)
    if any(v <= 0 for v in min_sizes):
        ctx.error(node, f"min_size must be positive, got {min_sizes}", cls=CaffeFormatError)
    if max_sizes:
        if len(max_sizes) != len(min_sizes):
            ctx.error(
                node,
                f"{len(max_sizes)} max_size values for {len(min_sizes)} min_size values",
                cls=CaffeFormatError,
            )
        if any(mx <= mn for mn, mx in zip(min_sizes, max_sizes)):
            ctx.error(node, "each max_size must exceed its min_size", cls=CaffeFormatError)
    variance = [float(v) for v in p.variance] or [0.1]
    if len(variance) not in (1, 4):
        ctx.error(node, f"variance needs 1 or 4 values, got {len(variance)}", cls=CaffeFormatError)
    if any(v <= 0 for v in variance):
        ctx.error(node, f"variance must be positive, got {variance}", cls=CaffeFormatError)
    img_h, img_w = _pair(ctx, node, p, "img_size", "img_h", "img_w", "image size")
    step_h, step_w = _pair(ctx, node, p, "step", "step_h", "step_w", "step")
    layer_h, layer_w = feature.shape[2], feature.shape[3]
    if not img_h or not img_w:
        img_h, img_w = image.shape[2], image.shape[3]
    if None in (layer_h, layer_w, img_h, img_w):
        ctx.error(node, "PriorBox needs a fixed input size (not dynamic_spatial)")
    layer = dl.CaffePriorBox(
        layer_h=layer_h,
        layer_w=layer_w,
        img_h=img_h,
        img_w=img_w,
        min_sizes=min_sizes,
        max_sizes=max_sizes,
        aspect_ratios=[float(v) for v in p.aspect_ratio],
        flip=p.flip,
        clip=p.clip,
        variance=variance,
        step_h=step_h,
        step_w=step_w,
        offset=p.offset,
        name=ctx.name(node),
    )
    out = layer(feature.tensor)
    return [Blob(tensor=out, shape=tuple(layer._priors.shape), perm=(0, 1, 2))]


_CODE_NAMES = {1: "CORNER", 2: "CENTER_SIZE", 3: "CORNER_SIZE"}


def _count(blob: Blob) -> int:
    total = 1
    for d in blob.shape[1:]:
        if d is None:
            return -1
        total *= d
    return total


@register("DetectionOutput", partial="batch of any size; eta < 1 is not exported to TFLite")
def lower_detection_output(ctx: LoweringContext, node: Node, inputs: list[Blob]) -> list[Blob]:
    """DetectionOutput: decode, per-class NMS, keep_top_k -> [1, 1, N, 7] detections."""
    if len(inputs) != 3:
        ctx.error(
            node,
            f"DetectionOutput needs 3 bottoms (loc, conf, priors), got {len(inputs)}",
            cls=CaffeFormatError,
        )
    p = node.param.detection_output_param
    if p.HasField("save_output_param"):
        log.debug("%s: save_output_param ignored (files are not written)", node.caffe_name)
    if p.visualize or p.save_file:
        log.debug("%s: visualize / save_file ignored", node.caffe_name)
    if not p.HasField("num_classes") or p.num_classes < 1:
        ctx.error(node, "DetectionOutput needs num_classes >= 1", cls=CaffeFormatError)
    nms = p.nms_param
    if nms.nms_threshold < 0:
        ctx.error(node, f"nms_threshold {nms.nms_threshold} is negative", cls=CaffeFormatError)
    if not 0 < nms.eta <= 1:
        ctx.error(node, f"eta {nms.eta} is not in (0, 1]", cls=CaffeFormatError)
    if nms.HasField("top_k") and nms.top_k == 0:
        ctx.error(node, "nms_param.top_k 0 keeps no candidate", cls=CaffeFormatError)
    loc, conf, priors = (b if b.is_caffe_order else ctx.caffe_order(b) for b in inputs)
    if priors.rank < 3 or priors.shape[1] != 2 or priors.shape[2] is None:
        ctx.error(
            node, f"priors bottom must be [1, 2, P*4], got {list(priors.shape)}",
            cls=CaffeFormatError,
        )  # fmt: skip
    prior_len = priors.shape[2] * (_count(priors) // (2 * priors.shape[2]))
    if prior_len % 4:
        ctx.error(node, f"priors length {prior_len} is not a multiple of 4", cls=CaffeFormatError)
    num_priors = prior_len // 4
    num_classes = int(p.num_classes)
    loc_classes = 1 if p.share_location else num_classes
    if not 0 <= p.background_label_id < num_classes and p.background_label_id != -1:
        ctx.error(
            node,
            f"background_label_id {p.background_label_id} outside [0, {num_classes})",
            cls=CaffeFormatError,
        )
    if _count(loc) != num_priors * loc_classes * 4:
        ctx.error(
            node,
            f"loc bottom holds {_count(loc)} values per image, expected "
            f"{num_priors} priors x {loc_classes} x 4",
            cls=CaffeFormatError,
        )
    if _count(conf) != num_priors * num_classes:
        ctx.error(
            node,
            f"conf bottom holds {_count(conf)} values per image, expected "
            f"{num_priors} priors x {num_classes} classes",
            cls=CaffeFormatError,
        )
    layer = dl.CaffeDetectionOutput(
        num_classes=num_classes,
        num_priors=num_priors,
        share_location=p.share_location,
        background_label_id=p.background_label_id,
        confidence_threshold=p.confidence_threshold if p.HasField("confidence_threshold") else None,
        nms_threshold=nms.nms_threshold,
        top_k=nms.top_k if nms.HasField("top_k") else -1,
        keep_top_k=p.keep_top_k,
        code_type=_CODE_NAMES[int(p.code_type)],
        variance_encoded_in_target=p.variance_encoded_in_target,
        eta=nms.eta,
        name=ctx.name(node),
    )
    out = layer([loc.tensor, conf.tensor, priors.tensor])
    return [Blob(tensor=out, shape=(1, 1, None, 7), perm=(0, 1, 2, 3))]
