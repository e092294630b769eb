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
from kerasq.export.tensor_io import from_tensor, to_tensor

log = logging.getLogger("kerasq.export.verify")


@dataclasses.dataclass
class OutputCheck:
    """One output of the file against the same output of the Keras model.

    ``kind`` is "classifier" (a Softmax output: judged by steps and top-1 agreement),
    "index" (an ArgMax output, e.g. a segmentation map: judged by exact equality) or
    "values" (regression, logits, maps, boxes: judged by steps only).
    """

    name: str
    kind: str
    max_abs_error: float
    output_step: Optional[float]
    max_error_steps: Optional[float]
    top1_agreement: Optional[float]
    exact_fraction: float

    def ok(self, *, max_steps: float = 1.0, min_top1: float = 0.995,
           float_tolerance: float = 1e-4) -> bool:
        """Within ``max_steps`` steps (or ``float_tolerance`` absolute for a float output)
        and, for a classifier, top-1 agreement >= ``min_top1``."""
        if self.kind == "index":
            within = self.max_abs_error == 0
        elif self.max_error_steps is not None:
            within = self.max_error_steps <= max_steps + 1e-6
        else:
            within = self.max_abs_error <= float_tolerance
        judged_top1 = self.kind == "classifier" and self.top1_agreement is not None
        return within and (not judged_top1 or self.top1_agreement >= min_top1)

    def describe(self) -> str:
        parts = []
        if self.max_error_steps is not None:
            parts.append(
                f"max error {self.max_error_steps:.3g} output steps (step {self.output_step:.3g})"
            )
        else:
            parts.append(f"max abs error {self.max_abs_error:.3g}")
        parts.append(f"{100 * self.exact_fraction:.2f}% identical")
        if self.kind == "classifier" and self.top1_agreement is not None:
            parts.append(f"top-1 agreement {100 * self.top1_agreement:.2f}%")
        return ", ".join(parts)


@dataclasses.dataclass
class VerificationReport:
    """TFLite vs Keras on the same inputs, every output checked (``outputs``).

    The scalar fields summarise the worst output: the largest error, the smallest identical
    fraction and the smallest top-1 agreement (over outputs with more than one class).
    """

    samples: int
    max_abs_error: float
    output_step: Optional[float]
    max_error_steps: Optional[float]
    top1_agreement: Optional[float]
    exact_fraction: float
    outputs: List[OutputCheck] = dataclasses.field(default_factory=list)

    def ok(
        self, *, max_steps: float = 1.0, min_top1: float = 0.995, float_tolerance: float = 1e-4
    ) -> bool:
        """True if every output passes :meth:`OutputCheck.ok`."""
        if not self.outputs:  # a report built by hand from the summary fields
            check = OutputCheck("output", "classifier", self.max_abs_error, self.output_step,
                                self.max_error_steps, self.top1_agreement, self.exact_fraction)
            return check.ok(max_steps=max_steps, min_top1=min_top1,
                            float_tolerance=float_tolerance)
        return all(o.ok(max_steps=max_steps, min_top1=min_top1,
                        float_tolerance=float_tolerance) for o in self.outputs)

    def describe(self) -> str:
        head = f"{self.samples} samples"
        if len(self.outputs) == 1:
            return f"{head}, {self.outputs[0].describe()}"
        if self.outputs:
            return head + "; " + "; ".join(f"{o.name}: {o.describe()}" for o in self.outputs)
        return head


KERNELS = ("default", "reference", "builtin")


class TFLiteRunner:
    """A TFLite file loaded in ai-edge-litert's interpreter, with float in / float out.

    ``kernels``: "default" (what a device runs: the XNNPACK delegate where it applies; its
    int8 requantization rounds ties to even), "builtin" (TFLite's optimized builtin kernels,
    no delegate) or "reference" (TFLite's reference kernels: gemmlowp fixed-point
    requantization, which rounds twice, half away from zero).

    Calling the runner gives the first output; :meth:`run_all` gives every output, in the
    order of ``output_names`` (the file's output tensor names, which kerasq sets to the
    model's output names, i.e. the Caffe tops of a converted net).
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
        self._details()
        self._batch: Optional[int] = None

    def _details(self) -> None:
        self.input = self.interpreter.get_input_details()[0]
        self.outputs = self.interpreter.get_output_details()
        self.output = self.outputs[0]

    @property
    def output_names(self) -> List[str]:
        return [d["name"] for d in self.outputs]

    def _resize(self, batch: int) -> None:
        if self._batch != batch:
            shape = list(self.input["shape"])
            shape[0] = batch
            with quiet_native_stderr():
                self.interpreter.resize_tensor_input(self.input["index"], shape)
                self.interpreter.allocate_tensors()
            self._details()
            self._batch = batch

    @property
    def output_scale(self) -> Optional[float]:
        scale, _ = self.output["quantization"]
        return float(scale) if scale else None

    def output_scales(self) -> List[Optional[float]]:
        """The quantization scale of each output (None for a float output)."""
        return [float(d["quantization"][0]) or None for d in self.outputs]

    def run_all(self, x: np.ndarray, *, batch_size: int = 64) -> List[np.ndarray]:
        """Every output of the file for the inputs ``x`` (float, dequantized)."""
        outs: List[List[np.ndarray]] = [[] for _ in self.outputs]
        for start in range(0, len(x), batch_size):
            chunk = np.asarray(x[start : start + batch_size], np.float32)
            self._resize(len(chunk))
            self.interpreter.set_tensor(self.input["index"], to_tensor(chunk, self.input))
            self.interpreter.invoke()
            for k, detail in enumerate(self.outputs):
                out = from_tensor(self.interpreter.get_tensor(detail["index"]), detail)
                outs[k].append(np.asarray(out, np.float32))
        return [np.concatenate(o) for o in outs]

    def __call__(self, x: np.ndarray, *, batch_size: int = 64) -> np.ndarray:
        return self.run_all(x, batch_size=batch_size)[0]


def _inner_layer(layer: Any) -> Any:
    return getattr(layer, "layer", layer)


def output_names(model: Any) -> List[str]:
    """The names of a (quantized) Keras model's outputs: the producing layer's name, the
    wrapped layer's for tfmot wrappers (so a converted Caffe net gives its tops)."""
    names = []
    for tensor in model.outputs:
        layer = tensor._keras_history.layer
        names.append(_inner_layer(layer).name)
    return names


def output_kinds(model: Any) -> List[str]:
    """"classifier" for an output computed by a Softmax, "index" for a Caffe ArgMax giving
    indices, else "values"."""
    kinds = []
    for tensor in model.outputs:
        layer = _inner_layer(tensor._keras_history.layer)
        act = getattr(layer, "activation", None)
        is_softmax = type(layer).__name__ == "Softmax" or getattr(act, "__name__", "") == "softmax"
        is_index = (type(layer).__name__ in ("TopKAxis", "ArgMaxFlat")
                    and not getattr(layer, "out_max_val", True))
        kinds.append("classifier" if is_softmax else "index" if is_index else "values")
    return kinds


def keras_outputs(model: Any, data: np.ndarray, batch_size: int = 256) -> List[np.ndarray]:
    """Every output of ``model(data, training=False)`` as float32 arrays, batched."""
    chunks: List[List[np.ndarray]] = []
    for i in range(0, len(data), batch_size):
        out = model(data[i : i + batch_size], training=False)
        out = out if isinstance(out, (list, tuple)) else [out]
        chunks.append([np.asarray(o, np.float32) for o in out])
    return [np.concatenate([c[k] for c in chunks]) for k in range(len(chunks[0]))]


def match_outputs(file_names: List[str], model_names: List[str]) -> List[int]:
    """For each model output, the index of the file output with the same name (the file's
    order when the names do not all match one to one)."""
    if sorted(file_names) == sorted(model_names) and len(set(model_names)) == len(model_names):
        return [file_names.index(n) for n in model_names]
    if len(file_names) != len(model_names):
        from kerasq.errors import VerificationError

        raise VerificationError(
            f"the file has {len(file_names)} outputs, the Keras model {len(model_names)}"
        )
    return list(range(len(model_names)))


def compare_output(name: str, kind: str, got: np.ndarray, want: np.ndarray,
                   step: Optional[float]) -> OutputCheck:
    """One :class:`OutputCheck` (error in units of ``step`` when given)."""
    if got.shape != want.shape:
        got = got.reshape(want.shape)
    err = np.abs(got.astype(np.float64) - want.astype(np.float64))
    top1 = None
    if want.ndim >= 2 and want.shape[-1] > 1:
        top1 = float(np.mean(np.argmax(got, -1) == np.argmax(want, -1)))
    max_err = float(err.max()) if err.size else 0.0
    return OutputCheck(
        name=name,
        kind=kind,
        max_abs_error=max_err,
        output_step=step,
        max_error_steps=(max_err / step if step else None),
        top1_agreement=top1,
        exact_fraction=float(np.mean(err == 0)) if err.size else 1.0,
    )


def verify_tflite(
    content: bytes,
    keras_model: Any,
    data: np.ndarray,
    *,
    output_step: Optional[float] = None,
    output_steps: Optional[List[Optional[float]]] = None,
    batch_size: int = 64,
    kernels: str = "default",
    file_data: Optional[np.ndarray] = None,
) -> VerificationReport:
    """Compare every output of the TFLite file with ``keras_model(data, training=False)``.

    ``file_data``: what the file is fed instead of ``data`` (the preprocessed inputs of a
    file exported with ``preprocessing="outside"``); the Keras model always gets ``data``.

    Outputs are matched by name (the file's output tensors carry the model's output names).
    ``output_steps``: the grid step of each output (default: the file output's scale when it
    is integer, else None: errors in absolute terms); ``output_step`` sets it for a
    single-output model. ``kernels``: see :class:`TFLiteRunner`.
    """
    data = np.asarray(data, np.float32)
    runner = TFLiteRunner(content, kernels=kernels)
    fed = data if file_data is None else np.asarray(file_data, np.float32)
    got_all = runner.run_all(fed, batch_size=batch_size)
    want_all = keras_outputs(keras_model, data)
    names = output_names(keras_model)
    kinds = output_kinds(keras_model)
    order = match_outputs(runner.output_names, names)
    file_scales = runner.output_scales()
    checks = []
    for k, (name, kind, want) in enumerate(zip(names, kinds, want_all)):
        step = None
        if output_steps is not None:
            step = output_steps[k]
        elif output_step is not None and len(names) == 1:
            step = output_step
        step = step or file_scales[order[k]]
        checks.append(compare_output(name, kind, got_all[order[k]], want, step))
    steps = [c.max_error_steps for c in checks]
    top1s = [c.top1_agreement for c in checks if c.top1_agreement is not None]
    report = VerificationReport(
        samples=len(data),
        max_abs_error=max(c.max_abs_error for c in checks),
        output_step=checks[0].output_step if len(checks) == 1 else None,
        max_error_steps=(None if any(s is None for s in steps) else max(steps)),
        top1_agreement=min(top1s) if top1s else None,
        exact_fraction=min(c.exact_fraction for c in checks),
        outputs=checks,
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
    details = interpreter.get_tensor_details()
    tensors = {t["index"]: np.dtype(t["dtype"]) for t in details}
    names = {t["index"]: t["name"] for t in details}
    rows = []
    for op in interpreter._get_ops_details():
        rows.append(
            {
                "op": op["op_name"],
                "inputs": [tensors.get(i) for i in op["inputs"] if i >= 0],
                "outputs": [tensors.get(i) for i in op["outputs"] if i >= 0],
                "input_indices": [i for i in op["inputs"] if i >= 0],
                "output_indices": list(op["outputs"]),
                "output_names": [names.get(i, "") for i in op["outputs"] if i >= 0],
            }
        )
    return rows


__all__ = [
    "quiet_native_stderr",
    "KERNELS",
    "OutputCheck",
    "VerificationReport",
    "TFLiteRunner",
    "compare_output",
    "keras_outputs",
    "output_kinds",
    "output_names",
    "verify_tflite",
    "tensor_table",
    "op_table",
]
