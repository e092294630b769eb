"""Evaluate a Keras model (.h5 / SavedModel) or a TFLite file on arrays, the same way.

:func:`evaluate` runs a model on inputs ``x`` and scores every output by its kind:

* against labels ``y``: a *classifier* output (labels are class indices, or one-hot rows)
  gets top-1 accuracy, ``mean(argmax(out) == y)``; a *regression* output (labels shaped like
  the output) gets the mean absolute error ``mean(|out - y|)``;
* against a reference model run on the same ``x`` (e.g. the float model, or the ``q.h5``
  an int8 file was exported from): every output gets the largest absolute difference and
  the fraction of identical values; classifier outputs also get the top-1 agreement
  ``mean(argmax(out) == argmax(ref))``.

An output is a classifier if labels say so (integer class indices) or if it holds
probabilities (rank 2, non-negative rows that sum to 1, i.e. a softmax); ``kinds`` overrides
this per output (e.g. a logits output without labels). TFLite files run in ai-edge-litert's
interpreter with its default kernels; an int8 input or output is quantized/dequantized with
the tensor's scale and zero point, so ``x`` and the scores are float in both cases.

Several outputs are scored separately, each under its name (Keras output names; TFLite
signature output names, matched to a Keras reference by name, else by position). Labels of
several outputs are a dict ``{name: array}`` or a list in output order.

Example:
    >>> result = evaluate("q.tflite", x_test, y_test, reference="q.h5")  # doctest: +SKIP
    >>> print(result.table())  # doctest: +SKIP
    output  kind        samples  accuracy  agreement  max |diff|  identical
    prob    classifier  540      0.9907    1.0000     0           100.00 %
"""

from __future__ import annotations

import abc
import dataclasses
import math
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from kerasq.data import check_array, check_input_file, check_int, check_mapping, check_path
from kerasq.errors import KerasqError, ModelFormatError
from kerasq.export.tensor_io import from_tensor, to_tensor

__all__ = ["evaluate", "load_predictor", "Predictor", "OutputScore", "EvalResult",
           "output_kind"]

KINDS = ("classifier", "regression")
Labels = Union[None, np.ndarray, Sequence[np.ndarray], Mapping[str, np.ndarray]]


# ------------------------------------------------------------------------------ running
class Predictor(abc.ABC):
    """A loaded model with float in / float out: ``predict(x) -> {output name: array}``.

    ``names`` lists the outputs in order; ``path`` is the file (or "" for an in-memory
    Keras model); ``kind`` is "keras" or "tflite".
    """

    names: List[str]
    path: str
    kind: str

    @abc.abstractmethod
    def predict(self, x: Any, batch_size: int = 64) -> Dict[str, np.ndarray]:
        """``{output name: array}`` for the inputs ``x``."""


def _unwrapped_name(model: Any, name: str) -> str:
    """The user's layer name for a tfmot wrapper output ("quant_prob" -> "prob")."""
    try:
        layer = model.get_layer(name)
    except (ValueError, AttributeError):
        return name
    inner = getattr(layer, "layer", None)
    return inner.name if inner is not None and hasattr(inner, "name") else name


class KerasPredictor(Predictor):
    """A tf_keras model (loaded from .h5 / .keras / SavedModel or given)."""

    def __init__(self, model: Any, path: str = "") -> None:
        self.model = model
        self.path = path
        self.kind = "keras"
        self.names = [_unwrapped_name(model, name)
                      for name in (getattr(model, "output_names", None) or [model.name])]

    def predict(self, x: Any, batch_size: int = 64) -> Dict[str, np.ndarray]:
        out = self.model.predict(x, batch_size=batch_size, verbose=0)
        outs = out if isinstance(out, (list, tuple)) else [out]
        return {name: np.asarray(o) for name, o in zip(self.names, outs)}


class TFLitePredictor(Predictor):
    """A .tflite file in ai-edge-litert's interpreter (default kernels), every input and
    output, batch resized per call."""

    def __init__(self, content: bytes, path: str = "", *, num_threads: int = 1) -> None:
        from ai_edge_litert.interpreter import Interpreter

        from kerasq._compat import quiet_native_stderr

        self.path = path
        self.kind = "tflite"
        try:
            with quiet_native_stderr():
                self.interpreter = Interpreter(model_content=content, num_threads=num_threads)
        except (ValueError, RuntimeError) as err:
            raise ModelFormatError(f"not a TFLite file: {str(err).splitlines()[0]}",
                                   file=path or None) from None
        signatures = self.interpreter.get_signature_list()
        self._signature = next(iter(signatures), None)
        inputs = self.interpreter.get_input_details()
        outputs = self.interpreter.get_output_details()
        if self._signature is not None:
            sig = signatures[self._signature]
            runner = self.interpreter.get_signature_runner(self._signature)
            in_details = runner.get_input_details()
            out_details = runner.get_output_details()
            self._input_names = list(sig["inputs"])
            self.names = list(sig["outputs"])
            self._inputs = [in_details[n] for n in self._input_names]
            self._outputs = [out_details[n] for n in self.names]
        else:
            self._inputs = inputs
            self._outputs = outputs
            self._input_names = [d["name"] for d in inputs]
            self.names = [d["name"] for d in outputs]
        self._batch: Optional[int] = None

    def _resize(self, batch: int) -> None:
        if self._batch == batch:
            return
        from kerasq._compat import quiet_native_stderr

        with quiet_native_stderr():
            for detail in self._inputs:
                shape = list(detail["shape"])
                shape[0] = batch
                self.interpreter.resize_tensor_input(detail["index"], shape)
            self.interpreter.allocate_tensors()
        self._batch = batch

    def predict(self, x: Any, batch_size: int = 64) -> Dict[str, np.ndarray]:
        xs = list(x) if isinstance(x, (list, tuple)) else [x]
        if len(xs) != len(self._inputs):
            raise KerasqError(f"the model has {len(self._inputs)} inputs, {len(xs)} arrays "
                              f"given", file=self.path or None)
        n = len(xs[0])
        parts: Dict[str, List[np.ndarray]] = {name: [] for name in self.names}
        for start in range(0, n, batch_size):
            chunks = [np.asarray(a[start:start + batch_size]) for a in xs]
            self._resize(len(chunks[0]))
            for detail, chunk in zip(self._inputs, chunks):
                expected = tuple(int(d) for d in detail["shape"][1:])
                if tuple(chunk.shape[1:]) != expected:
                    raise KerasqError(
                        f"input shape {tuple(chunk.shape[1:])} does not match the model's "
                        f"{expected}", file=self.path or None, layer=detail["name"])
                self.interpreter.set_tensor(detail["index"], to_tensor(chunk, detail))
            self.interpreter.invoke()
            for name, detail in zip(self.names, self._outputs):
                parts[name].append(from_tensor(
                    self.interpreter.get_tensor(detail["index"]), detail))
        return {name: np.concatenate(p) for name, p in parts.items()}


def load_predictor(model: Any, arg: str = "model") -> Predictor:
    """A :class:`Predictor` for a path (.tflite, .h5, .keras, SavedModel dir), a tf_keras
    model, TFLite bytes, or an existing predictor.

    Example: ``load_predictor("model.tflite").predict(x)`` -> ``{"prob": array(...)}``.
    """
    if isinstance(model, Predictor):
        return model
    if isinstance(model, (bytes, bytearray)):
        return TFLitePredictor(bytes(model))
    if isinstance(model, (str, os.PathLike)):
        path = check_path(model, arg)
        if not os.path.exists(path):
            raise ModelFormatError("no such file or directory", file=path)
        if path.lower().endswith(".tflite"):
            check_input_file(path, arg, "TFLite file")
            with open(path, "rb") as f:
                return TFLitePredictor(f.read(), path)
        from kerasq.dispatch import load_model  # tf_keras or Keras 3, by the file

        return KerasPredictor(load_model(path, compile=False), path)
    if hasattr(model, "predict") and hasattr(model, "layers"):
        return KerasPredictor(model)
    raise ModelFormatError(f"cannot evaluate a {type(model).__name__}: give a path, a "
                           f"tf_keras model or TFLite bytes", layer=arg)


# ------------------------------------------------------------------------------ scoring
@dataclasses.dataclass
class OutputScore:
    """The scores of one output; fields that do not apply are None."""

    name: str
    kind: str  # "classifier" | "regression"
    samples: int
    accuracy: Optional[float] = None  # top-1 vs labels (classifier)
    mean_abs_error: Optional[float] = None  # vs labels (regression)
    agreement: Optional[float] = None  # top-1 agreement with the reference (classifier)
    max_abs_diff: Optional[float] = None  # vs the reference
    identical: Optional[float] = None  # fraction of values equal to the reference's
    reference_name: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        """JSON-friendly dict (non-finite numbers as strings)."""
        return {k: (str(v) if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in dataclasses.asdict(self).items()}


@dataclasses.dataclass
class EvalResult:
    """Scores of every output of ``model`` (a path or "model")."""

    model: str
    reference: Optional[str]
    outputs: List[OutputScore]

    def to_dict(self) -> Dict[str, Any]:
        """JSON-friendly dict."""
        return {"model": self.model, "reference": self.reference,
                "outputs": [o.to_dict() for o in self.outputs]}

    def table(self) -> str:
        """One line per output, fixed width.

        Example: ``print(evaluate("q.tflite", x, y).table())``.
        """
        def pct(v: Optional[float]) -> str:
            return "-" if v is None else f"{100.0 * v:.2f} %"

        def num(v: Optional[float]) -> str:
            return "-" if v is None else f"{v:.6g}"

        header = ("output", "kind", "samples", "accuracy", "mean |err|", "agreement",
                  "max |diff|", "identical")
        rows = [header] + [(o.name, o.kind, str(o.samples), pct(o.accuracy),
                            num(o.mean_abs_error), pct(o.agreement), num(o.max_abs_diff),
                            pct(o.identical)) for o in self.outputs]
        keep = [i for i in range(len(header))
                if i < 3 or any(r[i] != "-" for r in rows[1:])]
        widths = [max(len(r[i]) for r in rows) for i in keep]
        lines = ["  ".join(r[i].ljust(w) for i, w in zip(keep, widths)).rstrip()
                 for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)


def _is_probability(out: np.ndarray) -> bool:
    if out.ndim != 2 or out.shape[1] < 2 or out.size == 0:
        return False
    return bool(np.all(out >= 0) and np.allclose(out.sum(axis=1), 1.0, atol=2e-2))


def _check_numeric(labels: np.ndarray, name: str, source: str) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.dtype.kind not in "biuf":
        raise KerasqError(
            f"labels are not numbers (dtype {arr.dtype}): give class indices (integers) or "
            f"one-hot rows", file=source or None, layer=name)
    return arr


def output_kind(out: np.ndarray, labels: Optional[np.ndarray] = None) -> str:
    """"classifier" or "regression" for an output (N, ...) and optional labels.

    Labels of shape (N,) or (N, 1) with integer values, or one-hot rows, make a classifier;
    labels shaped like the output otherwise make a regression; without labels a softmax
    output (non-negative rows summing to 1) is a classifier.

    Example: ``output_kind(np.full((4, 10), 0.1))`` -> ``"classifier"``.
    """
    if labels is not None:
        lab = np.asarray(labels)
        flat = lab.reshape(len(lab), -1) if lab.ndim > 1 else lab
        if lab.ndim == 1 or (lab.ndim == 2 and lab.shape[1] == 1):
            return "classifier"
        if lab.shape == out.shape and lab.ndim == 2 and np.all((flat == 0) | (flat == 1)) \
                and np.all(flat.sum(axis=1) == 1):
            return "classifier"
        return "regression"
    return "classifier" if _is_probability(out) else "regression"


def _top1(out: np.ndarray) -> np.ndarray:
    return out.reshape(len(out), -1).argmax(axis=1)


def _label_list(y: Labels, names: List[str], source: str) -> List[Optional[np.ndarray]]:
    if y is None:
        return [None] * len(names)
    if isinstance(y, Mapping):
        unknown = sorted(set(y) - set(names))
        if unknown:
            raise KerasqError(f"labels for unknown outputs {', '.join(unknown)} (outputs: "
                              f"{', '.join(names)})", file=source or None)
        return [None if y.get(n) is None else _check_numeric(y[n], n, source) for n in names]
    if isinstance(y, (list, tuple)):
        if len(y) != len(names):
            raise KerasqError(f"{len(y)} label arrays for {len(names)} outputs "
                              f"({', '.join(names)})", file=source or None)
        return [None if a is None else _check_numeric(a, n, source) for a, n in zip(y, names)]
    if len(names) != 1:
        raise KerasqError(
            f"one label array for {len(names)} outputs: give one per output (in an .npz: "
            f"y_<output> for {', '.join(names)})", file=source or None)
    return [_check_numeric(np.asarray(y), names[0], source)]


def _score_labels(score: OutputScore, out: np.ndarray, labels: np.ndarray, source: str) -> None:
    if len(labels) != len(out):
        raise KerasqError(f"{len(labels)} labels for {len(out)} inputs", file=source or None,
                          layer=score.name)
    if score.kind == "classifier":
        lab = labels.reshape(len(labels), -1)
        target = lab.argmax(axis=1) if lab.shape[1] > 1 else lab[:, 0]
        if lab.shape[1] == 1 and not np.all(target == np.round(target)):
            raise KerasqError("class labels must be whole numbers", file=source or None,
                              layer=score.name)
        score.accuracy = float(np.mean(_top1(out) == target.astype(np.int64)))
    else:
        if labels.size != out.size:
            raise KerasqError(f"labels of shape {labels.shape[1:]} for an output of shape "
                              f"{out.shape[1:]}", file=source or None, layer=score.name)
        score.mean_abs_error = float(np.mean(np.abs(
            out.astype(np.float64) - labels.reshape(out.shape).astype(np.float64))))


def _match(names: List[str], ref_names: List[str], outs: Dict[str, np.ndarray],
           refs: Dict[str, np.ndarray]) -> List[str]:
    if set(names) == set(ref_names):
        return names
    if len(names) != len(ref_names):
        raise KerasqError(f"the model has {len(names)} outputs ({', '.join(names)}), the "
                          f"reference {len(ref_names)} ({', '.join(ref_names)})")
    matched = list(ref_names)
    if all(outs[a].shape == refs[b].shape for a, b in zip(names, matched)):
        return matched
    # TFLite signature outputs may come in another order: match by unique shape
    by_shape: Dict[Any, List[str]] = {}
    for b in ref_names:
        by_shape.setdefault(refs[b].shape, []).append(b)
    result = []
    for a in names:
        candidates = by_shape.get(outs[a].shape, [])
        if len(candidates) != 1:
            raise KerasqError(f"cannot match output {a} {outs[a].shape[1:]} to one reference "
                              f"output ({', '.join(ref_names)})")
        result.append(candidates[0])
    return result


def evaluate(model: Any, x: Any, y: Labels = None, *, reference: Any = None,
             kinds: Optional[Mapping[str, str]] = None, batch_size: int = 64) -> EvalResult:
    """Score every output of ``model`` on ``x`` (see the module docstring).

    ``model``/``reference``: a path (.h5, .keras, SavedModel directory, .tflite), a tf_keras
    model, TFLite bytes or a :class:`Predictor`. ``y``: labels (one array, a list in output
    order, or ``{output name: array}``), numeric. ``kinds``: ``{output name: "classifier" |
    "regression"}`` to override the automatic choice.

    Example: ``evaluate("model.tflite", x, y).outputs[0].accuracy`` -> ``0.9907``.
    """
    if y is None and reference is None:
        raise KerasqError("nothing to score: give labels y or a reference model")
    check_int(batch_size, "batch_size")
    check_mapping(kinds, "kinds")
    check_array(x, "x")
    predictor = load_predictor(model)
    check_array(x, "x", model=getattr(predictor, "model", None))
    source = predictor.path
    n = len(x[0]) if isinstance(x, (list, tuple)) else len(x)
    if n == 0:
        raise KerasqError("no inputs to evaluate (0 samples)", file=source or None)
    outs = predictor.predict(x, batch_size=batch_size)
    labels = _label_list(y, predictor.names, source)
    for name, kind in (kinds or {}).items():
        if name not in predictor.names:
            raise KerasqError(f"unknown output (outputs: {', '.join(predictor.names)})",
                              layer=name)
        if kind not in KINDS:
            raise KerasqError(f"kind {kind!r}: must be one of {', '.join(KINDS)}", layer=name)
    refs: Dict[str, np.ndarray] = {}
    ref_for: List[Optional[str]] = [None] * len(predictor.names)
    ref_pred: Optional[Predictor] = None
    if reference is not None:
        ref_pred = load_predictor(reference, "reference")
        refs = ref_pred.predict(x, batch_size=batch_size)
        ref_for = list(_match(predictor.names, ref_pred.names, outs, refs))
    scores = []
    for name, lab, ref_name in zip(predictor.names, labels, ref_for):
        out = outs[name]
        ref = refs.get(ref_name) if ref_name is not None else None
        kind = (kinds or {}).get(name) or output_kind(ref if ref is not None and lab is None
                                                      else out, lab)
        score = OutputScore(name=name, kind=kind, samples=len(out), reference_name=ref_name)
        if lab is not None:
            _score_labels(score, out, lab, source)
        if ref is not None:
            if ref.shape != out.shape:
                raise KerasqError(f"output shape {out.shape[1:]} differs from the "
                                  f"reference's {ref.shape[1:]}", file=source or None,
                                  layer=name)
            diff = np.abs(out.astype(np.float64) - ref.astype(np.float64))
            score.max_abs_diff = float(diff.max()) if diff.size else 0.0
            score.identical = float(np.mean(out == ref)) if out.size else 1.0
            if kind == "classifier":
                score.agreement = float(np.mean(_top1(out) == _top1(ref)))
        scores.append(score)
    return EvalResult(model=source or "model",
                      reference=None if ref_pred is None else (ref_pred.path or "reference"),
                      outputs=scores)
