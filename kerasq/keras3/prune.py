"""Magnitude pruning for Keras 3 models: one-shot on a float model, and continuing during
QAT of a quantized model (the masks are variables of the model, saved in .keras files).

* :func:`prune_model` zeroes the smallest ``|w|`` of each kernel (tfmot's threshold rule,
  ``kerasq.prune.magnitude.magnitude_mask``); :func:`kerasq.quantize_model` then sees exact
  zeros and keeps them (sparsity-preserving quantizers with saved masks).
* :class:`PruningCallback` raises the sparsity during ``fit`` of such a quantized model
  along tfmot's polynomial schedule ``s(t) = s_f + (s_0 - s_f)(1 - p)^3``,
  ``p = (t - begin)/(end - begin)`` clipped to [0, 1], every ``frequency`` steps; a pruned
  weight stays pruned (the new mask is computed on the masked weights).

Example:
    >>> kerasq.keras3.prune.prune_model(model, 0.5)  # doctest: +SKIP
    >>> qmodel = kerasq.quantize_model(model)  # doctest: +SKIP
    >>> qmodel.fit(x, y, callbacks=[PruningCallback(0.8, end_step=200)])  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Optional, Tuple

import numpy as np

from kerasq._compat import keras3
from kerasq.errors import ModelFormatError
from kerasq.keras3.layers import QuantizedLayer, layer_variable
from kerasq.keras3.quantizers import SparsityPreservingQuantizer
from kerasq.prune.magnitude import magnitude_mask

keras = keras3()
PRUNABLE = ("Conv1D", "Conv2D", "Conv3D", "DepthwiseConv2D", "Conv2DTranspose", "Dense")


def prune_model(model: Any, sparsity: float, *, layers: Optional[Iterable[str]] = None) -> float:
    """Zero the ``sparsity`` fraction of smallest-magnitude kernel weights of each prunable
    layer of a float Keras 3 model (in place); returns the overall kernel sparsity."""
    if not 0.0 <= float(sparsity) < 1.0:
        raise ModelFormatError(f"sparsity={sparsity!r}: expected 0 <= sparsity < 1",
                               layer=model.name)
    chosen = set(layers) if layers is not None else None
    zeros = total = 0
    for layer in model.layers:
        if type(layer).__name__ not in PRUNABLE or (chosen is not None and layer.name not in chosen):
            continue
        kernel = layer_variable(layer, "kernel")
        w = np.asarray(keras.ops.convert_to_numpy(kernel))
        pruned = w * magnitude_mask(w, sparsity)
        kernel.assign(pruned)
        zeros += int(np.sum(pruned == 0))
        total += pruned.size
    return zeros / total if total else 0.0


def mask_slots(qmodel: Any) -> Iterator[Tuple[Any, Any, dict]]:
    """(layer, kernel variable, quantizer variables) of every masked kernel of a quantized
    Keras 3 model."""
    for layer in qmodel.layers:
        if not isinstance(layer, QuantizedLayer):
            continue
        for (attr, quantizer), qvars in zip(layer.weight_quantizers, layer.weight_quantizer_vars):
            if isinstance(quantizer, SparsityPreservingQuantizer):
                yield layer, layer_variable(layer.layer, attr), qvars


def polynomial_sparsity(step: int, final: float, initial: float = 0.0, begin: int = 0,
                        end: int = 1000, power: float = 3.0) -> float:
    """tfmot's PolynomialDecay target sparsity at ``step``."""
    p = min(max((step - begin) / max(end - begin, 1), 0.0), 1.0)
    return final + (initial - final) * (1.0 - p) ** power


class PruningCallback(keras.callbacks.Callback):
    """Raise the sparsity of a quantized Keras 3 model's masked kernels during ``fit``
    (``layers``: names of the layers to prune, default every masked kernel)."""

    def __init__(self, final_sparsity: float, *, initial_sparsity: float = 0.0,
                 begin_step: int = 0, end_step: int = 1000, frequency: int = 10,
                 layers: Optional[Iterable[str]] = None) -> None:
        super().__init__()
        self.layers = set(layers) if layers is not None else None
        self.final_sparsity = float(final_sparsity)
        self.initial_sparsity = float(initial_sparsity)
        self.begin_step = int(begin_step)
        self.end_step = int(end_step)
        self.frequency = max(int(frequency), 1)
        self.step = 0

    def on_train_begin(self, logs: Any = None) -> None:
        if not any(True for _ in mask_slots(self.model)):
            raise ModelFormatError("no masked kernels: prune the float model (prune_model) "
                                   "or quantize with preserve_sparsity=True first",
                                   layer=self.model.name)

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        self.step += 1
        if self.step < self.begin_step or (self.step - self.begin_step) % self.frequency:
            return
        if self.step > self.end_step + self.frequency:
            return
        target = polynomial_sparsity(self.step, self.final_sparsity, self.initial_sparsity,
                                     self.begin_step, self.end_step)
        set_sparsity(self.model, target, self.layers)


def set_sparsity(qmodel: Any, sparsity: float, layers: Optional[Iterable[str]] = None) -> None:
    """Set every masked kernel of a quantized Keras 3 model (of ``layers``, default all) to
    ``sparsity`` by magnitude (``kerasq.prune.magnitude.magnitude_mask`` of the masked
    weights: a pruned weight stays pruned) and zero the pruned weights."""
    chosen = set(layers) if layers is not None else None
    for layer, kernel, qvars in mask_slots(qmodel):
        if chosen is not None and not {layer.name, layer.layer.name} & chosen:
            continue
        mask = np.asarray(keras.ops.convert_to_numpy(qvars["mask"]))
        if int(keras.ops.convert_to_numpy(qvars["mask_ready"])) <= 0:
            mask = (np.asarray(keras.ops.convert_to_numpy(kernel)) != 0).astype(mask.dtype)
        w = np.asarray(keras.ops.convert_to_numpy(kernel)) * mask
        new = mask * magnitude_mask(w, sparsity)
        qvars["mask"].assign(new)
        qvars["mask_ready"].assign(1)
        kernel.assign(w * new)


def prune_with_schedule(model: Any, schedule: Any = None, *,
                        layers: Optional[Iterable[str]] = None) -> Any:
    """``kerasq.prune.prune_model`` for a Keras 3 model: in place, the kernels are pruned
    once to the schedule's final sparsity (a tfmot ``PruningSchedule`` or a number); no
    schedule leaves the model as it is (``kerasq.quantize_model`` freezes its zeros).
    Returns the model."""
    from kerasq.prune.schedules import PruningSchedule

    if schedule is None:
        return model
    if isinstance(schedule, PruningSchedule):
        from kerasq.prune.api import _final_sparsity

        sparsity = _final_sparsity(schedule)
    elif isinstance(schedule, (int, float)) and not isinstance(schedule, bool):
        sparsity = float(schedule)
    else:
        raise ModelFormatError(f"on a Keras 3 model the schedule must be a tfmot "
                               f"PruningSchedule or a sparsity, got {type(schedule).__name__}",
                               layer="schedule")
    if layers is not None:
        missing = set(layers) - {layer.name for layer in model.layers}
        if missing:
            raise ModelFormatError(f"no such layer(s): {sorted(missing)}", layer=model.name)
    prune_model(model, sparsity, layers=layers)
    return model


class ScheduledPruning:
    """The Keras 3 side of ``kerasq.prune.PruningCallback``: a tfmot schedule applied to a
    quantized Keras 3 model's masks at the optimizer's step (what the tf_keras callback
    does with ``kerasq.prune.schedules.apply_tfmot_schedule``)."""

    def __init__(self, schedule: Any) -> None:
        from kerasq.prune.schedules import PruningSchedule

        if not isinstance(schedule, PruningSchedule):
            raise ModelFormatError(f"on a Keras 3 model the schedule must be a tfmot "
                                   f"PruningSchedule, got {type(schedule).__name__}",
                                   layer="schedule")
        self.schedule = schedule

    def begin(self, model: Any) -> None:
        if not any(True for _ in mask_slots(model)):
            raise ModelFormatError("no masked kernels: prune the float model (prune_model) "
                                   "or quantize with preserve_sparsity=True first",
                                   layer=model.name)

    def step(self, model: Any) -> bool:
        iteration = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
        should_prune, sparsity = self.schedule(iteration)
        if not bool(np.asarray(should_prune)):
            return False
        set_sparsity(model, float(np.asarray(sparsity)))
        return True


__all__ = ["prune_model", "PruningCallback", "polynomial_sparsity", "mask_slots", "set_sparsity",
           "prune_with_schedule", "ScheduledPruning"]
