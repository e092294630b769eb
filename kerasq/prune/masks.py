"""Finding, initialising and applying the pruning masks of a model.

A *mask slot* is one prunable weight together with its saved ``mask`` and ``mask_ready``
variables. Slots live in

* tfmot ``QuantizeWrapper`` layers whose weight quantizer is a
  :class:`kerasq.schemes.sparsity.SparsityPreservingQuantizer` (quantized models), and
* :class:`kerasq.prune.wrapper.PruneWrapper` layers (float models from ``prune_model``).

Example:
    >>> slots = find_mask_slots(model)  # doctest: +SKIP
    >>> init_masks(model)  # mask <- (w != 0) where not initialised yet  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator, List, Tuple

import numpy as np

from kerasq._compat import keras, tf
from kerasq.schemes import slots as quantized_slots
from kerasq.prune.magnitude import CHANNELS_DEPTHWISE, CHANNELS_LAST, CHANNELS_TRANSPOSED
from kerasq.schemes.sparsity import SparsityPreservingQuantizer, _short_name, init_mask
from kerasq.prune.wrapper import PruneWrapper


@dataclasses.dataclass
class MaskSlot:
    """One prunable weight of a model and its mask variables."""

    layer_name: str  # the user's layer name (inside any wrapper)
    layer_type: str  # Keras class name of the wrapped layer
    weight_name: str  # "kernel", "depthwise_kernel", ...
    weight: tf.Variable
    mask: tf.Variable
    ready: tf.Variable
    layer: Any  # the wrapped (inner) layer
    quantizer: Any = None  # the SparsityPreservingQuantizer of a quantized layer
    quantizer_vars: Any = None

    def refresh_quantizer_state(self) -> None:
        """Let the inner weight quantizer recompute stored state (fl, min/max) from the
        masked weight, so inference and export see the new mask's range at once."""
        inner = getattr(self.quantizer, "inner", None)
        update = getattr(inner, "update_state", None)
        if callable(update) and isinstance(self.quantizer_vars, dict):
            update(
                self.weight * tf.cast(self.mask, self.weight.dtype), self.quantizer_vars["inner"]
            )

    @property
    def name(self) -> str:
        return f"{self.layer_name}/{self.weight_name}"

    @property
    def layout(self) -> str:
        """Where the output channels are in this weight (see ``kerasq.prune.magnitude``)."""
        return weight_layout(self.layer, self.weight_name)

    def geometry(self) -> Tuple[int, int, int, int, int]:
        """Caffe-equivalent ``(ni, no, group, kernel_h, kernel_w)`` of this weight."""
        return caffe_geometry(self.layer, self.weight_name, tuple(self.weight.shape))


def weight_layout(layer: Any, weight_name: str) -> str:
    """Channel layout of a kernel: depthwise, transposed (Conv*Transpose) or channels-last."""
    if weight_name == "depthwise_kernel":
        return CHANNELS_DEPTHWISE
    if "Transpose" in type(layer).__name__:
        return CHANNELS_TRANSPOSED
    return CHANNELS_LAST


def caffe_geometry(
    layer: Any, weight_name: str, shape: Tuple[int, ...]
) -> Tuple[int, int, int, int, int]:
    """``(ni, no, group, kernel_h, kernel_w)`` as Caffe's thresholding code counts them.

    ``ni`` counts input channels x group (Caffe's ``shape(1) * group``); a Dense kernel is a
    1x1 convolution.
    """
    spatial = tuple(shape[:-2]) if len(shape) > 2 else ()
    kernel_h = spatial[-2] if len(spatial) >= 2 else 1
    kernel_w = spatial[-1] if spatial else 1
    layout = weight_layout(layer, weight_name)
    if layout == CHANNELS_DEPTHWISE:
        group = shape[-2]
        return group, shape[-2] * shape[-1], group, kernel_h, kernel_w
    if layout == CHANNELS_TRANSPOSED:
        return shape[-1], shape[-2], 1, kernel_h, kernel_w
    group = int(getattr(layer, "groups", 1) or 1)
    return shape[-2] * group, shape[-1], group, kernel_h, kernel_w


def _all_layers(model: Any) -> Iterator[Any]:
    seen = set()
    stack = list(reversed(getattr(model, "layers", [])))
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        yield layer
        if isinstance(layer, keras.Model):
            stack.extend(reversed(layer.layers))


def find_mask_slots(model: Any) -> List[MaskSlot]:
    """Every mask slot of ``model`` (quantized or float), in layer order."""
    slots: List[MaskSlot] = []
    for layer in _all_layers(model):
        if quantized_slots.is_quantize_wrapper(layer):
            for slot in quantized_slots.weight_slots(layer):
                if isinstance(slot.quantizer, SparsityPreservingQuantizer):
                    inner = slot.layer
                    slots.append(
                        MaskSlot(
                            inner.name,
                            type(inner).__name__,
                            _short_name(slot.weight.name),
                            slot.weight,
                            slot.variables["mask"],
                            slot.variables["mask_ready"],
                            inner,
                            slot.quantizer,
                            slot.variables,
                        )
                    )
        elif isinstance(layer, PruneWrapper):
            inner = layer.layer
            for name, weight, mask, ready in layer.mask_slots:
                slots.append(
                    MaskSlot(inner.name, type(inner).__name__, name, weight, mask, ready, inner)
                )
    return slots


def init_masks(model: Any, *, force: bool = False) -> int:
    """Set ``mask <- (w != 0)`` in every slot not initialised yet (all of them if ``force``).

    Returns the number of masks initialised. Call it after loading new weights into a
    freshly built model (``quantize_model`` calls it for you).
    """
    return sum(init_mask(slot.weight, slot.mask, slot.ready, force=force)
               for slot in find_mask_slots(model))


def set_mask(slot: MaskSlot, mask: np.ndarray) -> None:
    """Replace a slot's mask (ANDed with the current one) and zero the masked weights."""
    current = slot.mask.numpy() if int(slot.ready.numpy()) else (slot.weight.numpy() != 0)
    new_mask = (np.asarray(mask) != 0) & (current != 0)
    slot.mask.assign(new_mask.astype(slot.mask.dtype.as_numpy_dtype))
    slot.ready.assign(1)
    slot.weight.assign(slot.weight * tf.cast(slot.mask, slot.weight.dtype))
    slot.refresh_quantizer_state()


def apply_masks(model: Any) -> int:
    """``w <- w * mask`` for every initialised slot (e.g. in a custom training loop).

    Returns the number of weights masked.
    """
    count = 0
    for slot in find_mask_slots(model):
        if int(slot.ready.numpy()):
            slot.weight.assign(slot.weight * tf.cast(slot.mask, slot.weight.dtype))
            count += 1
    return count


__all__ = [
    "MaskSlot",
    "find_mask_slots",
    "init_masks",
    "apply_masks",
    "set_mask",
    "weight_layout",
    "caffe_geometry",
]
