"""What grid a quantizer of a quantized Keras model puts its tensor on.

Export needs, for every fake-quantized tensor, the grid in deployable terms: a dynamic
fixed point grid ``{q·2^-fl : qmin <= q <= qmax}`` (any bit width, signed or unsigned,
per tensor or per channel), a power-of-two grid, or "not quantized". This module obtains
it without depending on a quantizer's private attributes:

* a quantizer may describe itself through ``export_spec(quantizer_vars) -> GridSpec``
  (:class:`kerasq.numerics.grid.GridSpec`; a dict of its fields is accepted too);
  kerasq's own quantizers do, others are handled below;
* weights: the grid is read from the already quantized values (the coarsest
  power-of-two step on which every value of a channel lies) unless the quantizer says it;
* activations: the quantizer is *probed* in inference mode: powers of two find the step
  and the saturation bounds, ramps of grid points, quarter-steps and ties check that it
  is a uniform fixed-point grid and which rounding it uses.

Example:
    >>> spec = GridSpec(kind="dfp", bitwidth=8, frac_bits=4, signed=True)
    >>> spec.step, spec.min_value, spec.max_value
    (0.0625, -8.0, 7.9375)
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np

from kerasq.errors import ExportError
from kerasq.numerics.grid import KINDS, FracBits, GridSpec  # noqa: F401 (re-exported)
from kerasq.numerics.minifloat import minifloat_quantize
from kerasq.numerics.rounding import ROUNDING_MODES, np_round

log = logging.getLogger("kerasq.export.spec")

_TFMOT_AFFINE = ("LastValueQuantizer", "MovingAverageQuantizer", "AllValuesQuantizer")
ROUNDINGS = ROUNDING_MODES


def _from_dict(data: Dict[str, Any]) -> GridSpec:
    fields = {f.name for f in dataclasses.fields(GridSpec)}
    unknown = set(data) - fields
    if unknown:
        raise ExportError(f"quantizer export_spec has unknown keys {sorted(unknown)}")
    spec = GridSpec(**data)
    if spec.kind not in KINDS:
        raise ExportError(f"quantizer export_spec has unknown kind {spec.kind!r}")
    return spec


def _declared_spec(quantizer: Any, quantizer_vars: Any) -> Optional[GridSpec]:
    """A spec the quantizer states itself (``export_spec``), else None."""
    method = getattr(quantizer, "export_spec", None)
    if callable(method):
        data = method(quantizer_vars)
        if data is not None:
            return data if isinstance(data, GridSpec) else _from_dict(dict(data))
    if type(quantizer).__name__ in _TFMOT_AFFINE and isinstance(quantizer_vars, dict):
        low, high = quantizer_vars.get("min_var"), quantizer_vars.get("max_var")
        if low is not None and high is not None and np.ndim(low.numpy()) == 0:
            return GridSpec(
                kind="affine",
                bitwidth=int(quantizer.num_bits),
                narrow=bool(quantizer.narrow_range),
                low=float(low.numpy()),
                high=float(high.numpy()),
            )
    inner = getattr(quantizer, "inner_quantizer", None) or getattr(quantizer, "quantizer", None)
    if inner is not None and inner is not quantizer:  # e.g. sparsity-preserving wrappers
        return _declared_spec(inner, quantizer_vars)
    return None


def _lowest_set_bit_exponent(values: np.ndarray) -> np.ndarray:
    """e such that v = m·2^e with odd integer m (for v != 0); +inf for zeros."""
    v = np.abs(values.astype(np.float64))
    mant, exp = np.frexp(v)  # v = mant·2^exp, 0.5 <= mant < 1
    ints = np.round(np.ldexp(mant, 53)).astype(np.int64)  # exact: 53-bit mantissa
    out = np.full(v.shape, np.inf)
    nz = ints != 0
    tz = np.zeros(v.shape, np.int64)
    rest = ints.copy()
    for _ in range(64):
        even = nz & (rest % 2 == 0) & (rest != 0)
        if not even.any():
            break
        tz[even] += 1
        rest[even] //= 2
    out[nz] = (exp[nz] - 53 + tz[nz]).astype(np.float64)
    return out


def weight_spec_from_values(
    values: np.ndarray, axis: Optional[int], *, max_bitwidth: int = 32
) -> GridSpec:
    """The coarsest signed DFP grid (per channel along ``axis``) holding every value exactly.

    ``fl_c = -min_e`` where every value of channel c is an integer multiple of 2^e; the
    bit width is the smallest that holds the largest code. Zeros-only channels get the
    largest fl of the other channels (any fl represents 0 exactly).

    Example:
        >>> weight_spec_from_values(np.array([[0.5, 0.25], [-0.75, 0.0]]), axis=-1).frac_bits
        array([2, 2], dtype=int32)
    """
    values = np.asarray(values, np.float64)
    if not np.all(np.isfinite(values)):
        raise ExportError("quantized weights contain inf or NaN")
    e = _lowest_set_bit_exponent(values)
    if axis is None:
        low = e.min() if e.size else np.inf
        fl = np.array(0 if not np.isfinite(low) else -int(low))
        codes = np.abs(np.ldexp(values, fl))
    else:
        axis = axis % values.ndim
        reduce_axes = tuple(i for i in range(values.ndim) if i != axis)
        low = e.min(axis=reduce_axes)
        finite = np.isfinite(low)
        fill = -int(low[finite].min()) if finite.any() else 0
        fl = np.where(finite, -np.where(finite, low, 0), fill).astype(np.int64)
        shape = [1] * values.ndim
        shape[axis] = -1
        codes = np.abs(np.ldexp(values, fl.reshape(shape)))
    codes_max = int(codes.max()) if codes.size else 0
    # signed grid holding codes in [-(2^(b-1)), 2^(b-1)-1]; negatives may reach -2^(b-1)
    bitwidth = 2
    while bitwidth < max_bitwidth and not _fits(values, fl, axis, bitwidth):
        bitwidth += 1
    if not _fits(values, fl, axis, bitwidth):
        raise ExportError(
            f"quantized weights need more than {max_bitwidth} bits (code {codes_max})"
        )
    fl = fl.astype(np.int32)
    return GridSpec(
        kind="dfp",
        bitwidth=bitwidth,
        frac_bits=fl if axis is not None else int(fl),
        signed=True,
        axis=axis,
    )


def _fits(values: np.ndarray, fl: np.ndarray, axis: Optional[int], bitwidth: int) -> bool:
    if axis is not None:
        shape = [1] * values.ndim
        shape[axis % values.ndim] = -1
        fl = fl.reshape(shape)
    codes = np.ldexp(values, fl)
    return bool(
        np.all(codes <= 2 ** (bitwidth - 1) - 1) and np.all(codes >= -(2 ** (bitwidth - 1)))
    )


def weight_spec(
    quantizer: Any, quantizer_vars: Any, quantized: np.ndarray, axis: Optional[int]
) -> GridSpec:
    """Grid of a quantized weight: the quantizer's own statement, else read from the values."""
    declared = _declared_spec(quantizer, quantizer_vars)
    if declared is not None:
        return declared
    if np.array_equal(quantized, np.asarray(quantized, np.float32)) and quantized.size == 0:
        return GridSpec(kind="none")
    return weight_spec_from_values(quantized, axis)


def _probe(fn: Callable[[np.ndarray], np.ndarray], x: Sequence[float]) -> np.ndarray:
    arr = np.asarray(x, np.float32)
    return np.asarray(fn(arr), np.float64).reshape(arr.shape)


def activation_spec(
    fn: Callable[[np.ndarray], np.ndarray],
    *,
    name: str = "",
    quantizer: Any = None,
    quantizer_vars: Any = None,
) -> GridSpec:
    """Find the grid of an activation quantizer ``fn`` (float32 1-D array in, same out).

    ``fn`` must be the quantizer in inference mode; a ``quantizer`` that states its grid
    (``export_spec``, or a tfmot min/max quantizer) is taken at its word (a declared
    ``"values"`` grid is probed). Probes: ±2^k for k in [-60, 60] give the saturation
    bounds and the step (the smallest non-zero output), the full code ramp (or a sample of
    it for > 2^18 codes) checks every grid point maps to itself and quarter-steps map to
    the nearest point; ties at ±2.5 and 3.5 steps give the rounding. Grids that are not
    fixed point are tried as power-of-two and as minifloat (E, M, subnormals, rounding
    probed, then checked on a log-uniform sample).
    Raises :class:`ExportError` if the quantizer is not a recognisable grid.
    """
    declared = _declared_spec(quantizer, quantizer_vars) if quantizer is not None else None
    if declared is not None and declared.kind == "minifloat":
        # a declared minifloat format is checked on samples; if it does not hold, probe
        if _minifloat_holds(fn, declared, name):
            return declared
        declared = None
    if declared is not None and declared.kind != "values":  # "values": probe it below
        return declared
    ks = np.arange(-60, 61)
    powers = np.ldexp(1.0, ks).astype(np.float32)
    zero = _probe(fn, [0.0])[0]
    pos = _probe(fn, powers)
    neg = _probe(fn, -powers)
    if zero != 0.0:
        raise ExportError(
            f"activation quantizer {name} does not map 0 to 0 (offset grids "
            "cannot be exported with power-of-two scales)"
        )
    if np.array_equal(pos, powers) and np.array_equal(neg, -powers):
        return GridSpec(kind="none")
    nonzero = pos[pos > 0]
    if nonzero.size == 0:
        raise ExportError(f"activation quantizer {name} maps every positive value to 0")
    step = float(nonzero.min())
    fl = -math.frexp(step)[1] + 1
    if math.ldexp(1.0, -fl) != step:
        raise ExportError(
            f"activation quantizer {name} has a step {step!r} that is not a power of two"
        )
    top = float(pos.max())
    bottom = float(neg.min())
    qmax = top / step
    qmin = bottom / step
    if qmax != int(qmax) or qmin != int(qmin):
        raise ExportError(
            f"activation quantizer {name}: range [{bottom}, {top}] is not on its grid 2^{-fl}"
        )
    qmax, qmin = int(qmax), int(qmin)
    signed = qmin < 0
    if signed:
        bitwidth = int(round(math.log2(qmax + 1))) + 1
        narrow = qmin == -qmax
        ok = qmax == 2 ** (bitwidth - 1) - 1 and (qmin == -(2 ** (bitwidth - 1)) or narrow)
    else:
        bitwidth = int(round(math.log2(qmax + 1)))
        narrow = False
        ok = qmax == 2**bitwidth - 1
    if not ok:
        return _pow2_or_values(fn, pos, neg, powers, name)
    spec = GridSpec(kind="dfp", bitwidth=bitwidth, frac_bits=fl, signed=signed, narrow=narrow)
    n_codes = qmax - qmin + 1
    if n_codes <= 2**18:
        codes = np.arange(qmin, qmax + 1, dtype=np.float64)
    else:
        rng = np.random.default_rng(0)
        codes = np.unique(
            np.concatenate(
                [
                    np.arange(qmin, qmin + 512),
                    np.arange(qmax - 511, qmax + 1),
                    np.arange(-512, 513),
                    rng.integers(qmin, qmax, 2**16),
                ]
            ).astype(np.float64)
        )
        codes = codes[(codes >= qmin) & (codes <= qmax)]
    grid = np.ldexp(codes, -fl)
    if not np.array_equal(_probe(fn, grid), grid):
        return _pow2_or_values(fn, pos, neg, powers, name)
    quarter = np.ldexp(codes + 0.25, -fl)
    if bitwidth <= 24 and not np.array_equal(_probe(fn, quarter), grid):
        return _pow2_or_values(fn, pos, neg, powers, name)
    return dataclasses.replace(spec, rounding=_probe_rounding(fn, spec, name))


def _probe_rounding(fn: Callable[[np.ndarray], np.ndarray], spec: GridSpec, name: str) -> str:
    if spec.qmax >= 4 and (not spec.signed or spec.qmin <= -4):
        ties = np.array([2.5, 3.5, -2.5, -3.5] if spec.signed else [2.5, 3.5])
    else:  # tiny grids (2-bit): ties at ±half a step
        ties = np.array([0.5, -0.5] if spec.signed else [0.5])
    x = np.ldexp(ties, -int(spec.frac_bits))
    first = _probe(fn, np.repeat(x, 64))
    second = _probe(fn, np.repeat(x, 64))
    if (
        not np.array_equal(first, second)
        or len(np.unique(first.reshape(len(ties), 64), axis=1)[0]) > 1
    ):
        log.warning(
            "activation quantizer %s rounds stochastically at inference; the "
            "export uses 'nearest' (ties away from zero)",
            name,
        )
        return "nearest"
    got = np.ldexp(first.reshape(len(ties), 64)[:, 0], int(spec.frac_bits))
    for mode in ("nearest", "half_up", "nearest_even"):
        if np.array_equal(got, np.clip(np_round(ties, mode), spec.qmin, spec.qmax)):
            return mode
    raise ExportError(f"activation quantizer {name}: unrecognised rounding of ties {got}")


def _pow2_or_values(fn, pos, neg, powers, name) -> GridSpec:
    outs = np.concatenate([pos, -neg])
    outs = outs[outs > 0]
    mant = np.frexp(outs)[0]
    if outs.size and np.all(mant == 0.5):
        # every output a power of two: check 3·2^k rounds to a power of two too
        probe = _probe(fn, 3.0 * powers[40:80])
        m = np.frexp(np.abs(probe[probe != 0]))[0]
        if np.all(m == 0.5):
            exps = np.frexp(outs)[1] - 1
            return GridSpec(
                kind="pow2",
                exp_min=int(exps.min()),
                exp_max=int(exps.max()),
                signed=bool(np.any(neg < 0)),
            )
    spec = _minifloat_spec(fn, pos, name)
    if spec is not None:
        return spec
    log.info("activation quantizer %s is not a fixed-point grid; treated as 'values'", name)
    return GridSpec(kind="values", signed=bool(np.any(neg < 0)))


def minifloat_reference(x: np.ndarray, spec: GridSpec) -> np.ndarray:
    """The minifloat grid of ``spec`` applied to ``x`` in float64 numpy: saturate to ±max,
    round the mantissa to M bits in x's binade (2^k <= |x| < 2^(k+1)), flush values below
    2^-bias to zero (or gradual underflow below 2^(1-bias) with subnormals); this is
    :func:`kerasq.numerics.minifloat_quantize`."""
    return minifloat_quantize(np.asarray(x, np.float64), spec.exp_bits, spec.mant_bits,
                              subnormals=spec.subnormals, rounding=spec.rounding)


def _minifloat_spec(
    fn: Callable[[np.ndarray], np.ndarray], pos: np.ndarray, name: str
) -> Optional[GridSpec]:
    """Find E, M, subnormals and rounding of a minifloat quantizer, then check it on a
    log-uniform sample; None if it is not one."""
    top = float(pos.max())
    mant_bits = 0
    while mant_bits < 23:
        probe = 1.0 + 2.0 ** -(mant_bits + 1)
        if _probe(fn, [probe])[0] != probe:
            break
        mant_bits += 1
    k_hi = math.frexp(top)[1] - 1
    if k_hi < 1 or k_hi & (k_hi - 1):
        return None
    exp_bits = int(math.log2(k_hi)) + 1
    bias = 2 ** (exp_bits - 1) - 1
    if top != (2.0 - 2.0**-mant_bits) * 2.0**k_hi:
        return None
    smallest = float(pos[pos > 0].min())
    subnormals = smallest < 2.0**-bias
    half = 2.0 ** -(mant_bits + 1)
    ties = np.array([1 + half, -(1 + half), 1 + 3 * half, -(1 + 3 * half)])
    got = _probe(fn, ties)
    rounding = None
    for mode in ("nearest", "half_up", "nearest_even"):
        candidate = GridSpec(
            kind="minifloat",
            exp_bits=exp_bits,
            mant_bits=mant_bits,
            subnormals=subnormals,
            rounding=mode,
        )
        if np.array_equal(minifloat_reference(ties, candidate), got):
            rounding = mode
            break
    if rounding is None:
        return None
    spec = GridSpec(
        kind="minifloat",
        exp_bits=exp_bits,
        mant_bits=mant_bits,
        subnormals=subnormals,
        rounding=rounding,
    )
    return spec if _minifloat_holds(fn, spec, name) else None


def _minifloat_holds(fn: Callable[[np.ndarray], np.ndarray], spec: GridSpec, name: str) -> bool:
    """True if ``fn`` equals :func:`minifloat_reference` for ``spec`` on 20 000
    log-uniform samples spanning every binade (and beyond) of the format."""
    bias = 2 ** (spec.exp_bits - 1) - 1
    k_hi = bias + 1  # Ristretto: no exponent code reserved for inf/NaN
    rng = np.random.default_rng(0)
    sample = (
        rng.choice([-1.0, 1.0], 20000)
        * np.exp2(rng.uniform(-bias - spec.mant_bits - 2, k_hi + 2, 20000))
    ).astype(np.float32)
    if not np.array_equal(_probe(fn, sample), minifloat_reference(sample, spec)):
        log.info("activation quantizer %s: minifloat E%dM%d hypothesis failed",
                 name, spec.exp_bits, spec.mant_bits)
        return False
    return True
