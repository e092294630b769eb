"""Keras layers for Caffe-SSD's PriorBox and DetectionOutput (weiliu89/caffe semantics).

``CaffePriorBox`` is a constant: the prior boxes depend only on the feature-map and image
sizes, so they are computed once in numpy with Caffe-SSD's formula
(:func:`prior_box_array`) and returned as a ``[1, 2, H*W*num_priors*4]`` tensor (row 0 the
boxes ``xmin, ymin, xmax, ymax`` normalised by the image size, row 1 the variances).

``CaffeDetectionOutput`` decodes the location predictions against the priors, runs
per-class greedy NMS and keeps the ``keep_top_k`` best detections per image, returning
Caffe's ``[1, 1, N, 7]`` rows ``(image id, label, score, xmin, ymin, xmax, ymax)`` (N
varies; with no detection at all, one row of -1 per image holding only its image id).
:func:`padded_detections` is the same computation with fixed-size outputs (boxes,
classes, scores, count), used by the TFLite export.

Both layers are registered under the ``kerasq`` package with a complete ``get_config`` and
``quantization_role = "float"`` (post-processing stays in float in quantized models).

Example:
    >>> pb = prior_box_array(2, 3, 32, 48, [8.0], [16.0], [2.0], flip=True)
    >>> pb.shape   # 2*3 cells, 4 priors (1, sqrt(min*max), 2, 1/2), 4 coordinates
    (1, 2, 96)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from kerasq._compat import keras, tf

_register = keras.utils.register_keras_serializable(package="kerasq")

CODE_TYPES = ("CORNER", "CENTER_SIZE", "CORNER_SIZE")


def expand_aspect_ratios(aspect_ratios: Sequence[float], flip: bool) -> list[float]:
    """Caffe-SSD's list: 1 first, each new ratio (|ar - r| >= 1e-6 to all kept), then 1/ar if flip.

    Example:
        >>> expand_aspect_ratios([2.0, 3.0, 2.0], flip=True)
        [1.0, 2.0, 0.5, 3.0, 0.3333333333333333]
    """
    ratios = [1.0]
    for ar in aspect_ratios:
        ar = float(ar)
        if any(abs(ar - r) < 1e-6 for r in ratios):
            continue
        ratios.append(ar)
        if flip:
            ratios.append(1.0 / ar)
    return ratios


def prior_box_array(
    layer_h: int,
    layer_w: int,
    img_h: float,
    img_w: float,
    min_sizes: Sequence[float],
    max_sizes: Sequence[float] = (),
    aspect_ratios: Sequence[float] = (),
    *,
    flip: bool = True,
    clip: bool = False,
    variance: Sequence[float] = (0.1,),
    step_h: float = 0.0,
    step_w: float = 0.0,
    offset: float = 0.5,
) -> np.ndarray:
    """Caffe-SSD PriorBox output ``[1, 2, layer_h*layer_w*num_priors*4]`` (float32).

    For cell (h, w): centre ``c = ((w + offset)·step_w, (h + offset)·step_h)`` with
    ``step = img / layer`` when not given; per min size s: a box s x s, then (with max size
    m) sqrt(s·m) x sqrt(s·m), then s·sqrt(ar) x s/sqrt(ar) per aspect ratio != 1; corners
    ``(c ∓ size/2) / img``, clipped to [0, 1] if ``clip``; row 1 the 4 (or 1) variances.

    Example:
        >>> prior_box_array(1, 1, 10, 10, [4.0])[0, 0]
        array([0.3, 0.3, 0.7, 0.7], dtype=float32)
    """
    ratios = expand_aspect_ratios(aspect_ratios, flip)
    if not step_h or not step_w:
        step_h, step_w = float(img_h) / layer_h, float(img_w) / layer_w
    # Caffe computes the centre in float and the corners in double
    f32 = np.float32
    hs = (np.arange(layer_h, dtype=f32) + f32(offset)) * f32(step_h)
    ws = (np.arange(layer_w, dtype=f32) + f32(offset)) * f32(step_w)
    sizes: list[tuple[float, float]] = []
    for s, min_size in enumerate(min_sizes):
        sizes.append((float(f32(min_size)), float(f32(min_size))))
        if max_sizes:
            side = float(f32(math.sqrt(float(f32(min_size)) * float(f32(max_sizes[s])))))
            sizes.append((side, side))
        for ar in ratios:
            if abs(ar - 1.0) < 1e-6:
                continue
            sizes.append(
                (
                    float(f32(float(f32(min_size)) * math.sqrt(float(f32(ar))))),
                    float(f32(float(f32(min_size)) / math.sqrt(float(f32(ar))))),
                )
            )
    bw = np.array([w for w, _ in sizes], np.float64)
    bh = np.array([h for _, h in sizes], np.float64)
    cy = hs.astype(np.float64)[:, None, None]
    cx = ws.astype(np.float64)[None, :, None]
    boxes = np.stack(
        np.broadcast_arrays(
            (cx - bw / 2.0) / img_w,
            (cy - bh / 2.0) / img_h,
            (cx + bw / 2.0) / img_w,
            (cy + bh / 2.0) / img_h,
        ),
        axis=-1,
    ).astype(np.float32)
    if clip:
        boxes = np.clip(boxes, 0.0, 1.0)
    flat = boxes.reshape(-1)
    var = np.asarray(variance, np.float32).reshape(-1)
    variances = np.tile(var if var.size == 4 else np.repeat(var[:1], 4), flat.size // 4)
    return np.stack([flat, variances])[None].astype(np.float32)


@_register
class CaffePriorBox(keras.layers.Layer):
    """Caffe-SSD PriorBox: a constant ``[1, 2, K]`` tensor (its input only fixes the graph)."""

    quantization_role = "float"
    _fields = (
        "layer_h", "layer_w", "img_h", "img_w", "min_sizes", "max_sizes", "aspect_ratios",
        "flip", "clip", "variance", "step_h", "step_w", "offset",
    )  # fmt: skip

    def __init__(
        self,
        layer_h: int,
        layer_w: int,
        img_h: float,
        img_w: float,
        min_sizes: Sequence[float],
        max_sizes: Sequence[float] = (),
        aspect_ratios: Sequence[float] = (),
        flip: bool = True,
        clip: bool = False,
        variance: Sequence[float] = (0.1,),
        step_h: float = 0.0,
        step_w: float = 0.0,
        offset: float = 0.5,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        self.layer_h, self.layer_w = int(layer_h), int(layer_w)
        self.img_h, self.img_w = float(img_h), float(img_w)
        self.min_sizes = [float(v) for v in min_sizes]
        self.max_sizes = [float(v) for v in max_sizes]
        self.aspect_ratios = [float(v) for v in aspect_ratios]
        self.flip, self.clip = bool(flip), bool(clip)
        self.variance = [float(v) for v in variance]
        self.step_h, self.step_w, self.offset = float(step_h), float(step_w), float(offset)
        self._priors = prior_box_array(
            self.layer_h, self.layer_w, self.img_h, self.img_w, self.min_sizes,
            self.max_sizes, self.aspect_ratios, flip=self.flip, clip=self.clip,
            variance=self.variance, step_h=self.step_h, step_w=self.step_w, offset=self.offset,
        )  # fmt: skip

    def call(self, x):
        del x  # the priors depend only on the sizes fixed at conversion
        return tf.constant(self._priors)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(self._priors.shape)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({f: getattr(self, f) for f in self._fields})
        return config


# ----------------------------------------------------------------------------------------
# DetectionOutput
# ----------------------------------------------------------------------------------------
def decode_boxes(loc, priors, variances, code_type: str, variance_encoded_in_target: bool):
    """Caffe-SSD DecodeBBox, vectorised: ``loc [..., 4]`` against ``priors [..., 4]``.

    CORNER: ``p + v·l``; CENTER_SIZE: centre ``v0·l0·pw + pcx``, size ``exp(v2·l2)·pw``;
    CORNER_SIZE: ``p + v·l·(pw, ph, pw, ph)`` (v = 1 when the variance is in the target).
    """
    if variance_encoded_in_target:
        variances = tf.ones_like(variances)
    pxmin, pymin, pxmax, pymax = tf.unstack(priors, axis=-1)
    v0, v1, v2, v3 = tf.unstack(variances, axis=-1)
    l0, l1, l2, l3 = tf.unstack(loc, axis=-1)
    if code_type == "CORNER":
        out = [pxmin + v0 * l0, pymin + v1 * l1, pxmax + v2 * l2, pymax + v3 * l3]
    elif code_type == "CENTER_SIZE":
        pw, ph = pxmax - pxmin, pymax - pymin
        pcx, pcy = (pxmin + pxmax) / 2.0, (pymin + pymax) / 2.0
        cx = v0 * l0 * pw + pcx
        cy = v1 * l1 * ph + pcy
        w = tf.exp(v2 * l2) * pw
        h = tf.exp(v3 * l3) * ph
        out = [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0]
    elif code_type == "CORNER_SIZE":
        pw, ph = pxmax - pxmin, pymax - pymin
        out = [
            pxmin + v0 * l0 * pw,
            pymin + v1 * l1 * ph,
            pxmax + v2 * l2 * pw,
            pymax + v3 * l3 * ph,
        ]
    else:
        raise ValueError(f"unknown code_type {code_type!r}; one of {CODE_TYPES}")
    return tf.stack(out, axis=-1)


def _caffe_iou_row(box, boxes):
    """Caffe's JaccardOverlap of ``box`` with each of ``boxes`` (inverted boxes: size 0)."""
    iw = tf.minimum(box[2], boxes[:, 2]) - tf.maximum(box[0], boxes[:, 0])
    ih = tf.minimum(box[3], boxes[:, 3]) - tf.maximum(box[1], boxes[:, 1])

    def size(b):
        valid = tf.logical_and(b[..., 2] >= b[..., 0], b[..., 3] >= b[..., 1])
        return tf.where(valid, (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1]), 0.0)

    inter = iw * ih
    union = size(box) + size(boxes) - inter
    ok = tf.logical_and(iw > 0, ih > 0)
    return tf.where(ok, inter / tf.where(ok, union, 1.0), 0.0)


def _adaptive_nms(boxes, scores, k: int, score_threshold: float, iou_threshold: float, eta: float):
    """Caffe's ApplyNMSFast with eta < 1 on score-sorted candidates (a while loop)."""
    n = tf.shape(scores)[0]

    def body(i, keep, thr):
        iou = _caffe_iou_row(boxes[i], boxes)
        clash = tf.reduce_any(tf.logical_and(keep, iou > thr))
        keep_i = tf.logical_and(scores[i] > score_threshold, tf.logical_not(clash))
        keep = tf.tensor_scatter_nd_update(keep, [[i]], [keep_i])
        shrink = tf.logical_and(keep_i, thr > 0.5)
        return i + 1, keep, tf.where(shrink, thr * eta, thr)

    _, keep, _ = tf.while_loop(
        lambda i, keep, thr: i < n,
        body,
        (tf.constant(0), tf.zeros([n], tf.bool), tf.constant(iou_threshold, tf.float32)),
    )
    count = tf.reduce_sum(tf.cast(keep, tf.int32))
    # kept positions first, in their (score) order; pad with 0
    order = tf.argsort(tf.cast(tf.logical_not(keep), tf.int32), stable=True)
    selected = tf.where(tf.range(n) < count, order, 0)
    pad = k - n
    selected = tf.pad(selected, [[0, pad]])
    return selected, count


def _nms_boxes(boxes):
    """Boxes for TF's NMS: Caffe gives an inverted box overlap 0, so make it empty."""
    inverted = tf.logical_or(boxes[:, 2] < boxes[:, 0], boxes[:, 3] < boxes[:, 1])
    empty = tf.concat([boxes[:, :2], boxes[:, :2]], axis=-1)
    return tf.where(inverted[:, None], empty, boxes)


def padded_detections(
    decoded,
    conf,
    *,
    classes: Sequence[int],
    share_location: bool,
    top_k: int,
    keep_top_k: int,
    score_threshold: float,
    iou_threshold: float,
    eta: float = 1.0,
):
    """Detections of one image, fixed size M: ``(boxes [M,4], labels [M], scores [M], count)``.

    ``decoded [P, Lc, 4]`` (decoded boxes, Lc = 1 when share_location), ``conf [P, C]``.
    Per class: the ``top_k`` best candidates above ``score_threshold`` (ties: lower prior
    index first), greedy NMS (suppressed when IoU > threshold); then the ``keep_top_k``
    best over all classes. Valid rows first, ordered by label, then by descending score.
    """
    num_priors = int(conf.shape[0])
    k = num_priors if top_k < 0 else min(top_k, num_priors)
    all_boxes, all_scores, all_labels, all_valid = [], [], [], []
    for c in classes:
        scores = conf[:, c]
        boxes = decoded[:, 0 if share_location else c, :]
        top_scores, top_index = tf.math.top_k(scores, k=k, sorted=True)
        top_boxes = tf.gather(boxes, top_index)
        if eta < 1.0:
            selected, count = _adaptive_nms(
                top_boxes, top_scores, k, score_threshold, iou_threshold, eta
            )
        else:
            # NMS visits candidates in the top_k order (ties: lower prior first, as Caffe's
            # stable sort) whatever its own sort does with equal scores: it gets the rank
            # k, k-1, ..., 1 as score, and -1 for candidates at or below the threshold
            rank = tf.cast(tf.range(k, 0, -1), tf.float32)
            rank = tf.where(top_scores > score_threshold, rank, -1.0)
            selected, _, count = tf.raw_ops.NonMaxSuppressionV5(
                boxes=_nms_boxes(top_boxes),
                scores=rank,
                max_output_size=k,
                iou_threshold=iou_threshold,
                score_threshold=0.0,
                soft_nms_sigma=0.0,
                pad_to_max_output_size=True,
            )
        all_boxes.append(tf.gather(top_boxes, selected))
        all_scores.append(tf.gather(top_scores, selected))
        all_labels.append(tf.fill([k], c))
        all_valid.append(tf.range(k) < count)
    boxes = tf.concat(all_boxes, 0)
    scores = tf.concat(all_scores, 0)
    labels = tf.concat(all_labels, 0)
    valid = tf.concat(all_valid, 0)
    total = k * len(classes)
    position = tf.range(total)
    if 0 <= keep_top_k < total:
        ranked = tf.where(valid, scores, -np.inf)
        best_scores, best = tf.math.top_k(ranked, k=keep_top_k, sorted=True)
        chosen = tf.where(best_scores > -np.inf, best, total)  # invalid ones sort last
    else:
        chosen = tf.where(valid, position, total)
    chosen = tf.sort(chosen)  # label order, then NMS (descending score) order
    ok = chosen < total
    index = tf.where(ok, chosen, 0)
    count = tf.reduce_sum(tf.cast(ok, tf.int32))
    out_boxes = tf.where(ok[:, None], tf.gather(boxes, index), 0.0)
    out_scores = tf.where(ok, tf.gather(scores, index), 0.0)
    out_labels = tf.where(ok, tf.gather(labels, index), 0)
    return out_boxes, out_labels, out_scores, count


@_register
class CaffeDetectionOutput(keras.layers.Layer):
    """Caffe-SSD DetectionOutput on ``[loc, conf, priors]`` (Caffe-order tensors).

    ``loc [N, P*Lc*4]``, ``conf [N, P*C]``, ``priors [1, 2, P*4]`` -> ``[1, 1, D, 7]``
    rows ``(image, label, score, xmin, ymin, xmax, ymax)`` ordered by image, label and
    descending score. ``fixed_outputs()`` gives the padded per-image form.
    """

    quantization_role = "float"
    caffe_order_output = True  # the model output stays Caffe's [1, 1, N, 7] table
    _fields = (
        "num_classes", "num_priors", "share_location", "background_label_id",
        "confidence_threshold", "nms_threshold", "top_k", "keep_top_k", "code_type",
        "variance_encoded_in_target", "eta",
    )  # fmt: skip

    def __init__(
        self,
        num_classes: int,
        num_priors: int,
        share_location: bool = True,
        background_label_id: int = 0,
        confidence_threshold: float | None = None,
        nms_threshold: float = 0.3,
        top_k: int = -1,
        keep_top_k: int = -1,
        code_type: str = "CORNER",
        variance_encoded_in_target: bool = False,
        eta: float = 1.0,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        if code_type not in CODE_TYPES:
            raise ValueError(f"unknown code_type {code_type!r}; one of {CODE_TYPES}")
        self.num_classes, self.num_priors = int(num_classes), int(num_priors)
        self.share_location = bool(share_location)
        self.background_label_id = int(background_label_id)
        self.confidence_threshold = (
            None if confidence_threshold is None else float(confidence_threshold)
        )
        self.nms_threshold, self.top_k = float(nms_threshold), int(top_k)
        self.keep_top_k, self.code_type = int(keep_top_k), str(code_type)
        self.variance_encoded_in_target = bool(variance_encoded_in_target)
        self.eta = float(eta)

    @property
    def num_loc_classes(self) -> int:
        """1 when locations are shared by all classes, else num_classes."""
        return 1 if self.share_location else self.num_classes

    @property
    def classes(self) -> list[int]:
        """Labels that get detections (all but the background label)."""
        return [c for c in range(self.num_classes) if c != self.background_label_id]

    @property
    def max_detections(self) -> int:
        """Rows per image of the padded outputs."""
        k = self.num_priors if self.top_k < 0 else min(self.top_k, self.num_priors)
        total = k * len(self.classes)
        return self.keep_top_k if 0 <= self.keep_top_k < total else total

    def decode(self, loc, priors):
        """Decoded boxes ``[N, P, Lc, 4]`` from ``loc`` and the ``[1, 2, P*4]`` priors."""
        p = self.num_priors
        loc = tf.reshape(loc, [-1, p, self.num_loc_classes, 4])
        prior_boxes = tf.reshape(priors[0, 0], [1, p, 1, 4])
        prior_vars = tf.reshape(priors[0, 1], [1, p, 1, 4])
        return decode_boxes(
            loc, prior_boxes, prior_vars, self.code_type, self.variance_encoded_in_target
        )

    def fixed_outputs(self, inputs):
        """``boxes [N, M, 4], classes [N, M] (int32), scores [N, M], count [N]`` (M fixed)."""
        loc, conf, priors = inputs
        decoded = self.decode(loc, priors)
        conf = tf.reshape(conf, [-1, self.num_priors, self.num_classes])
        threshold = (
            float(np.finfo(np.float32).min)
            if self.confidence_threshold is None
            else self.confidence_threshold
        )
        options = {
            "classes": self.classes,
            "share_location": self.share_location,
            "top_k": self.top_k,
            "keep_top_k": self.keep_top_k,
            "score_threshold": threshold,
            "iou_threshold": self.nms_threshold,
            "eta": self.eta,
        }
        m = self.max_detections

        def one(args):
            return padded_detections(args[0], args[1], **options)

        return tf.map_fn(
            one,
            (decoded, conf),
            fn_output_signature=(
                tf.TensorSpec([m, 4], tf.float32),
                tf.TensorSpec([m], tf.int32),
                tf.TensorSpec([m], tf.float32),
                tf.TensorSpec([], tf.int32),
            ),
        )

    def call(self, inputs):
        boxes, labels, scores, count = self.fixed_outputs(inputs)
        num = tf.shape(boxes)[0]
        m = tf.shape(boxes)[1]
        image = tf.broadcast_to(tf.range(num)[:, None], [num, m])
        rows = tf.concat(
            [
                tf.cast(image, tf.float32)[..., None],
                tf.cast(labels, tf.float32)[..., None],
                scores[..., None],
                boxes,
            ],
            axis=-1,
        )
        valid = tf.range(m)[None, :] < count[:, None]
        kept = tf.boolean_mask(rows, valid)
        empty = tf.concat(
            [tf.cast(tf.range(num), tf.float32)[:, None], -tf.ones([num, 6], tf.float32)], -1
        )
        out = tf.cond(tf.shape(kept)[0] > 0, lambda: kept, lambda: empty)
        return tf.reshape(out, [1, 1, -1, 7])

    def compute_output_shape(self, input_shape):
        return tf.TensorShape([1, 1, None, 7])

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({f: getattr(self, f) for f in self._fields})
        return config


__all__ = [
    "CODE_TYPES",
    "CaffeDetectionOutput",
    "CaffePriorBox",
    "decode_boxes",
    "expand_aspect_ratios",
    "padded_detections",
    "prior_box_array",
]
