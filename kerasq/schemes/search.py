"""Ristretto's bit-width search: the smallest bit widths per part within an accuracy margin.

``ristretto quantize`` (pmgysel/caffe tools/ristretto.cpp, quant-schemes.md §2.6) scores the
float net (baseline), then quantizes each *part* of the net on its own, the rest float, at
16, 8, 4, 2 bits, and stops a part's sweep at the first bit width whose score falls more
than the margin below the baseline::

    fails(bw)  <=>  score(bw) + error_margin / 100 < baseline          (scores as fractions)

The chosen bit width of a part is the smallest one in the passing prefix (float if even the
first candidate fails). The parts are combined into one :class:`QuantizationConfig` (with
per-layer-type overrides) and the combined model is scored once more; like Ristretto, the
combined score may fall below the margin (fine-tune the result then): the result then says
so (:attr:`SearchResult.within_margin` is False, :meth:`SearchResult.margin_warning` gives the
one-line message, a warning is logged, and ``kerasq quantize --search`` prints it, or fails
with ``--strict``).

Parts: ``"conv_weights"`` (every convolution kernel: Conv1D/2D/3D, depthwise, separable,
transposed), ``"dense_weights"`` (Dense kernels) and ``"activations"`` (every activation
quantizer kerasq inserts, one bit width for all). A part absent from the model is skipped.

``eval_fn(qmodel) -> float`` returns the score to keep high, e.g. top-1 accuracy as a
fraction in [0, 1] (``error_margin`` is then in percentage points, Ristretto's convention:
``error_margin=1.0`` allows a drop of 0.01). With ``score_unit="percent"`` eval_fn returns
percentages and the margin is compared directly.

Example:
    >>> result = search_bitwidths(model, lambda q: accuracy(q), x_cal)  # doctest: +SKIP
    >>> print(result)  # doctest: +SKIP
    >>> qmodel = kerasq.quantize_model(model, result.config)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from kerasq.errors import QuantizationConfigError
from kerasq.schemes.config import QuantizationConfig

log = logging.getLogger("kerasq.schemes.search")

PARTS = ("conv_weights", "dense_weights", "activations")
DEFAULT_CANDIDATES = (16, 8, 4, 2)
SCORE_UNITS = ("fraction", "percent")

__all__ = ["search_bitwidths", "search_minifloat", "minifloat_exp_bits", "SearchResult",
           "SearchRow", "sweep", "PARTS"]


@dataclasses.dataclass(frozen=True)
class SearchRow:
    """One evaluation: ``part`` at ``bitwidth`` bits scored ``score``; ``passed`` the margin."""

    part: str
    bitwidth: Optional[int]  # None = float (the baseline and skipped parts)
    score: float
    passed: bool


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """Outcome of :func:`search_bitwidths`; ``print(result)`` shows the table.

    ``bitwidths`` maps each part to the chosen bit width (None = stays float);
    ``config`` quantizes every part at its chosen width; ``score`` is its combined score.
    """

    baseline: float
    rows: Tuple[SearchRow, ...]
    bitwidths: Dict[str, Optional[int]]
    config: QuantizationConfig
    score: float
    error_margin: float
    score_unit: str = "fraction"
    detail: str = ""

    @property
    def within_margin(self) -> bool:
        """True if the combined score is within ``error_margin`` of the baseline.

        Example: ``if not result.within_margin: print(result.margin_warning())``.
        """
        return not (math.isnan(self.score)
                    or _fails(self.score, self.baseline, self.error_margin, self.score_unit))

    def margin_warning(self) -> str:
        """"" if :attr:`within_margin`, else one line: the drop, the margin and what to do.

        Example: ``"combined result (conv_weights=2, ...) scores 0.9574, 3.30 points below
        the float baseline 0.9904, more than the 1 point error margin: ..."``.
        """
        if self.within_margin:
            return ""
        scale = 100.0 if self.score_unit == "fraction" else 1.0
        drop = (self.baseline - self.score) * scale
        chosen = ", ".join(f"{part}={'float' if bw is None else bw}"
                           for part, bw in self.bitwidths.items())
        return (f"combined result ({chosen}) scores {self.score:.4f}, {drop:.2f} points below "
                f"the float baseline {self.baseline:.4f}, more than the {self.error_margin:g} "
                f"point error margin: the parts pass alone but not together; raise the bit "
                f"widths (--candidates without the smallest width), fine-tune (QAT) or allow "
                f"a larger --error-margin")

    def table(self) -> str:
        """The search as a fixed-width text table (Ristretto's log, condensed)."""
        scale = 100.0 if self.score_unit == "fraction" else 1.0
        lines = [f"{'part':<14} {'bits':>5} {'score':>9} {'drop (pts)':>10}  within margin"]

        def row(part: str, bits: str, score: float, ok: str) -> str:
            drop = (self.baseline - score) * scale
            return f"{part:<14} {bits:>5} {score:>9.4f} {drop:>10.2f}  {ok}"

        lines.append(row("float", "-", self.baseline, "baseline"))
        for r in self.rows:
            lines.append(row(r.part, str(r.bitwidth), r.score, "yes" if r.passed else "no"))
        chosen = ", ".join(
            f"{part}={'float' if bw is None else bw}" for part, bw in self.bitwidths.items()
        )
        lines.append(row("combined", "-", self.score,
                         chosen if self.within_margin else f"{chosen} (MISSES THE MARGIN)"))
        lines.append(f"error margin {self.error_margin:g} percentage points")
        if self.detail:
            lines.append(self.detail)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _fails(score: float, baseline: float, margin: float, score_unit: str) -> bool:
    margin_in_score = margin / 100.0 if score_unit == "fraction" else margin
    return score + margin_in_score < baseline


def sweep(
    evaluate: Callable[[int], float],
    baseline: float,
    candidates: Sequence[int],
    error_margin: float,
    *,
    score_unit: str = "fraction",
) -> Tuple[Optional[int], List[Tuple[int, float, bool]]]:
    """One part's sweep: evaluate candidates in order until one fails the margin.

    Returns (chosen bit width or None, [(bitwidth, score, passed), ...]).

    Example (Ristretto's LeNet conv weights, RIS-WEB): baseline 0.9915, scores 0.9915,
    0.9915, 0.9909, 0.9853 at 16/8/4/2 bits, margin 1 -> 2 bits.
    """
    chosen: Optional[int] = None
    rows: List[Tuple[int, float, bool]] = []
    for bw in candidates:
        score = float(evaluate(bw))
        passed = not (math.isnan(score) or _fails(score, baseline, error_margin, score_unit))
        rows.append((bw, score, passed))
        if not passed:
            break
        chosen = bw if chosen is None else min(chosen, bw)
    return chosen, rows


# ------------------------------------------------------------------------ model inspection
def _all_layers(model: Any) -> List[Any]:
    out: List[Any] = []
    for layer in getattr(model, "layers", []):
        if hasattr(layer, "layers") and getattr(layer, "layers", None):
            out.extend(_all_layers(layer))
        else:
            out.append(layer)
    return out


def _part_types(model: Any) -> Dict[str, Tuple[str, ...]]:
    """Keras class names of the layers whose kernels belong to each weight part."""
    from kerasq._compat import keras

    conv, dense = [], []
    for layer in _all_layers(model):
        name = type(layer).__name__
        bases = [c.__name__ for c in type(layer).__mro__]
        if isinstance(layer, keras.layers.Dense):
            dense.append(name)
        elif any(b.startswith(("Conv", "DepthwiseConv", "SeparableConv")) and "LSTM" not in b
                 for b in bases) and layer.weights:
            conv.append(name)
    return {
        "conv_weights": tuple(dict.fromkeys(conv)),
        "dense_weights": tuple(dict.fromkeys(dense)),
        "activations": ("*",),
    }


def _part_config(
    base: QuantizationConfig, types: Dict[str, Tuple[str, ...]], bits: Dict[str, Optional[int]]
) -> QuantizationConfig:
    """``base`` with only the parts in ``bits`` quantized (None/absent part = float)."""
    overrides = {k: dict(v) for k, v in base.overrides.items()}
    act_bw = bits.get("activations")
    for part in ("conv_weights", "dense_weights"):
        bw = bits.get(part)
        for type_name in types[part]:
            entry = dict(overrides.get(type_name, {}))
            entry["quantize_weights"] = bw is not None
            if bw is not None:
                entry["bitwidth_weights"] = bw
            overrides[type_name] = entry
    precision = base.precision if base.precision != "float" else "dfp"
    return base.replace(
        precision=precision,
        quantize_weights=False,  # weights of layers outside the two parts stay float
        quantize_activations=act_bw is not None,
        bitwidth_activations=act_bw if act_bw is not None else base.bitwidth_activations,
        overrides=overrides,
    )


def search_bitwidths(
    model: Any,
    eval_fn: Callable[[Any], float],
    data: Any,
    error_margin: float = 1.0,
    *,
    parts: Sequence[str] = PARTS,
    candidates: Sequence[int] = DEFAULT_CANDIDATES,
    config: Optional[QuantizationConfig] = None,
    steps: Optional[int] = None,
    batch_size: int = 32,
    score_unit: str = "fraction",
    progress: Optional[Callable[[str, float], None]] = None,
    make_candidate: Optional[Callable[[QuantizationConfig], Any]] = None,
) -> SearchResult:
    """Ristretto's DFP bit-width search over ``parts`` of a float Keras ``model``.

    Every candidate model is ``quantize_model(model, cfg)`` calibrated on ``data``
    (``calibrate(qmodel, data, steps, batch_size=...)``) and scored by ``eval_fn``.
    ``config`` supplies everything but the bit widths and which parts are quantized
    (default: kerasq's DFP defaults); the search evaluates with ``quantization_start=0``
    and the returned config keeps ``config.quantization_start``. ``progress(label, score)``
    is called after every evaluation (the CLI prints it); logging also reports each one.
    ``make_candidate(cfg)``, if given, makes the calibrated candidate model instead
    (``kerasq.search_bitwidths`` uses it for a Keras 3 model, searched on its tf_keras twin).

    Example: ``search_bitwidths(model, eval_fn, x_cal, error_margin=1.0).bitwidths``
    -> ``{"conv_weights": 4, "dense_weights": 8, "activations": 8}``.
    """
    from kerasq.data import check_array, check_callable, check_int, check_keras_model
    from kerasq.data import check_number
    from kerasq.schemes import calibrate, quantize_model

    check_keras_model(model, "model", quantized=False)
    check_callable(eval_fn, "eval_fn")
    base = config if config is not None else QuantizationConfig()
    if not isinstance(base, QuantizationConfig):
        raise QuantizationConfigError(f"config={base!r}: must be a QuantizationConfig")
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        raise QuantizationConfigError(f"parts={tuple(parts)!r}: each must be one of {PARTS}")
    if score_unit not in SCORE_UNITS:
        raise QuantizationConfigError(f"score_unit={score_unit!r}: must be one of {SCORE_UNITS}")
    if not candidates or any(isinstance(b, bool) or not isinstance(b, int) or not 2 <= b <= 32
                             for b in candidates):
        raise QuantizationConfigError(f"candidates={tuple(candidates)!r}: integers in 2..32")
    if not isinstance(error_margin, (int, float)) or error_margin < 0:
        raise QuantizationConfigError(f"error_margin={error_margin!r}: must be a number >= 0")
    check_number(error_margin, "error_margin", minimum=0)
    check_int(batch_size, "batch_size")
    check_int(steps, "steps", optional=True)
    check_array(data, "data", model=model, streams=True)

    run_base = base.replace(quantization_start=0)
    types = _part_types(model)

    def score_of(bits: Dict[str, Optional[int]], label: str) -> float:
        cfg = _part_config(run_base, types, bits)
        if make_candidate is not None:
            qmodel = make_candidate(cfg)
        else:
            qmodel = quantize_model(model, cfg)
            calibrate(qmodel, data, steps, batch_size=batch_size)
        value = float(eval_fn(qmodel))
        log.info("search: %s -> %.6g", label, value)
        if progress is not None:
            progress(label, value)
        return value

    baseline = float(eval_fn(model))
    log.info("search: float baseline %.6g", baseline)
    if progress is not None:
        progress("float baseline", baseline)
    rows: List[SearchRow] = []
    chosen: Dict[str, Optional[int]] = {}
    for part in parts:
        if not types[part]:
            log.info("search: the model has no %s; skipped", part)
            continue

        def evaluate(bw: int, part: str = part) -> float:
            return score_of({part: bw}, f"{part} {bw} bit")

        best, part_rows = sweep(evaluate, baseline, candidates, error_margin,
                                score_unit=score_unit)
        rows.extend(SearchRow(part, bw, s, ok) for bw, s, ok in part_rows)
        chosen[part] = best

    # parts not searched keep what ``config`` says
    final_bits: Dict[str, Optional[int]] = {
        "conv_weights": base.bitwidth_weights if base.quantize_weights else None,
        "dense_weights": base.bitwidth_weights if base.quantize_weights else None,
        "activations": base.bitwidth_activations if base.quantize_activations else None,
    }
    final_bits.update(chosen)
    combined = score_of(final_bits, "combined") if any(
        b is not None for b in final_bits.values()) else baseline
    final_config = _part_config(base, types, final_bits)
    result = SearchResult(
        baseline=baseline, rows=tuple(rows), bitwidths=chosen, config=final_config,
        score=combined, error_margin=float(error_margin), score_unit=score_unit,
    )
    if not result.within_margin:
        log.warning("search: %s", result.margin_warning())
    return result


# ------------------------------------------------------------------------ minifloat mode
def minifloat_exp_bits(max_abs_values: Sequence[float]) -> int:
    """Ristretto's exponent width for a minifloat net (quant-schemes.md §2.6 item 5).

    E = max(4, max over tensors of ceil(log2(log2(max|x|) − 1) + 1)). A tensor with
    max|x| <= 2 makes the inner log2 undefined in Ristretto (§8 item 13); it is skipped here.

    Example:
        >>> minifloat_exp_bits([3.0, 100.0, 1e6, 0.5])
        6
    """
    exp_bits = 4
    for value in max_abs_values:
        inner = math.log2(value) - 1.0 if value > 0 else -1.0
        if inner > 0:
            exp_bits = max(exp_bits, math.ceil(math.log2(inner) + 1.0))
    return exp_bits


def _conv_dense_max_abs(model: Any, data: Any, steps: Optional[int], batch_size: int
                        ) -> List[float]:
    """max|x| over ``data`` of the inputs and outputs of every conv and Dense layer."""
    import numpy as np

    from kerasq._compat import keras
    from kerasq.schemes.report import _batches

    types = _part_types(model)
    wanted = set(types["conv_weights"]) | set(types["dense_weights"])
    tensors: List[Any] = []
    for layer in _all_layers(model):
        if type(layer).__name__ not in wanted:
            continue
        try:
            ins, outs = layer.input, layer.output
        except (AttributeError, ValueError):  # shared layer: several call sites
            log.info("search: %s is called more than once; its statistics are skipped",
                     layer.name)
            continue
        tensors.extend(ins if isinstance(ins, (list, tuple)) else [ins])
        tensors.extend(outs if isinstance(outs, (list, tuple)) else [outs])
    if not tensors:
        return []
    probe = keras.Model(model.inputs, tensors)
    maxima = [0.0] * len(tensors)
    for batch in _batches(data, batch_size, steps):
        values = probe(batch, training=False)
        values = values if isinstance(values, (list, tuple)) else [values]
        for i, v in enumerate(values):
            maxima[i] = max(maxima[i], float(np.max(np.abs(np.asarray(v)))))
    return maxima


def search_minifloat(
    model: Any,
    eval_fn: Callable[[Any], float],
    data: Any,
    error_margin: float = 1.0,
    *,
    candidates: Sequence[int] = (16, 8, 4),
    config: Optional[QuantizationConfig] = None,
    steps: Optional[int] = None,
    batch_size: int = 32,
    score_unit: str = "fraction",
    progress: Optional[Callable[[str, float], None]] = None,
    make_candidate: Optional[Callable[[QuantizationConfig], Any]] = None,
) -> SearchResult:
    """Ristretto's minifloat search (``--trimming_mode=minifloat``, quant-schemes.md §2.6.5).

    The exponent width E comes from the largest conv/Dense inputs and outputs on ``data``
    (:func:`minifloat_exp_bits`); then whole-net minifloat formats of total width 16, 8, 4
    (while width − 1 − E > 0; mantissa = width − E − 1) are scored with the same stopping
    rule as :func:`search_bitwidths`. kerasq applies the format to every quantizer of the
    net (Ristretto: Conv/FC weights, biases, inputs and outputs). ``make_candidate`` as in
    :func:`search_bitwidths`.

    Example: ``search_minifloat(model, eval_fn, x_cal).config`` -> minifloat E4M3 config.
    """
    from kerasq.schemes import calibrate, quantize_model

    base = config if config is not None else QuantizationConfig()
    if not isinstance(error_margin, (int, float)) or error_margin < 0:
        raise QuantizationConfigError(f"error_margin={error_margin!r}: must be a number >= 0")
    if score_unit not in SCORE_UNITS:
        raise QuantizationConfigError(f"score_unit={score_unit!r}: must be one of {SCORE_UNITS}")
    exp_bits = minifloat_exp_bits(_conv_dense_max_abs(model, data, steps, batch_size))
    widths = [bw for bw in candidates if bw - 1 - exp_bits > 0]
    if not widths:
        raise QuantizationConfigError(
            f"candidates={tuple(candidates)!r}: no width leaves a mantissa bit with "
            f"exp_bits={exp_bits}")

    def format_config(bw: int) -> QuantizationConfig:
        return base.replace(precision="minifloat", exp_bits=exp_bits,
                            mant_bits=bw - exp_bits - 1, quantize_weights=True,
                            quantize_activations=True)

    def evaluate(bw: int) -> float:
        cfg = format_config(bw).replace(quantization_start=0)
        if make_candidate is not None:
            qmodel = make_candidate(cfg)
        else:
            qmodel = quantize_model(model, cfg)
            calibrate(qmodel, data, steps, batch_size=batch_size)
        value = float(eval_fn(qmodel))
        label = f"minifloat {bw} bit (E{exp_bits}M{bw - exp_bits - 1})"
        log.info("search: %s -> %.6g", label, value)
        if progress is not None:
            progress(label, value)
        return value

    baseline = float(eval_fn(model))
    if progress is not None:
        progress("float baseline", baseline)
    chosen, rows = sweep(evaluate, baseline, widths, error_margin, score_unit=score_unit)
    if chosen is None:
        final, score = base.replace(precision="float"), baseline
        detail = "no minifloat width within the margin: the model stays float"
    else:
        final = format_config(chosen)
        score = next(s for bw, s, _ in rows if bw == chosen)
        detail = f"minifloat: exp_bits {exp_bits}, mant_bits {chosen - exp_bits - 1}"
    return SearchResult(
        baseline=baseline, rows=tuple(SearchRow("minifloat", bw, s, ok) for bw, s, ok in rows),
        bitwidths={"minifloat": chosen}, config=final, score=score,
        error_margin=float(error_margin), score_unit=score_unit, detail=detail,
    )
