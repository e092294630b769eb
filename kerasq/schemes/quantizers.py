"""tfmot ``Quantizer`` classes: dynamic fixed point, minifloat and power-of-two weights.

Every quantizer keeps its state in variables of the wrapped layer, so it is saved with
the model (.h5 and SavedModel):

* ``count`` (int64): statistics batches seen (calibration batches and training steps).
  Fake quantization is active once ``count >= quantization_start``; before that the
  quantizer passes its input through in float and only collects statistics.
* activation quantizers: ``min``/``max``, the estimated range, and ``frac_bits``, the
  fractional length fl derived from it (power-of-two mode), or ``scale``/``offset``
  (caffe-jacinto's non-power-of-two mode);
* DFP weight quantizers: ``frac_bits`` (per output channel or per tensor) and
  ``min``/``max`` of the current weights; they are refreshed on every training step,
  by :func:`kerasq.calibrate` and by :func:`kerasq.quantize_model`.

Export reads ``bitwidth``, ``signed`` (None = unsigned iff ``min >= 0``), ``channel_axes``
and the variables above: an 8-bit DFP tensor is TFLite int8 with scale 2^-fl and zero
point 0 (signed) or -128 (unsigned). The quantizers' own graph is training and reference
arithmetic (``kerasq.ops`` kernels), not a TFLite-convertible form: the int8 (and float)
TFLite file is built by :func:`kerasq.export.to_tflite` from these grids, for every
rounding mode.

Example:
    >>> q = DFPWeightQuantizer(bitwidth=4, channel_axes=(-1,))  # doctest: +SKIP
    >>> qmodel = kerasq.quantize_model(model)  # builds these for every layer  # doctest: +SKIP
"""

from __future__ import annotations

import abc
import contextlib
import math
import threading
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from kerasq._compat import keras, tf, tfmot
from kerasq.numerics.grid import GridSpec, channel_shape, integer_range, reduce_axes
from kerasq.numerics.rounding import DEFAULT_ROUNDING
from kerasq.schemes import _backend

_Quantizer = tfmot().quantization.keras.quantizers.Quantizer
_MEAN = tf.VariableAggregation.MEAN
_FIRST = tf.VariableAggregation.ONLY_FIRST_REPLICA

_state = threading.local()

# The quantizers use tf.cond explicitly; autograph conversion would only cost build time.
_no_autograph = tf.autograph.experimental.do_not_convert


@contextlib.contextmanager
def calibration_mode() -> Iterator[None]:
    """While active (at trace time), quantizers collect statistics and pass values in float."""
    previous = getattr(_state, "calibrating", False)
    _state.calibrating = True
    try:
        yield
    finally:
        _state.calibrating = previous


def _calibrating() -> bool:
    return getattr(_state, "calibrating", False)


def _cond(pred: Any, true_fn: Any, false_fn: Any) -> Any:
    if isinstance(pred, (bool, int)):
        return true_fn() if pred else false_fn()
    return tf.cond(tf.cast(pred, tf.bool), true_fn, false_fn)


def _across_replicas(bmin: tf.Tensor, bmax: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
    """(min, max) over every replica of a ``tf.distribute`` strategy (identity on one).

    Each replica sees its own slice of the batch; without this every replica would store
    its own range and the MEAN-aggregated variables would hold the mean of the replicas'
    minima/maxima (and a non-integer fl). ``ReduceOp`` has no MIN/MAX, hence all_gather.
    """
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return bmin, bmax
    pair = tf.reshape(tf.stack([-tf.cast(bmin, tf.float32), tf.cast(bmax, tf.float32)]), [1, 2])
    extremes = tf.reduce_max(ctx.all_gather(pair, axis=0), axis=0)
    return -extremes[0], extremes[1]


def _ceil_log2(v: tf.Tensor) -> tf.Tensor:
    """ceil(log2 v), exact for powers of two (frexp-style, no float log error)."""
    v = tf.maximum(tf.cast(v, tf.float32), 1e-30)
    e = tf.floor(tf.math.log(v) / math.log(2.0))
    e = tf.where(tf.pow(2.0, e) > v, e - 1.0, e)
    e = tf.where(tf.pow(2.0, e + 1.0) <= v, e + 1.0, e)  # now 2^e <= v < 2^(e+1)
    return tf.where(tf.equal(tf.pow(2.0, e), v), e, e + 1.0)


class _KerasqQuantizer(_Quantizer):
    """Common parts: rounding per phase, the ``count`` variable, config and equality."""

    is_weight_quantizer = False

    def __init__(self, rounding: str = DEFAULT_ROUNDING, train_rounding: Optional[str] = None,
                 quantization_start: int = 0) -> None:
        self.rounding = rounding
        self.train_rounding = train_rounding
        self.quantization_start = int(quantization_start)

    def _round_mode(self, training: bool) -> str:
        if not training:
            return self.rounding
        if self.is_weight_quantizer:
            return self.train_rounding or "stochastic"
        return self.train_rounding or self.rounding

    def _add_count(self, name: str, layer: Any) -> tf.Variable:
        return layer.add_weight(name + "_count", shape=(), dtype=tf.int64,
                                initializer=keras.initializers.Zeros(), trainable=False,
                                aggregation=_FIRST)

    def get_config(self) -> Dict[str, Any]:
        return {"rounding": self.rounding, "train_rounding": self.train_rounding,
                "quantization_start": self.quantization_start}

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "_KerasqQuantizer":
        config = dict(config)
        if "channel_axes" in config and config["channel_axes"] is not None:
            config["channel_axes"] = tuple(config["channel_axes"])
        return cls(**config)

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return hash((type(self).__name__, repr(sorted(self.get_config().items()))))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


@keras.utils.register_keras_serializable(package="kerasq")
class DFPActivationQuantizer(_KerasqQuantizer):
    """Per-tensor dynamic fixed point for activations, with the range from data.

    x' = clip(round(x·2^fl), qmin, qmax)·2^-fl, fl = bitwidth - il. il comes from the
    tracked range: ceil(log2 max|x|) (+1 if signed), or Ristretto's ceil(log2 max|x|) for
    ``range_estimator="max_abs"``. ``signed=None``: unsigned [0, 2^B-1] iff the tracked
    min >= 0. ``power2_range=False`` or ``apply_offset=True``: caffe-jacinto's scale
    s = (2^(B-1)-1)/A (signed), (2^B-1)/A (unsigned) or (2^B-1)/(max-min) (offset), with
    offset o = -min·s: x' = (round(clip(x·s + o)) - o)/s.
    """

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

    def build(self, tensor_shape: Any, name: str, layer: Any) -> Dict[str, tf.Variable]:
        def scalar(suffix, dtype=tf.float32):
            return layer.add_weight(f"{name}_{suffix}", shape=(), dtype=dtype, trainable=False,
                                    initializer=keras.initializers.Zeros(), aggregation=_MEAN)
        return {"min": scalar("min"), "max": scalar("max"), "frac_bits": scalar("frac_bits"),
                "scale": scalar("scale"), "offset": scalar("offset"),
                "count": self._add_count(name, layer)}

    def export_spec(self, weights: Dict[str, tf.Variable]) -> Optional[GridSpec]:
        """The grid for export; None when the quantizer has no range yet or uses
        caffe-jacinto's non-power-of-two scales."""
        if not (self.power2_range and not self.apply_offset) or int(weights["count"].numpy()) == 0:
            return None
        unsigned = bool(self.is_unsigned(weights["min"]).numpy())
        fl = self.frac_bits if self.frac_bits is not None else int(weights["frac_bits"].numpy())
        return GridSpec(kind="dfp", bitwidth=self.bitwidth, frac_bits=int(fl),
                        signed=not unsigned, rounding=self.rounding)

    # ------------------------------------------------------------------ statistics
    def batch_range(self, x: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
        """(min, max) statistic of one batch for this quantizer's estimator."""
        x = tf.cast(x, tf.float32)
        if self.range_estimator == "percentile":
            s = tf.sort(tf.reshape(x, [-1]))
            n = tf.cast(tf.size(s) - 1, tf.float32)
            hi = tf.cast(tf.round(n * self.percentile / 100.0), tf.int32)
            lo = tf.cast(tf.round(n * (100.0 - self.percentile) / 100.0), tf.int32)
            return tf.minimum(tf.gather(s, lo), 0.0), tf.gather(s, hi)
        # one pass over x (kerasq.ops' RangeMinMax; the fallback is TF's two reductions).
        # max|x| = max(max x, -min x) needs no |x| temporary.
        bmin, bmax = _backend.range_min_max(x)
        if self.range_estimator == "max_abs":
            return bmin, tf.maximum(bmax, -bmin)
        return bmin, bmax

    def merged_range(self, x: tf.Tensor, weights: Dict[str, tf.Variable]
                     ) -> Tuple[tf.Tensor, tf.Tensor]:
        """The stored range with one more batch folded in (minmax/max_abs/percentile:
        running min and max; ema: caffe-jacinto r <- (1-b)·r + b·e·batch, first batch
        r = e·batch)."""
        first = tf.equal(weights["count"], 0)
        if self.range_estimator != "ema":
            # min(stored, batch), with ±inf standing in for "no range yet". Computed from
            # the variables alone, so it runs beside the reductions over x and leaves one
            # op per bound after them; tf.minimum/maximum propagate NaN, so the values are
            # those of where(first, batch, min(stored, batch)) for every input.
            lo = tf.where(first, math.inf, weights["min"])
            hi = tf.where(first, -math.inf, weights["max"])
            bmin, bmax = _across_replicas(*self.batch_range(x))
            return tf.minimum(lo, bmin), tf.maximum(hi, bmax)
        bmin, bmax = _across_replicas(*self.batch_range(x))
        e, b = self.range_expansion, self.ema_update_factor
        new_min = tf.where(first, e * bmin, (1.0 - b) * weights["min"] + b * e * bmin)
        new_max = tf.where(first, e * bmax, (1.0 - b) * weights["max"] + b * e * bmax)
        return new_min, new_max

    def _fused_range_applies(self) -> bool:
        # eager: numerics checks the values there; several replicas: the range is
        # all-gathered between the reduction and the merge.
        if (tf.executing_eagerly() or self.range_estimator not in ("minmax", "max_abs")
                or not self.power2_range or self.apply_offset or self.frac_bits is not None):
            return False
        ctx = tf.distribute.get_replica_context()
        return ctx is None or ctx.num_replicas_in_sync == 1

    def fused_range_update(self, x: tf.Tensor, weights: Dict[str, tf.Variable],
                           relu: bool = False) -> Any:
        """(new_min, new_max, (fl, scale, offset)) from one C++ op, or None where it does not
        apply: eager (numerics checks the values there), EMA/percentile estimators,
        non-power-of-two or fixed fl, several replicas (the range is all-gathered between
        the reduction and the merge) or no C++ library. Same values as
        ``merged_range`` + ``params_from_range``, which are the op's reference; in graph
        mode it replaces their ~20 scalar ops between the batch and the kernel.
        ``relu``: the range of max(x, 0)."""
        if not self._fused_range_applies():
            return None
        out = _backend.dfp_range_update(
            tf.cast(x, tf.float32), weights["count"], weights["min"], weights["max"],
            bitwidth=self.bitwidth, signed=self.signed,
            max_abs=self.range_estimator == "max_abs", relu=relu)
        if out is None:
            return None
        new_min, new_max, fl, scale = out
        return new_min, new_max, (fl, scale, tf.constant(0.0))

    def _range_step(self, x: tf.Tensor, weights: Dict[str, tf.Variable],
                    relu: bool = False) -> Any:
        fused = self.fused_range_update(x, weights, relu=relu)
        if fused is not None:
            return fused
        if relu:  # pragma: no cover - relu_input() returns a tensor only where fused applies
            raise AssertionError("a fused ReLU needs the fused range update")
        new_min, new_max = self.merged_range(x, weights)
        return new_min, new_max, self.params_from_range(new_min, new_max)

    def relu_input(self, inputs: tf.Tensor) -> Optional[tf.Tensor]:
        """t where ``inputs`` is ``tf.nn.relu(t)`` in a graph and this quantizer can take
        the ReLU into its kernels, else None.

        quantize(relu(t)) == quantize(t, relu=True) in value and gradient (the kernel
        clamps at 0 and passes dy where t > 0, as ReluGrad), and so is the range
        (max(min t, 0), max(max t, 0)). Reading t instead of relu(t) leaves the Relu op
        and its gradient without consumers, so the step skips two passes over the tensor.
        Graph mode only (an eager tensor has no producing op); power-of-two DFP with the
        fused range update and the C++ kernels.
        """
        op = getattr(inputs, "op", None)
        if (op is None or op.type != "Relu" or inputs.dtype != tf.float32
                or not self._fused_range_applies() or not _backend.custom_kernels_run()):
            return None
        return op.inputs[0]

    def _store(self, weights: Dict[str, tf.Variable], new_min: tf.Tensor, new_max: tf.Tensor,
               params: Sequence[tf.Tensor]) -> List[Any]:
        return [weights["min"].assign(new_min), weights["max"].assign(new_max),
                weights["frac_bits"].assign(params[0]), weights["scale"].assign(params[1]),
                weights["offset"].assign(params[2])]

    def update_range(self, x: tf.Tensor, weights: Dict[str, tf.Variable]) -> tf.Operation:
        """Fold one batch into the stored range and store the derived fl/scale/offset."""
        new_min, new_max, params = self._range_step(x, weights)
        return tf.group(self._store(weights, new_min, new_max, params))

    def is_unsigned(self, range_min: tf.Tensor) -> tf.Tensor:
        if self.signed is None:
            return tf.greater_equal(range_min, 0.0)
        return tf.constant(not self.signed)

    def params_from_range(self, range_min: tf.Tensor, range_max: tf.Tensor
                          ) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """(frac_bits, scale, offset) for a range; scale = 2^fl, offset 0 in DFP mode."""
        b = self.bitwidth
        unsigned = self.is_unsigned(range_min)
        if self.range_estimator == "max_abs":
            a = tf.maximum(tf.abs(range_min), range_max)
        else:
            a = tf.maximum(tf.abs(range_min), tf.abs(range_max))
        if self.power2_range and not self.apply_offset:
            if self.frac_bits is not None:
                fl = tf.constant(float(self.frac_bits))
            elif self.range_estimator == "max_abs":  # Ristretto: il = ceil(log2 max|x|)
                fl = _backend.dfp_frac_bits(a, b, signed=False)
            else:  # il = ceil(log2 A) + 1 signed, + 0 unsigned
                fl_unsigned = _backend.dfp_frac_bits(a, b, signed=False)
                fl = tf.where(unsigned, fl_unsigned, fl_unsigned - 1.0)
            return fl, tf.pow(2.0, fl), tf.constant(0.0)
        r = tf.maximum(tf.abs(range_max - range_min), 1e-30)
        if self.apply_offset:
            if self.power2_range:
                scale = tf.pow(2.0, b - _ceil_log2(r))
            else:
                scale = (2.0 ** b - 1.0) / r
            return tf.constant(0.0), scale, -range_min * scale
        if self.power2_range:  # pragma: no cover - handled above
            raise AssertionError
        a = tf.maximum(a, 1e-30)
        scale = tf.where(unsigned, (2.0 ** b - 1.0) / a, (2.0 ** (b - 1) - 1.0) / a)
        return tf.constant(0.0), scale, tf.constant(0.0)

    # ------------------------------------------------------------------- forward
    def quantize(self, x: tf.Tensor, range_min: tf.Tensor, params: Sequence[tf.Tensor],
                 rounding: str, relu: bool = False) -> tf.Tensor:
        """Fake-quantize ``x`` (``relu``: max(x, 0), power-of-two DFP only) with a given
        range minimum and (frac_bits, scale, offset)."""
        fl, scale, offset = params
        unsigned = self.is_unsigned(range_min)
        if self.power2_range and not self.apply_offset:
            fl = tf.cast(fl, tf.int32)  # once, outside the branches

            def dfp(is_signed):
                return _backend.dfp_quantize(x, self.bitwidth, fl, signed=is_signed,
                                             rounding=rounding, relu=relu)
            if self.signed is None:
                # the signedness as data: one kernel that reads it (the fallback: a cond
                # between the two grids). NaN range: signed, as the cond's predicate.
                return dfp(tf.logical_not(unsigned))
            return dfp(bool(self.signed))
        if self.apply_offset:
            qmin, qmax = integer_range(self.bitwidth, False)
            return _backend.affine_quantize(x, scale, offset, qmin, qmax, rounding=rounding)
        lo_s, hi_s = integer_range(self.bitwidth, True)
        lo_u, hi_u = integer_range(self.bitwidth, False)
        qmin = tf.where(unsigned, lo_u, lo_s)
        qmax = tf.where(unsigned, hi_u, hi_s)
        return _backend.affine_quantize(x, scale, offset, qmin, qmax, rounding=rounding)

    @_no_autograph
    def __call__(self, inputs: tf.Tensor, training: Any, weights: Dict[str, tf.Variable],
                 **kwargs: Any) -> tf.Tensor:
        count = weights["count"]
        if _calibrating():
            with tf.control_dependencies([self.update_range(inputs, weights)]):
                with tf.control_dependencies([count.assign_add(1)]):
                    return tf.identity(inputs)

        def gated(active, quantized):
            if self.quantization_start == 0:
                return quantized()
            return _cond(active, quantized, lambda: tf.identity(inputs))

        pre_relu = self.relu_input(inputs)
        x, relu = (inputs, False) if pre_relu is None else (pre_relu, True)

        def train_branch():
            active = count >= self.quantization_start
            new_min, new_max, params = self._range_step(x, weights, relu=relu)
            # The quantized value reads new_min/params, not the variables: the state writes
            # need no control edge to it (tf.function and cond branches run every stateful
            # op), so the kernel starts without waiting for six assignments.
            self._store(weights, new_min, new_max, params)
            count.assign_add(1)
            return gated(active, lambda: self.quantize(
                x, new_min, params, self._round_mode(True), relu=relu))

        def stored_range():
            return tf.identity(weights["min"]), tf.identity(weights["max"])

        def batch_min_max():
            x = tf.cast(inputs, tf.float32)
            bmin, bmax = _backend.range_min_max(x)
            return bmin, (tf.maximum(bmax, -bmin) if self.range_estimator == "max_abs" else bmax)

        def infer_branch():
            # the stored range; never calibrated nor trained: this batch's min/max (a cond,
            # so a calibrated model does not reduce over every activation at inference)
            range_min, range_max = _cond(count > 0, stored_range, batch_min_max)
            return gated(count >= self.quantization_start, lambda: self.quantize(
                x, range_min, self.params_from_range(range_min, range_max),
                self._round_mode(False), relu=relu))

        return _cond(training, train_branch, infer_branch)


class _WeightQuantizerBase(_KerasqQuantizer):
    is_weight_quantizer = True

    def build(self, tensor_shape: Any, name: str, layer: Any) -> Dict[str, tf.Variable]:
        return {"count": self._add_count(name, layer)}

    @abc.abstractmethod
    def fake_quantize(self, w: tf.Tensor, weights: Dict[str, tf.Variable],
                      rounding: str) -> tf.Tensor:
        """Return ``w`` on this quantizer's grid, rounded with ``rounding``."""

    def update_state(self, w: tf.Tensor, weights: Dict[str, tf.Variable]) -> Any:
        """Refresh export-facing variables from the current weights (no-op by default)."""
        return tf.no_op()

    def train_quantize(self, w: tf.Tensor, weights: Dict[str, tf.Variable], rounding: str
                       ) -> tf.Tensor:
        """One training step: refresh the state, then fake-quantize."""
        with tf.control_dependencies([self.update_state(w, weights)]):
            return self.fake_quantize(w, weights, rounding)

    @_no_autograph
    def __call__(self, inputs: tf.Tensor, training: Any, weights: Dict[str, tf.Variable],
                 **kwargs: Any) -> tf.Tensor:
        count = weights["count"]
        if _calibrating():
            with tf.control_dependencies([self.update_state(inputs, weights)]):
                with tf.control_dependencies([count.assign_add(1)]):
                    return tf.identity(inputs)

        def gated(active, quantized):
            if self.quantization_start == 0:
                return quantized()
            return _cond(active, quantized, lambda: tf.identity(inputs))

        def train_branch():
            active = count >= self.quantization_start
            count.assign_add(1)  # no control edge needed: nothing here reads count after it
            return gated(active, lambda: self.train_quantize(
                inputs, weights, self._round_mode(True)))

        def infer_branch():
            return gated(count >= self.quantization_start, lambda: self.fake_quantize(
                inputs, weights, self._round_mode(False)))

        return _cond(training, train_branch, infer_branch)


@keras.utils.register_keras_serializable(package="kerasq")
class DFPWeightQuantizer(_WeightQuantizerBase):
    """Dynamic fixed point for weights (always signed), fl from the current weights.

    il = ceil(log2 max|w|) + 1 (Ristretto's ``il_params`` and caffe-jacinto's power-of-two
    rule), fl = bitwidth - il, per output channel (``channel_axes``, the axes that are
    kept) or per tensor (``channel_axes=None``). ``power2_range=False``: caffe-jacinto's
    s = (2^(B-1)-1)/max|w|; ``apply_offset=True``: s = (2^B-1)/(max-min), o = -min·s.
    """

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
        self.signed = True

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "bitwidth": self.bitwidth,
                "channel_axes": list(self.channel_axes) if self.channel_axes else None,
                "power2_range": self.power2_range, "apply_offset": self.apply_offset,
                "frac_bits": self.frac_bits}

    @property
    def preserves_zero(self) -> bool:
        """0 maps to 0 exactly unless an offset is applied."""
        return not self.apply_offset

    def _reduce_axes(self, rank: int) -> list:
        return reduce_axes(rank, self.channel_axes)

    def _channel_shape(self, shape: Sequence[int]) -> Tuple[int, ...]:
        return channel_shape(shape, self.channel_axes)

    def build(self, tensor_shape: Any, name: str, layer: Any) -> Dict[str, tf.Variable]:
        shape = self._channel_shape(list(tensor_shape))

        def var(suffix):
            return layer.add_weight(f"{name}_{suffix}", shape=shape, dtype=tf.float32,
                                    trainable=False, initializer=keras.initializers.Zeros(),
                                    aggregation=_MEAN)
        return {**super().build(tensor_shape, name, layer), "frac_bits": var("frac_bits"),
                "min": var("min"), "max": var("max")}

    def params(self, w: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        """(frac_bits, scale, offset, min, max), broadcastable against ``w``."""
        w = tf.convert_to_tensor(w)
        axes = self._reduce_axes(w.shape.rank)
        wmin = tf.reduce_min(w, axis=axes, keepdims=True)
        wmax = tf.reduce_max(w, axis=axes, keepdims=True)
        a = tf.maximum(tf.abs(wmin), tf.abs(wmax))
        b = self.bitwidth
        if self.power2_range and not self.apply_offset:
            if self.frac_bits is not None:
                fl = tf.fill(tf.shape(a), float(self.frac_bits))
            else:  # il = ceil(log2 max|w|) + 1: Ristretto's il_params, caffe-jacinto's pow2
                fl = _backend.dfp_frac_bits(a, b, signed=True)
            return fl, tf.pow(2.0, fl), tf.zeros_like(fl), wmin, wmax
        if self.apply_offset:
            r = tf.maximum(wmax - wmin, 1e-30)
            scale = tf.pow(2.0, b - _ceil_log2(r)) if self.power2_range else (2.0 ** b - 1.0) / r
            return tf.zeros_like(a), scale, -wmin * scale, wmin, wmax
        a = tf.maximum(a, 1e-30)
        return tf.zeros_like(a), (2.0 ** (b - 1) - 1.0) / a, tf.zeros_like(a), wmin, wmax

    def _assign_state(self, params: Sequence[tf.Tensor], weights: Dict[str, tf.Variable]
                      ) -> List[Any]:
        fl, _, _, wmin, wmax = params
        shape = weights["frac_bits"].shape
        return [weights["frac_bits"].assign(tf.reshape(fl, shape)),
                weights["min"].assign(tf.reshape(wmin, shape)),
                weights["max"].assign(tf.reshape(wmax, shape))]

    def update_state(self, w: tf.Tensor, weights: Dict[str, tf.Variable]) -> Any:
        return tf.group(self._assign_state(self.params(w), weights))

    def export_spec(self, weights: Dict[str, tf.Variable]) -> Optional[GridSpec]:
        """Signed DFP grid with the stored fl (per channel along ``axis``); None for
        caffe-jacinto's non-power-of-two scales or a multi-axis channel layout."""
        if not (self.power2_range and not self.apply_offset):
            return None
        fl = np.asarray(weights["frac_bits"].numpy()).astype(np.int64)
        if self.frac_bits is not None:
            fl = np.full(fl.shape, self.frac_bits, np.int64)
        axis: Optional[int] = None
        if self.channel_axes is not None:
            axes = self.channel_axes
            if len(axes) == 2 and fl.ndim == 2 and fl.shape[1] == 1:  # depthwise, multiplier 1
                fl, axes = fl[:, 0], (axes[0],)
            if len(axes) != 1:
                return None
            axis = axes[0]
        return GridSpec(kind="dfp", bitwidth=self.bitwidth, signed=True, rounding=self.rounding,
                        axis=axis, frac_bits=fl if axis is not None else int(fl.reshape(-1)[0]))

    def _fused_train_quantize(self, w: tf.Tensor, weights: Dict[str, tf.Variable],
                              rounding: str) -> Optional[tf.Tensor]:
        """The training step in one C++ op (``kerasq.ops.fake_quant_dfp_weights``: range,
        fl and fake quantization), or None where it does not apply: eager (numerics checks
        the values there), fixed fl, caffe-jacinto's scales, channel axes that are not the
        trailing ones, or no C++ kernels. Same values as ``params`` + ``fake_quantize``."""
        w = tf.convert_to_tensor(w)
        if (tf.executing_eagerly() or not self.power2_range or self.apply_offset
                or self.frac_bits is not None or w.dtype != tf.float32
                or not w.shape.is_fully_defined() or w.shape.rank == 0):
            return None
        rank = w.shape.rank
        kept = sorted({a % rank for a in self.channel_axes or ()})
        if kept and kept != list(range(rank - len(kept), rank)):
            return None
        flat = w if len(kept) <= 1 else tf.reshape(w, [-1, int(np.prod(w.shape[-len(kept):]))])
        out = _backend.dfp_weight_quantize(flat, self.bitwidth, per_channel=bool(kept),
                                           rounding=rounding)
        if out is None:
            return None
        y, fl, w_min, w_max = out
        shape = weights["frac_bits"].shape
        for name, value in (("frac_bits", fl), ("min", w_min), ("max", w_max)):
            weights[name].assign(value if value.shape == shape else tf.reshape(value, shape))
        return y if len(kept) <= 1 else tf.reshape(y, w.shape)

    def train_quantize(self, w: tf.Tensor, weights: Dict[str, tf.Variable], rounding: str
                       ) -> tf.Tensor:
        fused = self._fused_train_quantize(w, weights, rounding)
        if fused is not None:
            return fused
        params = self.params(w)
        self._assign_state(params, weights)  # fake_quantize reads params, not the variables
        return self.fake_quantize(w, weights, rounding, params=params)

    def fake_quantize(self, w: tf.Tensor, weights: Dict[str, tf.Variable],
                      rounding: str, params: Any = None) -> tf.Tensor:
        fl, scale, offset, _, _ = params if params is not None else self.params(w)
        if self.power2_range and not self.apply_offset:
            w = tf.convert_to_tensor(w)
            rank = w.shape.rank
            kept = sorted({a % rank for a in self.channel_axes or ()})
            if self.channel_axes is None:  # a scalar fl: the C++ kernel's per-tensor form
                fl = tf.reshape(fl, [])
            elif kept == list(range(rank - len(kept), rank)) and len(kept) > 1 \
                    and w.shape.is_fully_defined():
                # trailing channel axes (depthwise [kh, kw, C, M]): as one last axis, so the
                # C++ kernel's per-channel form runs instead of the broadcasting fallback
                flat = tf.reshape(w, [-1, int(np.prod(w.shape[rank - len(kept):]))])
                q = _backend.dfp_quantize(flat, self.bitwidth, tf.reshape(fl, [-1]),
                                          signed=True, rounding=rounding)
                return tf.reshape(q, w.shape)
            elif kept == [rank - 1]:
                fl = tf.reshape(fl, [-1])
            return _backend.dfp_quantize(w, self.bitwidth, fl, signed=True, rounding=rounding)
        qmin, qmax = integer_range(self.bitwidth, not self.apply_offset)
        return _backend.affine_quantize(w, scale, offset, qmin, qmax, rounding=rounding)


@keras.utils.register_keras_serializable(package="kerasq")
class BiasQuantizer(DFPWeightQuantizer):
    """Per-tensor DFP for biases with ``bitwidth_bias`` bits (fl from max|b|)."""

    def __init__(self, bitwidth: int = 16, rounding: str = DEFAULT_ROUNDING,
                 train_rounding: Optional[str] = None, channel_axes: Any = None,
                 power2_range: bool = True, apply_offset: bool = False,
                 frac_bits: Optional[int] = None, quantization_start: int = 0) -> None:
        super().__init__(bitwidth, rounding, train_rounding, None, True, False, frac_bits,
                         quantization_start)


@keras.utils.register_keras_serializable(package="kerasq")
class AccumulatorBiasQuantizer(_WeightQuantizerBase):
    """32-bit bias on the accumulator grid: b' = clip(round(b·2^fl), ±2^31)·2^-fl with
    fl = fl_in + fl_w per output channel, the scale s_in·s_w of TFLite's int32 bias.

    fl_in (the layer's input grid) is not visible to a weight quantizer: the ``frac_bits``
    variable is filled by :func:`kerasq.schemes.shared_grids.link_accumulator_biases`
    (run by the int8 export and by ``SharedGridCallback``), which also sets ``linked``.
    Until then the bias passes through in float, as an unquantized 32-bit bias.
    """

    def __init__(self, rounding: str = DEFAULT_ROUNDING, train_rounding: Optional[str] = None,
                 quantization_start: int = 0) -> None:
        super().__init__(rounding, train_rounding, quantization_start)
        self.bitwidth = 32
        self.signed = True
        self.channel_axes = (-1,)

    preserves_zero = True

    def build(self, tensor_shape: Any, name: str, layer: Any) -> Dict[str, tf.Variable]:
        def var(suffix, shape):
            return layer.add_weight(f"{name}_{suffix}", shape=shape, dtype=tf.float32,
                                    trainable=False, initializer=keras.initializers.Zeros(),
                                    aggregation=_FIRST)
        return {**super().build(tensor_shape, name, layer),
                "frac_bits": var("frac_bits", tuple(tensor_shape)[-1:]),
                "linked": var("linked", ())}

    def export_spec(self, weights: Dict[str, tf.Variable]) -> Optional[GridSpec]:
        """Signed 32-bit DFP along the last axis once linked, else None (float bias)."""
        if float(weights["linked"].numpy()) <= 0:
            return None
        return GridSpec(kind="dfp", bitwidth=32, signed=True, rounding=self.rounding, axis=-1,
                        frac_bits=np.asarray(weights["frac_bits"].numpy()).astype(np.int64))

    def fake_quantize(self, w: tf.Tensor, weights: Dict[str, tf.Variable],
                      rounding: str) -> tf.Tensor:
        fl = tf.cast(weights["frac_bits"], tf.int32)
        quantized = _backend.dfp_quantize(w, 32, fl, signed=True, rounding=rounding)
        return tf.where(weights["linked"] > 0, quantized, w)


@keras.utils.register_keras_serializable(package="kerasq")
class MinifloatQuantizer(_WeightQuantizerBase):
    """Ristretto minifloat: 1 sign, ``exp_bits`` exponent (bias 2^(E-1)-1), ``mant_bits``
    mantissa bits, no denormals, saturating, for weights and activations."""

    def __init__(self, exp_bits: int = 5, mant_bits: int = 10, rounding: str = DEFAULT_ROUNDING,
                 train_rounding: Optional[str] = None, quantization_start: int = 0,
                 is_weight: bool = True) -> None:
        super().__init__(rounding, train_rounding, quantization_start)
        self.exp_bits = int(exp_bits)
        self.mant_bits = int(mant_bits)
        self.is_weight = bool(is_weight)
        self.is_weight_quantizer = self.is_weight

    preserves_zero = True

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "exp_bits": self.exp_bits, "mant_bits": self.mant_bits,
                "is_weight": self.is_weight}

    def export_spec(self, weights: Dict[str, tf.Variable]) -> GridSpec:
        """Ristretto minifloat: ``exp_bits``/``mant_bits``, no subnormals (flush to zero)."""
        return GridSpec(kind="minifloat", exp_bits=self.exp_bits, mant_bits=self.mant_bits,
                        subnormals=False, rounding=self.rounding)

    def fake_quantize(self, w: tf.Tensor, weights: Dict[str, tf.Variable],
                      rounding: str) -> tf.Tensor:
        return _backend.minifloat_quantize(w, self.exp_bits, self.mant_bits, rounding=rounding)


@keras.utils.register_keras_serializable(package="kerasq")
class Pow2WeightQuantizer(_WeightQuantizerBase):
    """Ristretto integer-power-of-two weights: w' = sign(w)·2^clip(round(log2|w|), min, max).

    A zero weight stays exactly 0 (``kerasq.numerics.pow2_quantize`` keeps 0, for every
    rounding mode); Ristretto itself would map it to +2^exp_min (quant-schemes §2.4).
    """

    def __init__(self, exp_min: int = -8, exp_max: int = -1, rounding: str = DEFAULT_ROUNDING,
                 train_rounding: Optional[str] = None, quantization_start: int = 0) -> None:
        super().__init__(rounding, train_rounding, quantization_start)
        self.exp_min = int(exp_min)
        self.exp_max = int(exp_max)

    preserves_zero = True

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "exp_min": self.exp_min, "exp_max": self.exp_max}

    def export_spec(self, weights: Dict[str, tf.Variable]) -> GridSpec:
        """±2^k with k in [exp_min, exp_max]."""
        return GridSpec(kind="pow2", exp_min=self.exp_min, exp_max=self.exp_max,
                        rounding=self.rounding)

    def fake_quantize(self, w: tf.Tensor, weights: Dict[str, tf.Variable],
                      rounding: str) -> tf.Tensor:
        return _backend.pow2_quantize(w, self.exp_min, self.exp_max, rounding=rounding)


QUANTIZERS = (DFPActivationQuantizer, DFPWeightQuantizer, BiasQuantizer,
              AccumulatorBiasQuantizer, MinifloatQuantizer, Pow2WeightQuantizer)

__all__ = [q.__name__ for q in QUANTIZERS] + ["calibration_mode"]
