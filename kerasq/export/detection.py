"""SSD post-processing in the TFLite file: decode + per-class NMS + keep_top_k, in float.

A model ending in a Caffe-SSD ``DetectionOutput`` layer (any layer with
``fixed_outputs(inputs)`` and ``max_detections``, e.g.
``kerasq.converters.caffe.keras_layers.detection.CaffeDetectionOutput``) gets, in its deploy
graph, four fixed-size outputs an app can read instead of Caffe's variable-length table:

=====================  ==================  =============================================
signature output       shape, dtype        meaning
=====================  ==================  =============================================
``detection_boxes``    [N, M, 4] float32   xmin, ymin, xmax, ymax (normalised to [0, 1])
``detection_classes``  [N, M] int32        Caffe label (background never appears)
``detection_scores``   [N, M] float32      class confidence
``num_detections``     [N] int32           valid rows; rows >= count are zero
=====================  ==================  =============================================

M = keep_top_k (or top_k x classes without keep_top_k). Valid rows are ordered by label,
then by descending score (Caffe's row order). The ops are TFLite builtins (TOPK_V2,
NON_MAX_SUPPRESSION_V5, GATHER, WHILE over the batch); they stay float in int8 files, after
a DEQUANTIZE of the int8 heads. Verification compares the detections of the file and of
the Keras model as sets (:func:`verify_detections`).

Example:
    >>> deploy = with_postprocess(plan.model)                     # doctest: +SKIP
    >>> report = verify_detections(content, qmodel, x); report.ok  # doctest: +SKIP
    True
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np

from kerasq._compat import keras, tf
from kerasq.errors import ExportError
from kerasq.export.graph import OUTPUT_SUFFIX
from kerasq.export.tensor_io import to_tensor

log = logging.getLogger("kerasq.export.detection")

POSTPROCESS_LAYER = "kerasq_detection_postprocess"
OUTPUT_NAMES = ("detection_boxes", "detection_classes", "detection_scores", "num_detections")
# the loc and conf heads as the file computes them (Caffe order), for verification
HEAD_NAMES = ("detection_head_loc", "detection_head_conf")


def detection_layer(model: Any) -> Any | None:
    """The SSD DetectionOutput layer producing one of ``model``'s outputs, or None."""
    for tensor in model.outputs:
        layer = _unwrapped(_output_producer(tensor))
        if callable(getattr(layer, "fixed_outputs", None)) and hasattr(layer, "max_detections"):
            return layer
    return None


def _output_producer(tensor: Any) -> Any:
    """The layer computing a model output, looking through the identity layer that
    :func:`kerasq.export.graph.build_deploy_model` adds to name each output."""
    layer = tensor._keras_history.layer
    if layer.name.endswith(OUTPUT_SUFFIX):
        inbound = layer.inbound_nodes[0].inbound_layers
        layer = inbound[0] if isinstance(inbound, (list, tuple)) else inbound
    return layer


def _unwrapped(layer: Any) -> Any:
    """The layer inside a tfmot QuantizeWrapper (float role: the wrapper adds no quantizer)."""
    inner = getattr(layer, "layer", None)
    return (
        inner if inner is not None and type(layer).__name__.startswith("QuantizeWrapper") else layer
    )


def _owner(model: Any, layer: Any) -> Any:
    """The model layer holding ``layer`` (itself or its QuantizeWrapper)."""
    for tensor in model.outputs:
        owner = _output_producer(tensor)
        if _unwrapped(owner) is layer:
            return owner
    return layer


class DetectionPostprocess(keras.layers.Layer):
    """Fixed-size detections of a DetectionOutput layer (deploy graphs only, not saved)."""

    def __init__(self, detection: Any, **kwargs: Any) -> None:
        kwargs.setdefault("name", POSTPROCESS_LAYER)
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        self.detection = detection

    def call(self, inputs):
        return self.detection.fixed_outputs(inputs)


class _Named(keras.layers.Layer):
    """Identity: gives a model output (and the TFLite signature output) its name."""

    def call(self, x):
        return tf.identity(x)


def with_postprocess(model: Any) -> Any:
    """``model`` with its DetectionOutput output replaced by the four named fixed outputs.

    Other outputs are kept (named after their layers). Models without a DetectionOutput
    layer are returned unchanged. Raises :class:`ExportError` for what TFLite cannot run
    (eta < 1: the adaptive NMS threshold has no builtin).
    """
    layer = detection_layer(model)
    if layer is None:
        return model
    if layer.eta < 1.0:
        raise ExportError(
            "DetectionOutput with nms eta < 1 (adaptive NMS) has no TFLite builtin; "
            "export the heads with outputs=... instead",
            layer=layer.name,
        )
    holder = _owner(model, layer)
    inputs = holder.input if isinstance(holder.input, (list, tuple)) else [holder.input]
    post = DetectionPostprocess(layer)(list(inputs))
    outputs: dict[str, Any] = {}
    for tensor in model.outputs:
        owner = _output_producer(tensor)
        if owner is holder:
            for name, value in zip(OUTPUT_NAMES, post):
                outputs[name] = _Named(name=name)(value)
            for name, value in zip(HEAD_NAMES, inputs[:2]):
                outputs[name] = _Named(name=name)(value)
        else:
            outputs[owner.name] = tensor
    return keras.Model(model.inputs, outputs, name=model.name)


def is_postprocess_op(output_names: list[str], layer_names: tuple = ()) -> bool:
    """True if a TFLite operator (given its output tensor names) is post-processing: named
    under the post-processing layer or under ``layer_names`` (the DetectionOutput layer,
    whose decoding of the float priors the converter names after it)."""
    markers = [f"/{name}/" for name in (POSTPROCESS_LAYER, *layer_names)]
    named = OUTPUT_NAMES + HEAD_NAMES
    return any(any(m in name.split(";")[0] for m in markers) or name in named
               for name in output_names)


def run_tflite(content: bytes, data: np.ndarray) -> dict[str, np.ndarray]:
    """Run the file's default signature on ``data`` (NHWC float) one image at a time."""
    from ai_edge_litert.interpreter import Interpreter

    from kerasq._compat import quiet_native_stderr

    with quiet_native_stderr():
        interpreter = Interpreter(model_content=content)
    runner = interpreter.get_signature_runner()
    (input_name,) = runner.get_input_details().keys()
    detail = runner.get_input_details()[input_name]
    results: dict[str, list[np.ndarray]] = {}
    for image in np.asarray(data, np.float32):
        out = runner(**{input_name: to_tensor(image[None], detail)})
        for name, value in out.items():
            results.setdefault(name, []).append(np.asarray(value))
    return {k: np.concatenate(v) for k, v in results.items()}


def keras_detections(model: Any, data: np.ndarray) -> dict[str, np.ndarray]:
    """The four fixed outputs of the Keras model (same computation as in the file)."""
    fixed = with_postprocess(model)
    out = fixed(np.asarray(data, np.float32), training=False)
    return {k: np.asarray(out[k]) for k in OUTPUT_NAMES}


@dataclasses.dataclass
class DetectionReport:
    """Detections of the file against the Keras model, compared as sets per image."""

    images: int
    detections: int  # in the Keras model
    unmatched: int  # rows without a partner (either side), ties excepted
    tie_swaps: int  # pairs exchanged between rows of equal score (see compare_detections)
    count_mismatches: int  # images whose detection count differs
    max_score_error: float
    max_box_error: float
    head_error: float | None = None  # max |file - Keras| of the loc / conf heads
    head_tolerance: float | None = None
    postprocess_unmatched: int | None = None  # file vs Keras decode+NMS on the file's heads

    @property
    def ok(self) -> bool:
        """Same detections (labels equal, scores and boxes within tolerance) in every image;
        or, when float noise in near-tied scores changed an NMS outcome, heads within
        tolerance and the file's post-processing equal to Keras' on those same heads."""
        if self.unmatched == 0 and self.count_mismatches == 0:
            return True
        return (
            self.postprocess_unmatched == 0
            and self.head_error is not None
            and self.head_tolerance is not None
            and self.head_error <= self.head_tolerance
        )

    def describe(self) -> str:
        return (
            f"{self.images} images, {self.detections} detections, {self.unmatched} unmatched, "
            f"{self.tie_swaps} tie swaps, "
            f"{self.count_mismatches} count mismatches, max |score err| "
            f"{self.max_score_error:.3g}, max |box err| {self.max_box_error:.3g}"
            + (
                ""
                if self.head_error is None
                else f"; heads max |err| {self.head_error:.3g} (tolerance "
                f"{self.head_tolerance:.3g}), post-processing on the file's heads: "
                f"{self.postprocess_unmatched} unmatched"
            )
        )


def _rows(out: dict[str, np.ndarray], image: int) -> np.ndarray:
    n = int(out["num_detections"][image])
    return np.concatenate(
        [
            out["detection_classes"][image, :n, None].astype(np.float64),
            out["detection_scores"][image, :n, None].astype(np.float64),
            out["detection_boxes"][image, :n].astype(np.float64),
        ],
        axis=1,
    )


def compare_detections(
    got: dict[str, np.ndarray],
    want: dict[str, np.ndarray],
    *,
    rel: float = 1e-4,
    abs_tol: float = 1e-5,
    score_tol: float | None = None,
) -> DetectionReport:
    """Match the fixed outputs of two runs as sets per image.

    Rows pair when the class is equal, |score diff| <= ``score_tol`` (default
    ``(abs_tol + rel)``) and every box coordinate within ``(abs_tol + rel)·max(1, max|box|)``.
    Tie rule: candidates of equal score may be taken in either order (Caffe sorts the
    keep_top_k list with an unstable sort; TFLite's NMS and the quantized scores of int8
    files make exact ties common), so a row left over on each side forms a *tie swap* when
    both have the same score and the same class, or both sit at the image's keep_top_k
    cut-off score (the output is full). Everything else counts as unmatched.
    """
    images = len(want["num_detections"])
    unmatched = mismatches = total = swaps = 0
    max_score = max_box = 0.0
    for i in range(images):
        a, b = _rows(got, i), _rows(want, i)
        total += len(b)
        if len(a) != len(b):
            mismatches += 1
        s_tol = score_tol if score_tol is not None else abs_tol + rel
        b_tol = (abs_tol + rel) * max(1.0, float(np.abs(b[:, 2:]).max(initial=0.0)))
        used = np.zeros(len(b), bool)
        lost = []
        for row in a:
            if not len(b):
                lost.append(row)
                continue
            box_err = np.abs(b[:, 2:] - row[2:]).max(axis=1)
            score_err = np.abs(b[:, 1] - row[1])
            ok = (~used) & (b[:, 0] == row[0]) & (score_err <= s_tol) & (box_err <= b_tol)
            if ok.any():
                j = np.flatnonzero(ok)[np.argmin(box_err[ok])]
                used[j] = True
                max_score = max(max_score, float(score_err[j]))
                max_box = max(max_box, float(box_err[j]))
            else:
                lost.append(row)
        full = len(b) == want["detection_scores"].shape[1]
        cut = float(b[:, 1].min()) if len(b) else 0.0
        left = [row for row in b[~used]]
        for row in lost:
            partner = next(
                (
                    k
                    for k, other in enumerate(left)
                    if abs(other[1] - row[1]) <= s_tol
                    and (other[0] == row[0] or (full and abs(row[1] - cut) <= s_tol))
                ),
                None,
            )
            if partner is None:
                unmatched += 1
            else:
                swaps += 1
                left.pop(partner)
        unmatched += len(left)
    return DetectionReport(images, total, unmatched, swaps, mismatches, max_score, max_box)


def verify_detections(
    content: bytes, keras_model: Any, data: np.ndarray, **tolerances: Any
) -> DetectionReport:
    """Run the file and the Keras model on ``data``; compare their detections as sets.

    Example:
        >>> verify_detections(content, qmodel, x).ok   # doctest: +SKIP
        True
    """
    got = run_tflite(content, data)
    missing = [n for n in OUTPUT_NAMES if n not in got]
    if missing:
        raise ExportError(f"the TFLite file has no output(s) {missing}")
    want = keras_detections(keras_model, data)
    report = compare_detections(got, want, **tolerances)
    if all(name in got for name in HEAD_NAMES):
        layer = detection_layer(keras_model)
        holder = _owner(keras_model, layer)
        inputs = holder.input if isinstance(holder.input, (list, tuple)) else [holder.input]
        heads = keras.Model(keras_model.inputs, list(inputs))(
            np.asarray(data, np.float32), training=False
        )
        keras_heads = [np.asarray(h) for h in heads]
        errors, tolerance = [], 0.0
        for name, ref in zip(HEAD_NAMES, keras_heads[:2]):
            mine = got[name].reshape(ref.shape)
            errors.append(float(np.abs(mine.astype(np.float64) - ref).max()))
            tolerance = max(tolerance, 1.1e-4 * max(1.0, float(np.abs(ref).max())))
        own = layer.fixed_outputs([got[HEAD_NAMES[0]], got[HEAD_NAMES[1]], keras_heads[2][:1]])
        own = {k: np.asarray(v) for k, v in zip(OUTPUT_NAMES, own)}
        own_report = compare_detections(got, own, **tolerances)
        report = dataclasses.replace(
            report,
            head_error=max(errors),
            head_tolerance=tolerance,
            postprocess_unmatched=own_report.unmatched + own_report.count_mismatches,
        )
    log.info("detection verification: %s", report.describe())
    return report


def head_outputs(model: Any) -> tuple[str, ...]:
    """Names of the layers feeding the DetectionOutput layer (loc, conf, priors)."""
    layer = detection_layer(model)
    if layer is None:
        return ()
    layer = _owner(model, layer)
    inputs = layer.input if isinstance(layer.input, (list, tuple)) else [layer.input]
    return tuple(t._keras_history.layer.name for t in inputs)


__all__ = [
    "OUTPUT_NAMES",
    "DetectionPostprocess",
    "DetectionReport",
    "compare_detections",
    "detection_layer",
    "head_outputs",
    "is_postprocess_op",
    "keras_detections",
    "run_tflite",
    "verify_detections",
    "with_postprocess",
]
