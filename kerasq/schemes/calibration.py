"""``kerasq.calibrate``: post-training range collection for a quantized model.

Runs the model in float over calibration data, folds each batch into every quantizer's
range (its ``range_estimator``), fixes the fractional lengths (or scales) and refreshes
the weight quantizers' state. Weights are not changed.

Example:
    >>> qmodel = kerasq.quantize_model(model)  # doctest: +SKIP
    >>> kerasq.calibrate(qmodel, x_train[:512], batch_size=64)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from typing import Any, Iterable, Iterator, Optional, Tuple

import numpy as np

from kerasq._compat import keras, tf
from kerasq.data import check_calibration_args, check_data_finite, check_model_finite
from kerasq.errors import DataError, KerasqError
from kerasq.schemes import slots
from kerasq.schemes.quantizers import calibration_mode

logger = logging.getLogger("kerasq.schemes.calibration")


def _batches(data: Any, batch_size: int) -> Iterator[Any]:
    if isinstance(data, tf.data.Dataset):
        for item in data:
            yield item[0] if isinstance(item, (tuple, list)) else item
        return
    if isinstance(data, (np.ndarray, tf.Tensor)):
        n = int(data.shape[0])
        for start in range(0, n, batch_size):
            yield data[start:start + batch_size]
        return
    if isinstance(data, dict):
        n = len(next(iter(data.values())))
        for start in range(0, n, batch_size):
            yield {k: v[start:start + batch_size] for k, v in data.items()}
        return
    if isinstance(data, Iterable):
        for item in data:
            yield item[0] if isinstance(item, tuple) else item
        return
    raise KerasqError(f"calibration data of type {type(data).__name__} is not supported "
                      "(use a numpy array, a tf.data.Dataset or an iterable of batches)")


def _reset_ranges(qmodel: Any) -> None:
    for var in qmodel.variables:
        if var.name.split(":")[0].endswith("_count"):
            var.assign(tf.zeros_like(var))


def _steps_hint(data: Any, batch_size: int, steps: Optional[int]) -> Optional[int]:
    if steps is not None:
        return steps
    if isinstance(data, (np.ndarray, tf.Tensor)):
        return -(-int(data.shape[0]) // batch_size)
    if isinstance(data, tf.data.Dataset):
        card = int(data.cardinality())
        return card if card >= 0 else None
    return None


def _calibrating_call(qmodel: Any, x: Any) -> Any:
    with calibration_mode():
        return qmodel(x, training=False)


# qmodel -> (quantizer fingerprint, distributed, traced collect function). Tracing the
# calibration graph of a real net takes seconds; a later calibrate call on the same model
# (same quantizers) reuses it. The function holds only a weak reference to the model, so an
# entry goes away with its model.
_COLLECT_FUNCTIONS: "weakref.WeakKeyDictionary[Any, Tuple[Any, bool, Any]]" = (
    weakref.WeakKeyDictionary())


def _quantizer_fingerprint(qmodel: Any) -> Tuple[Any, ...]:
    """What the traced graph depends on besides variables: each quantizer and its config."""
    return tuple((slot.layer.name, slot.role, slot.attr, id(slot.quantizer), repr(slot.quantizer))
                 for slot in slots.iter_slots(qmodel))


def _collect_function(qmodel: Any, strategy: Any, distributed: bool) -> Any:
    """The (cached) ``tf.function`` running one calibration batch through ``qmodel``.

    Traced under :func:`calibration_mode` by the first call, with ``reduce_retracing`` so a
    shorter last batch generalizes the batch dimension instead of adding traces.
    """
    fingerprint = _quantizer_fingerprint(qmodel)
    try:
        cached = _COLLECT_FUNCTIONS.get(qmodel)
    except TypeError:  # a model that cannot be weakly referenced: no cache
        cached = None
    if cached is not None and cached[0] == fingerprint and cached[1] == distributed:
        return cached[2]
    model_ref = weakref.ref(qmodel)

    @tf.function(reduce_retracing=True)
    def collect(x: Any) -> Any:
        model: Any = model_ref()
        if distributed:  # replica functions may run in other threads: enter the mode there
            return strategy.run(_calibrating_call, args=(model, x))
        return model(x, training=False)

    try:
        _COLLECT_FUNCTIONS[qmodel] = (fingerprint, distributed, collect)
    except TypeError:
        pass
    return collect


def calibrate(qmodel: Any, data: Any, steps: Optional[int] = None, *, batch_size: int = 32,
              reset: bool = True, verbose: int = 0) -> Any:
    """Collect activation ranges over ``data`` (at most ``steps`` batches) and return ``qmodel``.

    ``data``: array (split into ``batch_size`` batches), ``tf.data.Dataset`` or iterable of
    batches ((x, y) pairs use x). ``reset``: forget ranges collected before. Shows a
    progress bar with ``verbose=1``. Activations: range = estimator over all batches
    (minmax: running min/max; max_abs: Ristretto's running max|x|; ema: caffe-jacinto's
    EMA; percentile), fl = B − il with il = ceil(log2 max|x|) (+1 if signed).
    """
    check_calibration_args(qmodel, data, steps, batch_size)
    if not isinstance(qmodel, keras.Model):
        raise KerasqError(f"calibrate needs the model returned by quantize_model, got "
                          f"{type(qmodel).__name__}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise KerasqError(f"batch_size={batch_size!r}: expected a positive integer")
    check_data_finite(data, "calibration data")  # NaN/Inf would become a saved range
    if reset:
        _reset_ranges(qmodel)
    total = _steps_hint(data, batch_size, steps)
    bar = keras.utils.Progbar(total, verbose=verbose, unit_name="batch") if verbose else None

    # A model built under a tf.distribute strategy calibrates through strategy.run, so the
    # quantizers all-gather batch ranges across replicas and workers (each worker passes its
    # own data; every worker must run the same number of batches).
    strategy = getattr(qmodel, "distribute_strategy", None)
    distributed = strategy is not None and strategy.num_replicas_in_sync > 1
    with calibration_mode(), (strategy.scope() if distributed else contextlib.nullcontext()):
        collect = _collect_function(qmodel, strategy, distributed)
        done = 0
        for batch in _batches(data, batch_size):
            if steps is not None and done >= steps:
                break
            if isinstance(batch, np.ndarray) and batch.dtype != np.float32:
                batch = batch.astype(np.float32)
            if not isinstance(data, (np.ndarray, list, tuple, dict)):
                check_data_finite(batch if not isinstance(batch, tf.Tensor) else batch.numpy(),
                                  f"calibration batch {done}")
            try:
                collect(batch)
            except (ValueError, TypeError, tf.errors.InvalidArgumentError) as err:
                # Keras refusing the data (shape, dtype): a one-line error for the caller.
                lines = [line.strip() for line in str(err).splitlines() if line.strip()]
                text = (lines[-1] if lines else type(err).__name__)[:300]
                raise DataError(f"calibration batch {done} does not fit the model: {text}",
                                layer="calibration data") from None
            done += 1
            if bar is not None:
                bar.update(done)
    if done == 0:
        raise KerasqError("calibration data is empty")
    check_model_finite(qmodel)  # no non-finite range is ever kept
    from kerasq.schemes.shared_grids import align_for_int8

    # the saved model computes what its int8 file computes: one fl per Add/Concatenate/
    # AvgPool group (TFLite int8 shares their scale) and 32-bit biases on the accumulator grid
    align_for_int8(qmodel)
    logger.info("%s: calibrated on %d batch(es)", qmodel.name, done)
    return qmodel


__all__ = ["calibrate"]
