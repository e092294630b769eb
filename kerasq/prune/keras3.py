"""Magnitude pruning of Keras 3 models, in the pruning layer (no import of ``kerasq.keras3``).

``kerasq.prune.prune_model`` and ``kerasq.prune.PruningCallback`` take Keras 3 models
(:func:`kerasq._compat.is_keras3_model`) through this module:

* :func:`prune_with_schedule` zeroes the smallest ``|w|`` of each kernel of a float Keras 3
  model in place, at the schedule's final sparsity (tfmot's rule,
  :func:`kerasq.prune.magnitude.magnitude_mask`); ``kerasq.quantize_model`` keeps the zeros.
* :class:`ScheduledPruning` applies a tfmot schedule, at the optimizer's step, to the saved
  masks of a quantized Keras 3 model; a pruned weight stays pruned (the new mask is the
  magnitude mask of the masked weights).

The masks of a quantized Keras 3 model are found through a method of its layers,
``pruning_masks()`` -> ``[(kernel variable, {"mask": variable, "mask_ready": variable})]``
(``kerasq.keras3.layers.QuantizedLayer`` defines it), so this layer needs no Keras 3 class.

Example:
    >>> prune_with_schedule(keras3_model, 0.5, layers=["fc"])  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Optional, Tuple

import numpy as np

from kerasq._compat import keras3
from kerasq.errors import ModelFormatError
from kerasq.prune.magnitude import magnitude_mask

#: Keras 3 layer classes whose kernel :func:`prune_float` prunes
PRUNABLE = ("Conv1D", "Conv2D", "Conv3D", "DepthwiseConv2D", "Conv2DTranspose", "Dense")


def _numpy(variable: Any) -> np.ndarray:
    return np.asarray(keras3().ops.convert_to_numpy(variable))


def _kernel(layer: Any) -> Any:
    for var in layer.weights:
        if var.name == "kernel" or var.path.split("/")[-1] == "kernel":
            return var
    raise ModelFormatError("no kernel variable", layer=layer.name)


def prune_float(model: Any, sparsity: float, *, layers: Optional[Iterable[str]] = None) -> float:
    """Zero the ``sparsity`` fraction of smallest-magnitude kernel weights of each prunable
    layer of a float Keras 3 model (in place); returns the overall kernel sparsity.

    Example: ``prune_float(model, 0.5)`` -> ``0.5`` (up to one weight per kernel).
    """
    if not 0.0 <= float(sparsity) < 1.0:
        raise ModelFormatError(f"sparsity={sparsity!r}: expected 0 <= sparsity < 1",
                               layer=model.name)
    chosen = set(layers) if layers is not None else None
    zeros = total = 0
    for layer in model.layers:
        if type(layer).__name__ not in PRUNABLE or (chosen is not None
                                                     and layer.name not in chosen):
            continue
        kernel = _kernel(layer)
        w = _numpy(kernel)
        pruned = w * magnitude_mask(w, sparsity)
        kernel.assign(pruned)
        zeros += int(np.sum(pruned == 0))
        total += pruned.size
    return zeros / total if total else 0.0


def prune_with_schedule(model: Any, schedule: Any = None, *,
                        layers: Optional[Iterable[str]] = None) -> Any:
    """``kerasq.prune.prune_model`` for a float Keras 3 model: in place, the kernels are
    pruned once to the schedule's final sparsity (a tfmot ``PruningSchedule`` or a number);
    no schedule leaves the model as it is. Returns the model.

    Example: ``prune_with_schedule(model, ConstantSparsity(0.5, 0)) is model`` -> True.
    """
    from kerasq.prune.schedules import PruningSchedule, final_sparsity

    if schedule is None:
        return model
    if isinstance(schedule, PruningSchedule):
        sparsity = final_sparsity(schedule)
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
    prune_float(model, sparsity, layers=layers)
    return model


def mask_slots(qmodel: Any) -> Iterator[Tuple[Any, Any, dict]]:
    """(layer, kernel variable, mask variables) of every masked kernel of a quantized
    Keras 3 model (its layers' ``pruning_masks()``).

    Example: ``[layer.name for layer, _, _ in mask_slots(qmodel)]`` -> ``["fc"]``.
    """
    for layer in qmodel.layers:
        masks = getattr(layer, "pruning_masks", None)
        if callable(masks):
            for kernel, qvars in masks():
                yield layer, kernel, qvars


def set_sparsity(qmodel: Any, sparsity: float, layers: Optional[Iterable[str]] = None) -> None:
    """Set every masked kernel of a quantized Keras 3 model (of ``layers``, default all) to
    ``sparsity`` by magnitude (:func:`kerasq.prune.magnitude.magnitude_mask` of the masked
    weights: a pruned weight stays pruned) and zero the pruned weights.

    Example: ``set_sparsity(qmodel, 0.8, layers=["fc"])``.
    """
    chosen = set(layers) if layers is not None else None
    for layer, kernel, qvars in mask_slots(qmodel):
        inner = getattr(layer, "layer", layer)
        if chosen is not None and not {layer.name, inner.name} & chosen:
            continue
        mask = _numpy(qvars["mask"])
        if int(_numpy(qvars["mask_ready"])) <= 0:
            mask = (_numpy(kernel) != 0).astype(mask.dtype)
        w = _numpy(kernel) * mask
        new = mask * magnitude_mask(w, sparsity)
        qvars["mask"].assign(new)
        qvars["mask_ready"].assign(1)
        kernel.assign(w * new)


class ScheduledPruning:
    """The Keras 3 side of ``kerasq.prune.PruningCallback``: a tfmot schedule applied to a
    quantized Keras 3 model's masks at the optimizer's step (what the tf_keras callback
    does with ``kerasq.prune.schedules.apply_tfmot_schedule``).

    Example: ``ScheduledPruning(PolynomialDecay(0.3, 0.7, 0, 20)).step(qmodel)``.
    """

    def __init__(self, schedule: Any) -> None:
        from kerasq.prune.schedules import PruningSchedule

        if not isinstance(schedule, PruningSchedule):
            raise ModelFormatError(f"on a Keras 3 model the schedule must be a tfmot "
                                   f"PruningSchedule, got {type(schedule).__name__}",
                                   layer="schedule")
        self.schedule = schedule

    def begin(self, model: Any) -> None:
        """Refuse a model without masks."""
        if not any(True for _ in mask_slots(model)):
            raise ModelFormatError("no masked kernels: prune the float model (prune_model) "
                                   "or quantize with preserve_sparsity=True first",
                                   layer=model.name)

    def step(self, model: Any) -> bool:
        """Apply the schedule at the optimizer's step; True if the masks were updated."""
        iteration = int(_numpy(model.optimizer.iterations))
        should_prune, sparsity = self.schedule(iteration)
        if not bool(np.asarray(should_prune)):
            return False
        set_sparsity(model, float(np.asarray(sparsity)))
        return True


__all__ = ["prune_float", "prune_with_schedule", "mask_slots", "set_sparsity",
           "ScheduledPruning", "PRUNABLE"]
