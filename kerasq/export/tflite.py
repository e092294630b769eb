"""Export a kerasq-quantized Keras model to TFLite, check the file, and verify it.

Targets:

* ``int8`` — full-integer model: weights int8 per channel with scale 2^-fl (zero point 0),
  activations int8 with scale 2^-fl (zero point 0 when signed, -128 when unsigned),
  biases int32; float I/O with one QUANTIZE/DEQUANTIZE at the ends, or int8 I/O with
  ``int_io=True``. No float operator is left between quantized ones (checked).
* ``int16x8`` — int16 activations, int8 weights: TFLite's own 16x8 post-training mode on
  the already quantized weights, calibrated on ``representative_data`` (the converter has
  no 16-bit fake-quant path, so these scales are TFLite's, not kerasq's powers of two;
  the verification shows how close the file stays).
* ``float`` — float32 file whose weights are stored already on their quantized grid
  (any bit width, minifloat, power of two) and whose activations are rounded to their DFP
  grid with exact float builtins, so the file computes the Keras fake-quant numbers.
* ``float16`` — as ``float`` with weights stored in float16 (refused if a weight is not
  exactly representable in float16).

A config the target cannot hold (e.g. 12-bit weights to int8) raises
:class:`~kerasq.errors.ExportError` naming the layer and a target that can.

Example:
    >>> import kerasq
    >>> blob = kerasq.export.to_tflite(qmodel, "m.tflite", verify_data=x)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import warnings
from typing import Any, Iterable, List, Optional, Union

import numpy as np

from kerasq._compat import tf
from kerasq._io import write_bytes_atomic
from kerasq.errors import ExportError, VerificationError
from kerasq.export import detection
from kerasq.export.graph import FLOAT_ISLAND, OUTPUT_SUFFIX, DeployPlan, build_deploy_model
from kerasq.export.verify import (
    VerificationReport,
    op_table,
    quiet_native_stderr,
    tensor_table,
    verify_tflite,
)

log = logging.getLogger("kerasq.export.tflite")

from kerasq.numerics.grid import EXPORT_TARGETS as TARGETS  # noqa: E402
_MODE = {"int8": "fakequant8", "int16x8": "plain16", "float16": "exact", "float": "exact"}
_BOUNDARY_OPS = {"QUANTIZE", "DEQUANTIZE"}

PathLike = Union[str, "os.PathLike[str]"]


@dataclasses.dataclass
class ExportResult:
    """The exported file, how it was built, and its verification (if data was given)."""

    content: bytes
    target: str
    plan: DeployPlan
    report: Optional[VerificationReport]
    # preprocessing="outside": what the device computes before the file, and the sidecar
    # files written next to it
    preprocessing: Optional[Any] = None
    sidecars: List[str] = dataclasses.field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.content)


def _representative(data: Any, limit: int = 200) -> Iterable[List[np.ndarray]]:
    arr = np.asarray(data, np.float32)

    def gen() -> Iterable[List[np.ndarray]]:
        for i in range(min(len(arr), limit)):
            yield [arr[i : i + 1]]

    return gen


def _check_fp16(plan: DeployPlan) -> None:
    """Kernels must be exact in float16 (else ExportError); inexact biases are only logged
    (float16 files store biases in float16 too: the verification measures the effect)."""
    for layer in plan.model.layers:
        for name in ("kernel_value", "bias_value"):
            value = getattr(layer, name, None)
            if value is None:
                continue
            as16 = value.astype(np.float16).astype(np.float32)
            if np.array_equal(as16, value):
                continue
            if name == "bias_value":
                log.warning(
                    "%s: biases are rounded to float16 (max change %.3g)",
                    layer.name,
                    float(np.abs(as16 - value).max()),
                )
                continue
            raise ExportError(
                "weights are not exactly representable in float16 (bit width "
                "or range beyond float16's 11-bit significand / exponent "
                "range); use target 'float'",
                layer=layer.name,
            )


def _convert(plan: DeployPlan, target: str, representative_data: Any, int_io: bool) -> bytes:
    converter = tf.lite.TFLiteConverter.from_keras_model(plan.model)
    if target in ("int8", "int16x8"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if target == "int8":
            # the converter insists on a representative dataset for an INT8-only op set;
            # without one the fake-quant ranges alone drive it, and check_integer_file
            # then proves that no float operator was left
            if representative_data is not None and not plan.float_islands:
                converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            io_type = tf.int8
        else:
            converter.target_spec.supported_ops = [
                tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
            ]
            io_type = tf.int16
        if representative_data is not None and not (target == "int8" and plan.float_islands):
            # (a float island must stay float: the converter would calibrate it to int8)
            converter.representative_dataset = _representative(representative_data)
        if int_io:
            converter.inference_input_type = io_type
            converter.inference_output_type = io_type
    elif target == "float16":
        _check_fp16(plan)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    try:
        with warnings.catch_warnings(), quiet_native_stderr():
            # the input's statistics come from kerasq's own input quantizer
            warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
            return converter.convert()
    except Exception as err:  # the converter raises many types; report one line
        first = str(err).strip().splitlines()
        detail = next((line for line in first if "error:" in line), first[0] if first else "")
        hint = (
            ""
            if representative_data is not None or target in ("float", "float16")
            else " (tensors without a kerasq quantizer need representative_data)"
        )
        raise ExportError(f"TFLite conversion to {target} failed: {detail.strip()[:300]}{hint}")


def name_output_tensors(content: bytes) -> bytes:
    """The file with each output (signature key and tensor) named after the Keras model's
    output (a Caffe top for converted nets) instead of ``StatefulPartitionedCall:k``."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    if len(model.signatureDefs or []) != 1:
        return content
    tensors = model.subgraphs[0].tensors
    suffix = OUTPUT_SUFFIX.encode()
    for output in model.signatureDefs[0].outputs:
        name = output.name.encode() if isinstance(output.name, str) else output.name
        if name.endswith(suffix):
            name = name[: -len(suffix)]
        output.name = name
        tensors[output.tensorIndex].name = name
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _pow2_exponent(scale: float) -> Optional[int]:
    mant, exp = math.frexp(scale)
    return exp - 1 if mant == 0.5 else None


def check_integer_file(content: bytes, plan: DeployPlan, target: str) -> List[str]:
    """Problems of an integer file: float ops inside, scales not the chosen powers of two.

    Returns a list of one-line problem descriptions (empty when the file is as intended).
    """
    problems = []
    int_type = np.dtype(np.int8 if target == "int8" else np.int16)
    names = {t["index"]: t["name"] for t in tensor_table(content)}
    det_names = tuple(layer.detection.name for layer in plan.model.layers
                      if isinstance(layer, detection.DetectionPostprocess))
    for op in op_table(content):
        if op["op"] in _BOUNDARY_OPS:
            continue
        if detection.is_postprocess_op([names.get(i, "") for i in op["output_indices"]],
                                       det_names):
            continue  # SSD decode + NMS run in float by design
        dtypes = [d for d in op["inputs"] + op["outputs"] if d is not None]
        if any(FLOAT_ISLAND in name for name in op.get("output_names", [])):
            continue  # a float island kept on purpose (e.g. Softmax), see build_deploy_model
        if any(d == np.float32 for d in dtypes):
            where = ", ".join(op.get("output_names", [])) or "?"
            problems.append(f"float operator {op['op']} (output {where}) left in the "
                            "integer graph")
    tensors = tensor_table(content)
    for layer_name, spec in plan.activation_layers.items():
        hits = [
            t
            for t in tensors
            if t["dtype"] == int_type
            and len(t["scales"]) == 1
            and t["name"].split(";")[0].split("/")[-2:-1] == [layer_name]
        ]
        for t in hits:
            exp = _pow2_exponent(float(t["scales"][0]))
            if exp != -int(spec.frac_bits):
                problems.append(
                    f"{layer_name}: scale {t['scales'][0]!r} is not 2^-{spec.frac_bits}"
                )
    return problems


def _deploy_plan(qmodel: Any, target: str, preprocessing: str = "inside") -> DeployPlan:
    """The deploy graph of ``qmodel`` for ``target``; the caller's model is left unchanged.

    For int8 the grids are aligned as TFLite int8 needs them (one scale per Add/Concatenate
    group, biases on the int32 accumulator grid, :func:`kerasq.schemes.align_for_int8`) on
    a copy of the quantizer state, which is restored afterwards. ``kerasq.calibrate`` and
    ``SharedGridCallback`` align the model itself, so for their models this changes nothing;
    otherwise a warning says that the file computes the aligned numbers.
    """
    if target != "int8":
        return build_deploy_model(qmodel, _MODE[target], preprocessing)
    from kerasq.schemes.shared_grids import align_for_int8

    variables = list(qmodel.variables)
    before = [v.numpy() for v in variables]
    try:
        aligned = align_for_int8(qmodel)
        changed = [v.name for v, old in zip(variables, before)
                   if not np.array_equal(v.numpy(), old)]
        if changed:
            log.warning(
                "the model was not aligned for int8 (%d quantizer values differ, e.g. %s): "
                "the file computes the aligned numbers; calibrate with kerasq.calibrate or "
                "train with kerasq.schemes.SharedGridCallback so the saved model does too",
                len(changed), changed[0])
        for names in aligned["groups"]:
            log.debug("int8 export: one grid for %s", ", ".join(names))
        return build_deploy_model(qmodel, _MODE[target], preprocessing)
    finally:
        for variable, old in zip(variables, before):
            variable.assign(old)


def uncalibrated_quantizers(qmodel: Any) -> List[str]:
    """``layer/role`` of every activation / input / output quantizer that holds a stored
    range counter which was never updated (no calibration, no training step).

    Example:
        >>> uncalibrated_quantizers(kerasq.quantize_model(model))[:1]  # doctest: +SKIP
        ['data_quantize/input']
    """
    from kerasq.schemes.slots import iter_slots

    found = []
    for slot in iter_slots(qmodel):
        if slot.role not in ("input", "pre", "post", "output"):
            continue
        _, qvars = slot.base()
        count = qvars.get("count") if isinstance(qvars, dict) else None
        if count is not None and int(np.asarray(getattr(count, "numpy", lambda: count)())) == 0:
            found.append(f"{slot.layer.name}/{slot.role}")
    return found


# reasons of ExportError that say the quantization config has no form in the target's types
_CONFIG_LIMITS = ("not a power of two", "does not map 0 to 0", "do not fit", "bits (code",
                  "has no TFLite integer type", "only fixed-point and minifloat",
                  "stores 8-bit integer weights")


def _with_way_out(err: ExportError, qmodel: Any, target: str) -> ExportError:
    """``err`` with the way out appended: how to calibrate an uncalibrated model, or, for a
    config the target cannot hold, ``kerasq quantize --int8`` and a target that works."""
    if target not in ("int8", "int16x8"):
        return err
    missing = uncalibrated_quantizers(qmodel)
    if missing:
        return ExportError(
            f"the model is not calibrated ({len(missing)} activation quantizers never saw "
            f"data, e.g. {missing[0]}): calibrate it with `kerasq quantize MODEL.h5 "
            "--calibration x.npy -o q.h5` (or kerasq.calibrate(qmodel, x)) and export that",
            file=err.file,
        )
    if ("input preprocessing" not in err.reason  # it names its own ways out
            and any(text in err.reason for text in _CONFIG_LIMITS)):
        err.reason = (
            f"{err.reason}; TFLite {target} cannot hold this quantization config: make it "
            "int8-deployable with `kerasq quantize MODEL.h5 --config CONFIG --int8 "
            "--calibration x.npy -o q.h5` (power-of-two symmetric ranges, at most 8 bits), "
            "or export this model with --target float (float16 for half the size)"
        )
        err.args = (str(err),)
    return err


def _divergence(content: bytes, qmodel: Any, plan: DeployPlan, data: Any,
                path: Optional[PathLike], report: VerificationReport) -> str:
    """"; first divergence at ..." for the error, and ``<path>.divergence.json`` with the
    per-layer rows (:mod:`kerasq.export.diagnose`) when ``path`` is given."""
    from kerasq.export.diagnose import describe_divergence, layer_report, write_report

    try:
        rows = layer_report(content, qmodel, plan, np.asarray(data, np.float32)[:32])
    except Exception as err:  # the diagnosis must never hide the verification error
        log.warning("per-layer comparison failed: %s", err)
        return ""
    text = f"; {describe_divergence(rows)}"
    if path is not None:
        json_path = f"{os.fspath(path)}.divergence.json"
        summary = {"file": os.fspath(path), "verification": report.describe()}
        write_report(json_path, rows, summary)
        text += f" (per-layer report: {json_path})"
    return text


def export_tflite(
    qmodel: Any,
    path: Optional[PathLike] = None,
    *,
    target: str = "int8",
    representative_data: Any = None,
    int_io: bool = False,
    verify_data: Any = None,
    verify: bool = False,
    max_error_steps: float = 1.0,
    min_top1: float = 0.995,
    kernels: str = "default",
    preprocessing: str = "inside",
) -> ExportResult:
    """Like :func:`to_tflite`, returning an :class:`ExportResult` (file, plan, report).

    ``preprocessing``: "inside" (default: a converted net's input preprocessing is an
    exact integer step of the file, or an ExportError says why it cannot be) or "outside"
    (the file takes the preprocessed tensor; :mod:`kerasq.export.preprocessing` writes the
    constants to ``<path>.preprocessing.json``; ``representative_data`` and
    ``verify_data`` stay raw inputs, preprocessed in numpy for the file)."""
    from kerasq._compat import is_keras3_model
    from kerasq.data import (check_array, check_bool, check_data_finite, check_keras_model,
                             check_model_finite, check_output_path)

    if is_keras3_model(qmodel):  # its tf_keras twin, holding the same state, is exported
        from kerasq.keras3.api import export_twin

        qmodel = export_twin(qmodel)

    check_keras_model(qmodel, "qmodel")
    check_output_path(path, "path", ["tflite"])
    check_bool(int_io, "int_io")
    check_bool(verify, "verify")
    check_array(verify_data, "verify_data", model=qmodel, optional=True)
    check_array(representative_data, "representative_data", model=qmodel, optional=True)
    check_model_finite(qmodel)  # the TFLite converter crashes on a non-finite range
    check_data_finite(representative_data, "representative_data")
    check_data_finite(verify_data, "verify_data")
    if target not in TARGETS:
        raise ExportError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}",
                          layer="target")
    if int_io and target not in ("int8", "int16x8"):
        raise ExportError(f"int_io needs an integer target, not {target!r}")
    if verify and verify_data is None:
        verify_data = representative_data
    if verify and verify_data is None:
        raise ExportError("verify=True needs verify_data (or representative_data)")
    if target == "int16x8" and representative_data is None:
        representative_data = verify_data
    log.info("export %s: building the deploy graph", target)
    try:
        plan = _deploy_plan(qmodel, target, preprocessing)
    except ExportError as err:
        raise _with_way_out(err, qmodel, target)
    prep = None
    if plan.preprocessing:
        if len(qmodel.inputs) != 1:
            raise ExportError("preprocessing 'outside' is exported for single-input models")
        prep = plan.preprocessing[0]
    has_detections = detection.detection_layer(plan.model) is not None
    if prep is not None and has_detections:
        raise ExportError("preprocessing 'outside' is not exported for SSD files; export "
                          "with preprocessing 'inside' or --target float")
    file_representative = (prep.apply(representative_data)
                           if prep is not None and representative_data is not None
                           else representative_data)
    if has_detections:  # SSD: fixed-size float post-processing in the same file
        plan = dataclasses.replace(plan, model=detection.with_postprocess(plan.model))
        if target == "int8" and representative_data is not None:
            # calibration would quantize the post-processing too: the int8 part is all
            # on kerasq's grids, and check_integer_file proves no other float op is left
            log.info("int8 SSD export: representative_data not used (post-processing stays float)")
            representative_data = None
    log.info("export %s: converting (%d layers)", target, len(plan.model.layers))
    content = _convert(plan, target, file_representative, int_io)
    if not has_detections:  # the SSD file names its signature outputs itself
        content = name_output_tensors(content)
    if target == "int16x8" and representative_data is None:
        raise ExportError("int16x8 needs representative_data (TFLite calibrates it)")
    if target in ("int8", "int16x8"):
        log.info("export %s: checking the file (%d bytes)", target, len(content))
        problems = check_integer_file(content, plan, target)
        if problems:
            raise ExportError(
                f"the {target} file is not fully integer / not on kerasq's grid: "
                + "; ".join(problems[:5])
            )
    report = None
    if verify_data is not None and has_detections:
        log.info("export %s: verifying detections on %d samples", target, len(verify_data))
        report = detection.verify_detections(content, qmodel, verify_data)
        if verify and not report.ok:
            raise VerificationError(
                f"TFLite {target} detections disagree with the Keras model: {report.describe()}",
                file=path,
            )
    elif verify_data is not None:
        steps = [float(o.step) if o is not None and o.kind == "dfp" else None
                 for o in plan.output_specs]
        log.info("export %s: verifying on %d samples", target, len(verify_data))
        report = verify_tflite(content, qmodel, verify_data, output_steps=steps or None,
                               kernels=kernels,
                               file_data=None if prep is None else prep.apply(verify_data))
        if verify and not report.ok(max_steps=max_error_steps, min_top1=min_top1):
            where = ("" if prep is not None
                     else _divergence(content, qmodel, plan, verify_data, path, report))
            raise VerificationError(
                f"TFLite {target} output disagrees with the Keras model: {report.describe()}"
                f"{where}",
                file=path,
            )
    sidecars: List[str] = []
    if path is not None:
        if prep is not None:
            from kerasq.export.preprocessing import write_sidecar

            sidecars = write_sidecar(path, prep)
        write_bytes_atomic(path, content)
    return ExportResult(content, target, plan, report, prep, sidecars)


def to_tflite(
    qmodel: Any,
    path: Optional[PathLike] = None,
    *,
    target: str = "int8",
    representative_data: Any = None,
    int_io: bool = False,
    verify_data: Any = None,
    verify: bool = False,
    preprocessing: str = "inside",
) -> bytes:
    """Export ``qmodel`` (from :func:`kerasq.quantize_model`) to a TFLite flatbuffer.

    A Keras 3 ``qmodel`` (TensorFlow or JAX backend) is exported through its tf_keras twin
    (:func:`kerasq.keras3.api.tf_keras_twin`), which holds the same weights and state.

    Each DFP tensor x_q = q·2^-fl keeps its power-of-two scale 2^-fl in the file.
    ``representative_data`` calibrates tensors no kerasq quantizer covers; ``verify_data``
    runs the file in the TFLite interpreter and logs the max error (in output steps) and
    top-1 agreement; ``verify=True`` turns a disagreement (> 1 step, < 99.5 % top-1) into
    :class:`~kerasq.errors.VerificationError`. The file at ``path`` is written atomically
    and only after verification passed. ``preprocessing="outside"`` leaves a converted
    net's input preprocessing (``--mean/--scale/--swap-rb``) to the device: the file takes
    the preprocessed tensor and the constants are written to ``<path>.preprocessing.json``
    (see :mod:`kerasq.export.preprocessing`).

    Example:
        >>> blob = to_tflite(qmodel, "m.tflite", verify_data=x, verify=True)  # doctest: +SKIP
    """
    return export_tflite(
        qmodel,
        path,
        target=target,
        representative_data=representative_data,
        int_io=int_io,
        verify_data=verify_data,
        verify=verify,
        preprocessing=preprocessing,
    ).content


__all__ = ["TARGETS", "ExportResult", "to_tflite", "export_tflite", "check_integer_file"]
