"""Keras 3 quantizers: the tf_keras quantizers of :mod:`kerasq.schemes.quantizers`, on
``keras.ops`` (TensorFlow and JAX backends).

Each class takes exactly the config of its tf_keras namesake (``from_config(q.get_config())``)
and keeps the same state under the same keys, so a Keras 3 model and its tf_keras twin
(:mod:`kerasq.keras3.twin`) exchange state variable by variable:

* activations (:class:`DFPActivationQuantizer`): ``min``, ``max``, ``frac_bits``, ``scale``,
  ``offset``, ``count``; training folds each batch into the range (the quantizer's
  ``range_estimator``) and quantizes with the range including it; inference uses the stored
  fl (``half_up``: TF's FakeQuant form, float until calibrated or trained);
* DFP weights: ``frac_bits``/``min``/``max`` per channel (or per tensor), refreshed on every
  training step; ``count``;
* minifloat / pow2: ``count`` only; accumulator bias: ``frac_bits``, ``linked``, ``count``;
* :class:`SparsityPreservingQuantizer`: ``mask``, ``mask_ready`` and the inner state under
  ``inner``.

The math is :mod:`kerasq.keras3.qops` (the formulas of :mod:`kerasq.numerics`); gradients
are straight-through.

Example:
    >>> q = DFPWeightQuantizer(bitwidth=4, channel_axes=(-1,))  # doctest: +SKIP
"""

from __future__ import annotations

import abc

from typing import Any, Dict, Optional, Tuple

import numpy as np

from kerasq._compat import keras3
from kerasq.keras3 import qops
from kerasq.numerics.grid import channel_shape, integer_range, reduce_axes
from kerasq.numerics.rounding import DEFAULT_ROUNDING

keras = keras3()
ops = keras.ops
_register = keras.saving.register_keras_serializable(package="kerasq")


def _val(x: Any) -> Any:
    """The current value of a Keras variable (JAX's ops refuse Variable objects)."""
    return x.value if hasattr(x, "assign") and hasattr(x, "value") else x


def _scalar(layer: Any, name: str, dtype: str = "float32", shape: Tuple[int, ...] = (),
            aggregation: str = "none") -> Any:
    """A state variable. ``aggregation`` is the tf_keras namesake's, for tf.distribute:
    "mean" for ranges and grids (every replica's update averaged, the copies stay equal),
    "only_first_replica" for counters and linked grids."""
    return layer.add_weight(name=name, shape=shape, dtype=dtype, initializer="zeros",
                            trainable=False, aggregation=aggregation)


def _across_replicas(bmin: Any, bmax: Any) -> Tuple[Any, Any]:
    """(min, max) over every ``tf.distribute`` replica on the TensorFlow backend: the
    tf_keras quantizer's reduction (``kerasq.schemes.quantizers._across_replicas``), so
    every replica stores the range of the whole batch, not the mean of the replicas'
    ranges; identity on one replica and on other backends."""
    if keras.backend.backend() != "tensorflow":
        return bmin, bmax
    from kerasq.schemes.quantizers import _across_replicas as tf_across_replicas

    return tf_across_replicas(bmin, bmax)


class _Quantizer:
    """Common parts: rounding per phase, the ``count`` variable, config."""

    is_weight_quantizer = False

    def __init__(self, rounding: str = DEFAULT_ROUNDING, train_rounding: Optional[str] = None,
                 quantization_start: int = 0) -> None:
        self.rounding = rounding
        self.train_rounding = train_rounding
        self.quantization_start = int(quantization_start)

    def round_mode(self, training: bool) -> str:
        if not training:
            return self.rounding
        if self.is_weight_quantizer:
            return self.train_rounding or "stochastic"
        return self.train_rounding or self.rounding

    def get_config(self) -> Dict[str, Any]:
        return {"rounding": self.rounding, "train_rounding": self.train_rounding,
                "quantization_start": self.quantization_start}

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "_Quantizer":
        config = dict(config)
        if config.get("channel_axes") is not None:
            config["channel_axes"] = tuple(config["channel_axes"])
        return cls(**config)

    def build(self, layer: Any, name: str, shape: Tuple[int, ...]) -> Dict[str, Any]:
        return {"count": _scalar(layer, f"{name}_count", "int32",
                                 aggregation="only_first_replica")}

    def _gate(self, count: Any, x: Any, quantized: Any, extra: Any = None) -> Any:
        active = count >= self.quantization_start
        if extra is not None:
            active = ops.logical_and(active, extra)
        elif self.quantization_start == 0:
            return quantized
        return ops.where(active, quantized, x)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


@_register
class DFPActivationQuantizer(_Quantizer):
    """Per-tensor DFP for activations with the range from data (see the tf_keras class)."""

    def __init__(self, bitwidth: int = 8, rounding: str = DEFAULT_ROUNDING,
                 train_rounding: Optional[str] = None, signed: Optional[bool] = None,
                 power2_range: bool = True, apply_offset: bool = False,
                 range_estimator: str = "minmax", percentile: float = 99.99,
                 ema_update_factor: float = 0.01, range_expansion: float = 1.25,
                 frac_bits: Optional[int] = None, quantization_start: int = 0) -> None:
        super().__init__(rounding, train_rounding, quantization_start)
        self.bitwidth = int(bitwidth)
        self.signed = signed
        self.power2_range = bool(power2_range)
        self.apply_offset = bool(apply_offset)
        self.range_estimator = range_estimator
        self.percentile = float(percentile)
        self.ema_update_factor = float(ema_update_factor)
        self.range_expansion = float(range_expansion)
        self.frac_bits = frac_bits

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "bitwidth": self.bitwidth, "signed": self.signed,
                "power2_range": self.power2_range, "apply_offset": self.apply_offset,
                "range_estimator": self.range_estimator, "percentile": self.percentile,
                "ema_update_factor": self.ema_update_factor,
                "range_expansion": self.range_expansion, "frac_bits": self.frac_bits}

    def build(self, layer: Any, name: str, shape: Tuple[int, ...]) -> Dict[str, Any]:
        def mean(suffix: str) -> Any:
            return _scalar(layer, f"{name}_{suffix}", aggregation="mean")

        return {"min": mean("min"), "max": mean("max"), "frac_bits": mean("frac_bits"),
                "scale": mean("scale"), "offset": mean("offset"),
                **super().build(layer, name, shape)}

    def batch_range(self, x: Any) -> Tuple[Any, Any]:
        x = ops.reshape(ops.cast(x, "float32"), (-1,))
        if self.range_estimator == "percentile":
            s = ops.sort(x)
            n = ops.cast(ops.shape(s)[0] - 1, "float32")
            hi = ops.cast(ops.round(n * self.percentile / 100.0), "int32")
            lo = ops.cast(ops.round(n * (100.0 - self.percentile) / 100.0), "int32")
            return ops.minimum(ops.take(s, lo), 0.0), ops.take(s, hi)
        if self.range_estimator == "max_abs":
            return ops.min(x), ops.max(ops.abs(x))
        return ops.min(x), ops.max(x)

    def merged_range(self, x: Any, v: Dict[str, Any]) -> Tuple[Any, Any]:
        bmin, bmax = _across_replicas(*self.batch_range(x))
        first = _val(v["count"]) == 0
        if self.range_estimator == "ema":
            e, b = self.range_expansion, self.ema_update_factor
            return (ops.where(first, e * bmin, (1.0 - b) * _val(v["min"]) + b * e * bmin),
                    ops.where(first, e * bmax, (1.0 - b) * _val(v["max"]) + b * e * bmax))
        return (ops.where(first, bmin, ops.minimum(_val(v["min"]), bmin)),
                ops.where(first, bmax, ops.maximum(_val(v["max"]), bmax)))

    def is_unsigned(self, range_min: Any) -> Any:
        if self.signed is None:
            return range_min >= 0.0
        return ops.convert_to_tensor(not self.signed)

    def params_from_range(self, rmin: Any, rmax: Any) -> Tuple[Any, Any, Any]:
        b = self.bitwidth
        unsigned = self.is_unsigned(rmin)
        if self.range_estimator == "max_abs":
            a = ops.maximum(ops.abs(rmin), rmax)
        else:
            a = ops.maximum(ops.abs(rmin), ops.abs(rmax))
        zero = ops.zeros_like(a)
        if self.power2_range and not self.apply_offset:
            if self.frac_bits is not None:
                fl = zero + float(self.frac_bits)
            elif self.range_estimator == "max_abs":
                fl = qops.dfp_frac_bits(a, b, signed=False)
            else:
                fl_u = qops.dfp_frac_bits(a, b, signed=False)
                fl = ops.where(unsigned, fl_u, fl_u - 1.0)
            return fl, qops.pow2(fl), zero
        r = ops.maximum(ops.abs(rmax - rmin), 1e-30)
        if self.apply_offset:
            if self.power2_range:
                scale = qops.pow2(float(b) - _ceil_log2(r))
            else:
                scale = (2.0 ** b - 1.0) / r
            return zero, scale, -rmin * scale
        a = ops.maximum(a, 1e-30)
        scale = ops.where(unsigned, (2.0 ** b - 1.0) / a, (2.0 ** (b - 1) - 1.0) / a)
        return zero, scale, zero

    def quantize(self, x: Any, rmin: Any, params: Tuple[Any, Any, Any], rounding: str,
                 seed: Any) -> Any:
        fl, scale, offset = params
        unsigned = self.is_unsigned(rmin)
        if self.power2_range and not self.apply_offset:
            if rounding == "half_up" and self.bitwidth <= 16:
                return qops.fake_quant_dfp(x, self.bitwidth, fl, unsigned=unsigned)
            signed = bool(self.signed) if self.signed is not None else ops.logical_not(unsigned)
            return qops.dfp_quantize(x, self.bitwidth, fl, signed=signed, rounding=rounding,
                                     seed=seed)
        lo_s, hi_s = integer_range(self.bitwidth, True)
        lo_u, hi_u = integer_range(self.bitwidth, False)
        if self.apply_offset:
            return qops.affine_quantize(x, scale, offset, lo_u, hi_u, rounding=rounding,
                                        seed=seed)
        return qops.affine_quantize(x, scale, offset, ops.where(unsigned, lo_u, lo_s),
                                    ops.where(unsigned, hi_u, hi_s), rounding=rounding,
                                    seed=seed)

    def __call__(self, x: Any, training: bool, v: Dict[str, Any], seed: Any = None) -> Any:
        count = _val(v["count"])
        if training:
            new_min, new_max = self.merged_range(x, v)
            params = self.params_from_range(new_min, new_max)
            out = self._gate(count, x, self.quantize(x, new_min, params,
                                                     self.round_mode(True), seed))
            for key, value in zip(("min", "max", "frac_bits", "scale", "offset"),
                                  (new_min, new_max) + tuple(params)):
                v[key].assign(ops.cast(value, "float32"))
            v["count"].assign(count + 1)
            return out
        rounding = self.round_mode(False)
        if rounding == "half_up":
            stored = self.quantize(x, _val(v["min"]), (_val(v["frac_bits"]), _val(v["scale"]),
                                                       _val(v["offset"])), rounding, seed)
            return self._gate(count, x, stored, extra=count > 0)
        xf = ops.cast(x, "float32")
        has_range = count > 0
        bmax = ops.max(ops.abs(xf) if self.range_estimator == "max_abs" else xf)
        rmin = ops.where(has_range, _val(v["min"]), ops.min(xf))
        rmax = ops.where(has_range, _val(v["max"]), bmax)
        return self._gate(count, x, self.quantize(x, rmin, self.params_from_range(rmin, rmax),
                                                  rounding, seed))


def _ceil_log2(v: Any) -> Any:
    v = ops.maximum(ops.cast(v, "float32"), 1e-30)
    e = qops.floor_log2(v)
    return ops.where(qops.pow2(e) == v, e, e + 1.0)


class _WeightQuantizer(_Quantizer, abc.ABC):
    is_weight_quantizer = True
    preserves_zero = True

    @abc.abstractmethod
    def fake_quantize(self, w: Any, v: Dict[str, Any], rounding: str, seed: Any) -> Any:
        """The fake-quantized weights ``w`` (``v``: this quantizer's state variables)."""

    def refresh(self, w: Any, v: Dict[str, Any]) -> Any:
        """Refresh the stored state from the current weights; returns what
        ``fake_quantize`` may reuse as ``fresh`` (None by default)."""
        return None

    def __call__(self, w: Any, training: bool, v: Dict[str, Any], seed: Any = None) -> Any:
        count = _val(v["count"])
        if training:
            fresh = self.refresh(w, v)
            out = self._gate(count, w, self.fake_quantize(w, v, self.round_mode(True), seed,
                                                          fresh=fresh if fresh is not None
                                                          else True))
            v["count"].assign(count + 1)
            return out
        return self._gate(count, w, self.fake_quantize(w, v, self.round_mode(False), seed))


@_register
class DFPWeightQuantizer(_WeightQuantizer):
    """DFP weights, fl = B - ceil(log2 max|w|) - 1 per channel (``channel_axes``) or tensor."""

    def __init__(self, bitwidth: int = 8, rounding: str = DEFAULT_ROUNDING,
                 train_rounding: Optional[str] = None,
                 channel_axes: Optional[Tuple[int, ...]] = (-1,), power2_range: bool = True,
                 apply_offset: bool = False, frac_bits: Optional[int] = None,
                 quantization_start: int = 0) -> None:
        super().__init__(rounding, train_rounding, quantization_start)
        self.bitwidth = int(bitwidth)
        self.channel_axes = tuple(channel_axes) if channel_axes is not None else None
        self.power2_range = bool(power2_range)
        self.apply_offset = bool(apply_offset)
        self.frac_bits = frac_bits
        self.preserves_zero = not self.apply_offset

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "bitwidth": self.bitwidth,
                "channel_axes": list(self.channel_axes) if self.channel_axes else None,
                "power2_range": self.power2_range, "apply_offset": self.apply_offset,
                "frac_bits": self.frac_bits}

    def _reduce_axes(self, rank: int) -> list:
        return reduce_axes(rank, self.channel_axes)

    def _channel_shape(self, shape: Tuple[int, ...]) -> Tuple[int, ...]:
        return channel_shape(shape, self.channel_axes)

    def build(self, layer: Any, name: str, shape: Tuple[int, ...]) -> Dict[str, Any]:
        cshape = self._channel_shape(tuple(shape))
        return {**super().build(layer, name, shape),
                "frac_bits": _scalar(layer, f"{name}_frac_bits", shape=cshape,
                                     aggregation="mean"),
                "min": _scalar(layer, f"{name}_min", shape=cshape, aggregation="mean"),
                "max": _scalar(layer, f"{name}_max", shape=cshape, aggregation="mean")}

    def params(self, w: Any) -> Tuple[Any, Any, Any, Any, Any]:
        axes = tuple(self._reduce_axes(len(w.shape)))
        wmin = ops.min(w, axis=axes, keepdims=True)
        wmax = ops.max(w, axis=axes, keepdims=True)
        a = ops.maximum(ops.abs(wmin), ops.abs(wmax))
        b = self.bitwidth
        zero = ops.zeros_like(a)
        if self.power2_range and not self.apply_offset:
            if self.frac_bits is not None:
                fl = zero + float(self.frac_bits)
            else:
                fl = qops.dfp_frac_bits(a, b, signed=True)
            return fl, qops.pow2(fl), zero, wmin, wmax
        if self.apply_offset:
            r = ops.maximum(wmax - wmin, 1e-30)
            scale = qops.pow2(float(b) - _ceil_log2(r)) if self.power2_range \
                else (2.0 ** b - 1.0) / r
            return zero, scale, -wmin * scale, wmin, wmax
        a = ops.maximum(a, 1e-30)
        return zero, (2.0 ** (b - 1) - 1.0) / a, zero, wmin, wmax

    def refresh(self, w: Any, v: Dict[str, Any]) -> Any:
        params = self.params(ops.convert_to_tensor(w))
        fl, _, _, wmin, wmax = params
        for key, value in (("frac_bits", fl), ("min", wmin), ("max", wmax)):
            v[key].assign(ops.reshape(value, v[key].shape))
        return params  # fake_quantize uses them: the statistics are computed once per step

    def fake_quantize(self, w: Any, v: Dict[str, Any], rounding: str, seed: Any,
                      fresh: Any = False) -> Any:
        """``fresh``: True (compute the parameters from ``w``), or the parameters
        ``refresh`` just computed, or False (the stored fl where it is the grid)."""
        w = ops.convert_to_tensor(w)
        rank = len(w.shape)
        params = fresh if isinstance(fresh, tuple) else None
        if fresh is False and rounding == "half_up" and self.power2_range \
                and not self.apply_offset and self.frac_bits is None:
            reduce = set(self._reduce_axes(rank))
            keep = [1 if a in reduce else w.shape[a] for a in range(rank)]
            params = (ops.reshape(_val(v["frac_bits"]), keep), None, None, None, None)
        fl, scale, offset, _, _ = params if params is not None else self.params(w)
        if self.power2_range and not self.apply_offset:
            if rounding == "half_up" and self.bitwidth <= 16 and (
                    self.channel_axes is None or self.channel_axes == (-1,)):
                fl = ops.reshape(fl, (-1,)) if self.channel_axes else ops.reshape(fl, ())
                return qops.fake_quant_dfp(w, self.bitwidth, fl, unsigned=False)
            # fl as a scalar or one last axis (the tf_keras quantizer's shapes): the C++
            # kernel's per-tensor / per-channel forms, not its broadcasting fallback
            kept = sorted({a % rank for a in self.channel_axes or ()})
            if self.channel_axes is None:
                fl = ops.reshape(fl, ())
            elif kept == [rank - 1]:
                fl = ops.reshape(fl, (-1,))
            elif kept == list(range(rank - len(kept), rank)) and len(kept) > 1 \
                    and all(isinstance(d, int) for d in w.shape):
                last = int(np.prod(w.shape[rank - len(kept):]))
                q = qops.dfp_quantize(ops.reshape(w, (-1, last)), self.bitwidth,
                                      ops.reshape(fl, (-1,)), signed=True, rounding=rounding,
                                      seed=seed)
                return ops.reshape(q, w.shape)
            return qops.dfp_quantize(w, self.bitwidth, fl, signed=True, rounding=rounding,
                                     seed=seed)
        qmin, qmax = integer_range(self.bitwidth, not self.apply_offset)
        return qops.affine_quantize(w, scale, offset, qmin, qmax, rounding=rounding, seed=seed)


@_register
class BiasQuantizer(DFPWeightQuantizer):
    """Per-tensor DFP for biases with ``bitwidth_bias`` bits."""

    def __init__(self, bitwidth: int = 16, rounding: str = DEFAULT_ROUNDING,
                 train_rounding: Optional[str] = None, channel_axes: Any = None,
                 power2_range: bool = True, apply_offset: bool = False,
                 frac_bits: Optional[int] = None, quantization_start: int = 0) -> None:
        super().__init__(bitwidth, rounding, train_rounding, None, True, False, frac_bits,
                         quantization_start)


@_register
class AccumulatorBiasQuantizer(_WeightQuantizer):
    """32-bit bias on the accumulator grid fl = fl_in + fl_w (filled by the tf_keras twin's
    ``link_accumulator_biases``); float until ``linked``."""

    def get_config(self) -> Dict[str, Any]:
        return super().get_config()

    def build(self, layer: Any, name: str, shape: Tuple[int, ...]) -> Dict[str, Any]:
        return {**super().build(layer, name, shape),
                "frac_bits": _scalar(layer, f"{name}_frac_bits", shape=tuple(shape)[-1:],
                                     aggregation="only_first_replica"),
                "linked": _scalar(layer, f"{name}_linked", aggregation="only_first_replica")}

    def fake_quantize(self, w: Any, v: Dict[str, Any], rounding: str, seed: Any,
                      fresh: bool = False) -> Any:
        q = qops.dfp_quantize(w, 32, _val(v["frac_bits"]), signed=True, rounding=rounding,
                              seed=seed)
        return ops.where(_val(v["linked"]) > 0, q, w)


@_register
class MinifloatQuantizer(_WeightQuantizer):
    """Ristretto minifloat (1 sign, ``exp_bits``, ``mant_bits``, no subnormals)."""

    def __init__(self, exp_bits: int = 5, mant_bits: int = 10, rounding: str = DEFAULT_ROUNDING,
                 train_rounding: Optional[str] = None, quantization_start: int = 0,
                 is_weight: bool = True) -> None:
        super().__init__(rounding, train_rounding, quantization_start)
        self.exp_bits = int(exp_bits)
        self.mant_bits = int(mant_bits)
        self.is_weight = bool(is_weight)
        self.is_weight_quantizer = self.is_weight

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "exp_bits": self.exp_bits, "mant_bits": self.mant_bits,
                "is_weight": self.is_weight}

    def fake_quantize(self, w: Any, v: Dict[str, Any], rounding: str, seed: Any,
                      fresh: bool = False) -> Any:
        return qops.minifloat_quantize(w, self.exp_bits, self.mant_bits, rounding=rounding,
                                       seed=seed)



@_register
class Pow2WeightQuantizer(_WeightQuantizer):
    """Ristretto power-of-two weights: sign(w)·2^clip(round(log2|w|)), 0 stays 0."""

    def __init__(self, exp_min: int = -8, exp_max: int = -1, rounding: str = DEFAULT_ROUNDING,
                 train_rounding: Optional[str] = None, quantization_start: int = 0) -> None:
        super().__init__(rounding, train_rounding, quantization_start)
        self.exp_min = int(exp_min)
        self.exp_max = int(exp_max)

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "exp_min": self.exp_min, "exp_max": self.exp_max}

    def fake_quantize(self, w: Any, v: Dict[str, Any], rounding: str, seed: Any,
                      fresh: bool = False) -> Any:
        return qops.pow2_quantize(w, self.exp_min, self.exp_max, rounding=rounding, seed=seed)


@_register
class SparsityPreservingQuantizer(_Quantizer):
    """A saved pruning mask around an inner weight quantizer: q = inner(w·m) [·(w·m != 0)].

    The mask starts as ``w != 0`` (set from the weights by ``quantize_model``, or on the
    first training step while ``mask_ready`` is 0) and is saved with the model.
    """

    is_weight_quantizer = True
    preserves_zero = True

    def __init__(self, inner: Any, remask_output: Optional[bool] = None) -> None:
        if isinstance(inner, dict):
            inner = keras.saving.deserialize_keras_object(inner)
        self.inner = inner
        self.remask_output = remask_output

    @property
    def reapplies_mask(self) -> bool:
        if self.remask_output is not None:
            return bool(self.remask_output)
        return not getattr(self.inner, "preserves_zero", False)

    def get_config(self) -> Dict[str, Any]:
        return {"inner": keras.saving.serialize_keras_object(self.inner),
                "remask_output": self.remask_output}

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "SparsityPreservingQuantizer":
        return cls(**config)

    def build(self, layer: Any, name: str, shape: Tuple[int, ...]) -> Dict[str, Any]:
        mask = layer.add_weight(name=f"{name}_mask", shape=tuple(shape), initializer="ones",
                                trainable=False)
        ready = _scalar(layer, f"{name}_mask_ready", "int32")
        return {"mask": mask, "mask_ready": ready, "inner": self.inner.build(layer, name, shape)}

    def __call__(self, w: Any, training: bool, v: Dict[str, Any], seed: Any = None) -> Any:
        w = ops.convert_to_tensor(w)
        m = ops.cast(_val(v["mask"]), w.dtype)
        if training:
            fresh = ops.cast(ops.not_equal(w, 0), w.dtype)
            m = ops.where(_val(v["mask_ready"]) <= 0, fresh, m)
            v["mask"].assign(m)
            v["mask_ready"].assign(ops.ones_like(_val(v["mask_ready"])))
        w_masked = w * ops.stop_gradient(m)
        q = self.inner(w_masked, training, v["inner"], seed)
        if self.reapplies_mask:
            q = q * ops.stop_gradient(ops.cast(ops.not_equal(w_masked, 0), q.dtype))
        return q


QUANTIZERS = {cls.__name__: cls for cls in (
    DFPActivationQuantizer, DFPWeightQuantizer, BiasQuantizer, AccumulatorBiasQuantizer,
    MinifloatQuantizer, Pow2WeightQuantizer, SparsityPreservingQuantizer)}


def from_tf_keras(quantizer: Any) -> Any:
    """The Keras 3 quantizer with the same class name and config as a tf_keras one."""
    from kerasq.errors import UnsupportedLayerError

    name = type(quantizer).__name__
    if name == "SparsityPreservingQuantizer":
        return SparsityPreservingQuantizer(from_tf_keras(quantizer.inner),
                                           quantizer.remask_output)
    if name not in QUANTIZERS:
        raise UnsupportedLayerError(f"quantizer {name} has no Keras 3 implementation")
    return QUANTIZERS[name].from_config(quantizer.get_config())


__all__ = list(QUANTIZERS) + ["from_tf_keras"]
