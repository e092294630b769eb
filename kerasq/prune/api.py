"""``prune_model`` (masks for a float model) and ``strip`` (export form, zeros kept).

Flows (all keep exact zeros from training to TFLite):

* prune, then quantize: ``prune_model`` -> ``fit(callbacks=[PruningCallback(s)])`` -> ``strip``
  -> ``kerasq.quantize_model`` (preserve_sparsity is automatic: the kernels have zeros) -> QAT.
* quantize, then prune (or both at once): ``kerasq.quantize_model(model,
  preserve_sparsity=True)`` -> ``fit(callbacks=[PruningCallback(s)])``; pruning continues
  while QAT runs, the masks live in the quantized layers.

Example:
    >>> pruned = prune_model(model, ConstantSparsity(0.5, 0))  # one-shot 50 %  # doctest: +SKIP
    >>> pruned.fit(x, y, callbacks=[PruningCallback(ConstantSparsity(0.5, 0))])  # doctest: +SKIP
    >>> float_model = strip(pruned)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from typing import Any, Iterable, Optional

from kerasq._compat import keras
from kerasq.data import check_keras_model, check_names
from kerasq.errors import ModelFormatError
from kerasq.prune.magnitude import magnitude_mask
from kerasq.prune.masks import apply_masks, find_mask_slots, init_masks, set_mask
from kerasq.prune.schedules import (JacintoChannelSchedule, PruningSchedule, final_sparsity,
                                     mask_sparsity)
from kerasq.prune.wrapper import PruneWrapper, prunable_weight_names

logger = logging.getLogger("kerasq.prune.api")


def _check_model(model: Any) -> None:
    check_keras_model(model, "model")
    if not isinstance(model, keras.Model):
        raise ModelFormatError(f"expected a Keras model, got {type(model).__name__}", layer="model")
    if not (isinstance(model, keras.Sequential) or getattr(model, "_is_graph_network", False)):
        raise ModelFormatError(
            "subclassed models cannot be wrapped; build a Sequential or functional model",
            layer=model.name,
        )


def one_shot_prune(model: Any, schedule: Any) -> float:
    """Set the masks of ``model`` once to the schedule's final sparsity; returns the sparsity.

    tfmot schedules: per-tensor magnitude at ``final_sparsity``/``target_sparsity``.
    :class:`JacintoChannelSchedule`: Caffe's thresholding repeated with the factor stepping
    from ``start_factor`` by ``step_factor`` until the convolutions reach ``target`` or the
    factor passes ``min(target + 0.15, 0.95)`` (what ``ThresholdNet`` does over training).
    """
    _check_model(model)
    slots = find_mask_slots(model)
    init_masks(model)
    if isinstance(schedule, PruningSchedule):
        sparsity = final_sparsity(schedule)
        for slot in slots:
            set_mask(slot, magnitude_mask(slot.weight.numpy() * slot.mask.numpy(), sparsity))
        return mask_sparsity(slots)
    if isinstance(schedule, JacintoChannelSchedule):
        convs = [s for s in slots if len(s.weight.shape) > 2]
        limit = min(schedule.target + 0.15, 0.95)
        while schedule.factor <= limit and mask_sparsity(convs) < schedule.target:
            schedule.threshold(convs)
            schedule.factor += schedule.step_factor
        return mask_sparsity(convs)
    raise ModelFormatError(
        f"schedule must be a tfmot PruningSchedule or JacintoChannelSchedule, "
        f"got {type(schedule).__name__}",
        layer="schedule",
    )


def prune_model(model: Any, schedule: Any = None, *, layers: Optional[Iterable[str]] = None) -> Any:
    """Wrap the prunable layers of a float ``model`` in :class:`PruneWrapper` (saved masks).

    The masks start as ``w != 0`` (existing zeros are frozen). If ``schedule`` is given the
    masks are also set once to its final sparsity (:func:`one_shot_prune`); gradual pruning
    during training is :class:`kerasq.prune.PruningCallback`. The returned model shares its
    layers (and weights) with ``model``, as tfmot's ``prune_low_magnitude`` does.

    Args:
        model: a Sequential or functional Keras model.
        schedule: optional tfmot ``PruningSchedule`` or :class:`JacintoChannelSchedule`.
        layers: names of the layers to prune (default: every layer with a kernel).

    A Keras 3 model is pruned in place instead, to the schedule's final sparsity (a tfmot
    ``PruningSchedule`` or a number), and returned (:func:`kerasq.prune.keras3.prune_with_schedule`);
    ``kerasq.quantize_model`` then keeps its zeros.

    Raises:
        ModelFormatError: subclassed model, or a name in ``layers`` that is not in the model.
    """
    from kerasq._compat import is_keras3_model

    if is_keras3_model(model):
        from kerasq.prune.keras3 import prune_with_schedule

        return prune_with_schedule(model, schedule, layers=layers)
    _check_model(model)
    layers = check_names(layers, "layers", [layer.name for layer in model.layers])
    wanted = set(layers) if layers is not None else None
    if wanted is not None:
        missing = wanted - {layer.name for layer in model.layers}
        if missing:
            raise ModelFormatError(f"no such layer(s): {sorted(missing)}", layer=model.name)

    def wrap(layer: Any) -> Any:
        if isinstance(layer, PruneWrapper):
            return layer
        if prunable_weight_names(layer) and (wanted is None or layer.name in wanted):
            return PruneWrapper(layer)
        return layer

    pruned = keras.models.clone_model(model, input_tensors=None, clone_function=wrap)
    init_masks(pruned, force=True)
    if schedule is not None:
        reached = one_shot_prune(pruned, schedule)
        logger.info("one-shot pruning reached sparsity %.4f", reached)
    return pruned


def strip(model: Any) -> Any:
    """Return the export form of ``model``: masks applied, pruning-only wrappers removed.

    Float models: every :class:`PruneWrapper` is replaced by its layer (the kernels keep their
    exact zeros). Quantized models: ``w <- w * mask`` is applied and the model is returned as
    is - the masks of ``SparsityPreservingQuantizer`` are constants after conversion and fold
    into the int8 weights, so stripping them would only change the weight layout of the
    ``.h5`` file.
    """
    _check_model(model)
    apply_masks(model)
    if not any(isinstance(layer, PruneWrapper) for layer in model.layers):
        return model

    def unwrap(layer: Any) -> Any:
        return layer.layer if isinstance(layer, PruneWrapper) else layer

    return keras.models.clone_model(model, input_tensors=None, clone_function=unwrap)


__all__ = ["prune_model", "strip", "one_shot_prune"]
