"""Run an exported TFLite file and compare it with the Keras model it came from.

The error is measured in units of the output's quantization step (the scale of the int8
output tensor, or the step of the model's last activation quantizer), and for
classifiers (last axis > 1) the top-1 agreement is reported.

Example:
    >>> report = verify_tflite(tflite_bytes, qmodel, x)        # doctest: +SKIP
    >>> report.max_error_steps, report.top1_agreement           # doctest: +SKIP
    (0.0, 1.0)
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Dict, List, Optional

import numpy as np

from kerasq._compat import quiet_native_stderr

log = logging.getLogger("kerasq.export.verify")


@dataclasses.dataclass
class VerificationReport:
    """TFLite vs Keras on the same inputs."""

    samples: int
    max_abs_error: float
    output_step: Optional[float]
    max_error_steps: Optional[float]
    top1_agreement: Optional[float]
    exact_fraction: float

    def ok(
        self, *, max_steps: float = 1.0, min_top1: float = 0.995, float_tolerance: float = 1e-4
    ) -> bool:
        """True if every output is within ``max_steps`` steps (or ``float_tolerance`` of the
        output range for unquantized outputs) and top-1 agrees on >= ``min_top1``."""
        if self.max_error_steps is not None:
            within = self.max_error_steps <= max_steps + 1e-6
        else:
            within = self.max_abs_error <= float_tolerance
        top1 = self.top1_agreement is None or self.top1_agreement >= min_top1
        return within and top1

    def describe(self) -> str:
        parts = [f"{self.samples} samples"]
        if self.max_error_steps is not None:
            parts.append(
                f"max error {self.max_error_steps:.3g} output steps (step {self.output_step:.3g})"
            )
        else:
            parts.append(f"max abs error {self.max_abs_error:.3g}")
        parts.append(f"{100 * self.exact_fraction:.2f}% identical")
        if self.top1_agreement is not None:
            parts.append(f"top-1 agreement {100 * self.top1_agreement:.2f}%")
        return ", ".join(parts)


KERNELS = ("default", "reference", "builtin")


class TFLiteRunner:
    """A TFLite file loaded in ai-edge-litert's interpreter, with float in / float out.

    ``kernels``: "default" (what a device runs: the XNNPACK delegate where it applies; its
    int8 requantization rounds ties to even), "builtin" (TFLite's optimized builtin kernels,
    no delegate) or "reference" (TFLite's reference kernels: gemmlowp fixed-point
    requantization, which rounds twice, half away from zero).
    """

    def __init__(self, content: bytes, *, num_threads: int = 1, kernels: str = "default") -> None:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        resolver = {
            "default": OpResolverType.AUTO,
            "builtin": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
            "reference": OpResolverType.BUILTIN_REF,
        }[kernels]
        with quiet_native_stderr():
            self.interpreter = Interpreter(
                model_content=content,
                num_threads=num_threads,
                experimental_op_resolver_type=resolver,
            )
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self._batch: Optional[int] = None

    def _resize(self, batch: int) -> None:
        if self._batch != batch:
            shape = list(self.input["shape"])
            shape[0] = batch
            with quiet_native_stderr():
                self.interpreter.resize_tensor_input(self.input["index"], shape)
                self.interpreter.allocate_tensors()
            self.input = self.interpreter.get_input_details()[0]
            self.output = self.interpreter.get_output_details()[0]
            self._batch = batch

    @property
    def output_scale(self) -> Optional[float]:
        scale, _ = self.output["quantization"]
        return float(scale) if scale else None

    def __call__(self, x: np.ndarray, *, batch_size: int = 64) -> np.ndarray:
        outs: List[np.ndarray] = []
        for start in range(0, len(x), batch_size):
            chunk = np.asarray(x[start : start + batch_size], np.float32)
            self._resize(len(chunk))
            dtype = self.input["dtype"]
            if dtype != np.float32:
                scale, zero = self.input["quantization"]
                info = np.iinfo(dtype)
                chunk = np.clip(np.round(chunk / scale) + zero, info.min, info.max).astype(dtype)
            self.interpreter.set_tensor(self.input["index"], chunk)
            self.interpreter.invoke()
            out = self.interpreter.get_tensor(self.output["index"])
            if self.output["dtype"] != np.float32:
                scale, zero = self.output["quantization"]
                out = (out.astype(np.float32) - zero) * scale
            outs.append(np.array(out, np.float32))
        return np.concatenate(outs)


def verify_tflite(
    content: bytes,
    keras_model: Any,
    data: np.ndarray,
    *,
    output_step: Optional[float] = None,
    batch_size: int = 64,
    kernels: str = "default",
) -> VerificationReport:
    """Compare the TFLite file with ``keras_model(data, training=False)``.

    ``output_step``: the output grid step (default: the TFLite output scale if the file has
    integer output, else None: errors are reported in absolute terms). ``kernels``: see
    :class:`TFLiteRunner`.
    """
    data = np.asarray(data, np.float32)
    runner = TFLiteRunner(content, kernels=kernels)
    got = runner(data, batch_size=batch_size)
    want = np.concatenate(
        [
            np.asarray(keras_model(data[i : i + 256], training=False), np.float32)
            for i in range(0, len(data), 256)
        ]
    )
    if got.shape != want.shape:
        got = got.reshape(want.shape)
    err = np.abs(got.astype(np.float64) - want.astype(np.float64))
    step = output_step or runner.output_scale
    top1 = None
    if want.ndim >= 2 and want.shape[-1] > 1:
        top1 = float(np.mean(np.argmax(got, -1) == np.argmax(want, -1)))
    report = VerificationReport(
        samples=len(data),
        max_abs_error=float(err.max()) if err.size else 0.0,
        output_step=step,
        max_error_steps=(float(err.max() / step) if step and err.size else (0.0 if step else None)),
        top1_agreement=top1,
        exact_fraction=float(np.mean(err == 0)) if err.size else 1.0,
    )
    log.info("verification: %s", report.describe())
    return report


def tensor_table(content: bytes) -> List[Dict[str, Any]]:
    """Tensors of a TFLite file: name, dtype, scales, zero points, quantized dimension."""
    from ai_edge_litert.interpreter import Interpreter

    with quiet_native_stderr():
        interpreter = Interpreter(model_content=content)
    rows = []
    for t in interpreter.get_tensor_details():
        q = t["quantization_parameters"]
        rows.append(
            {
                "index": t["index"],
                "name": t["name"],
                "dtype": np.dtype(t["dtype"]),
                "shape": tuple(t["shape"]),
                "scales": np.asarray(q["scales"]),
                "zero_points": np.asarray(q["zero_points"]),
                "quantized_dimension": q["quantized_dimension"],
            }
        )
    return rows


def op_table(content: bytes) -> List[Dict[str, Any]]:
    """Operators of a TFLite file with the dtypes of their inputs and outputs."""
    from ai_edge_litert.interpreter import Interpreter

    with quiet_native_stderr():
        interpreter = Interpreter(model_content=content)
    tensors = {t["index"]: np.dtype(t["dtype"]) for t in interpreter.get_tensor_details()}
    rows = []
    for op in interpreter._get_ops_details():
        rows.append(
            {
                "op": op["op_name"],
                "inputs": [tensors.get(i) for i in op["inputs"] if i >= 0],
                "outputs": [tensors.get(i) for i in op["outputs"] if i >= 0],
                "input_indices": [i for i in op["inputs"] if i >= 0],
                "output_indices": list(op["outputs"]),
            }
        )
    return rows


__all__ = [
    "quiet_native_stderr",
    "KERNELS",
    "VerificationReport",
    "TFLiteRunner",
    "verify_tflite",
    "tensor_table",
    "op_table",
]
