"""Sparsity report in the spirit of caffe-jacinto's ``Net::DisplaySparsity``.

One row per prunable kernel (Conv*, DepthwiseConv2D, Conv2DTranspose, SeparableConv2D, Dense,
folded convs) of a float, pruned or quantized model: exact zeros / count of the stored float
kernel, of its mask (if it has one) and, for quantized layers, of the fake-quantized kernel the
layer actually computes with. Unlike Caffe (which counts only Convolution layers not followed
by Softmax) every kernel is listed; the total sums all rows.

Example:
    >>> rows = sparsity_report(model)   # doctest: +SKIP
    >>> print(format_sparsity(rows))    # doctest: +SKIP
    Num Params(2), Sparsity (zero_weights/count):
    conv1_param_kernel(0.8) (230/288)
    dense_param_kernel(0.5) (320/640)
    Total Sparsity (zero_weights/count) =  (550/928) 0.593
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional

import numpy as np

from kerasq._compat import keras
from kerasq.schemes import slots
from kerasq.prune.masks import find_mask_slots
from kerasq.schemes.sparsity import _short_name
from kerasq.prune.wrapper import PRUNABLE_WEIGHT_NAMES, PruneWrapper, prunable_weight_names


@dataclasses.dataclass
class SparsityRow:
    """Zeros of one kernel. ``mask_zeros``/``quantized_zeros`` are None when not applicable."""

    layer: str
    layer_type: str
    weight: str
    zeros: int
    count: int
    mask_zeros: Optional[int] = None
    quantized_zeros: Optional[int] = None

    @property
    def sparsity(self) -> float:
        return self.zeros / self.count if self.count else 0.0

    def to_dict(self) -> Dict[str, Any]:
        return {**dataclasses.asdict(self), "sparsity": self.sparsity}


def _layers(model: Any) -> List[Any]:
    out, stack, seen = [], list(reversed(getattr(model, "layers", []))), set()
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if isinstance(layer, keras.Model):
            stack.extend(reversed(layer.layers))
        else:
            out.append(layer)
    return out


def _quantized_kernels(wrapper: Any) -> Dict[str, np.ndarray]:
    """The fake-quantized kernels a tfmot QuantizeWrapper uses at inference."""
    return {_short_name(slot.weight.name): np.asarray(slot(slot.weight))
            for slot in slots.weight_slots(wrapper)}


def _prunable_weights(layer: Any, inner: Any) -> List[Any]:
    """(short name, variable) of the prunable kernels of a (wrapped) layer.

    A tfmot QuantizeWrapper replaces ``inner.kernel`` by a tensor, after which Keras no longer
    lists the variable in ``inner.weights``; the wrapper's weight slots still have it.
    """
    if slots.is_quantize_wrapper(layer):
        found = [(_short_name(s.weight.name), s.weight) for s in slots.weight_slots(layer)]
        found = [(n, w) for n, w in found if n in PRUNABLE_WEIGHT_NAMES]
        if found:
            return found
    names = prunable_weight_names(inner)
    return [(n, next(w for w in inner.weights if _short_name(w.name) == n)) for n in names]


def sparsity_report(model: Any, *, quantized: bool = True) -> List[SparsityRow]:
    """Per-kernel exact-zero counts of ``model`` (see module docstring).

    Args:
        model: any Keras model (float, ``prune_model`` output, quantized).
        quantized: also count zeros of the fake-quantized kernels of quantized layers.
    """
    masks = {(id(s.layer), s.weight_name): s for s in find_mask_slots(model)}
    rows: List[SparsityRow] = []
    for layer in _layers(model):
        is_wrapper = slots.is_quantize_wrapper(layer)
        inner = layer.layer if isinstance(layer, PruneWrapper) else slots.inner_layer(layer)
        weights = _prunable_weights(layer, inner)
        if not weights:
            continue
        qkernels = _quantized_kernels(layer) if quantized and is_wrapper else {}
        for name, weight in weights:
            value = weight.numpy()
            slot = masks.get((id(inner), name))
            mask_zeros = None
            if slot is not None and int(slot.ready.numpy()):
                mask_zeros = int(np.count_nonzero(slot.mask.numpy() == 0))
            qzeros = int(np.count_nonzero(qkernels[name] == 0)) if name in qkernels else None
            rows.append(
                SparsityRow(
                    layer=inner.name,
                    layer_type=type(inner).__name__,
                    weight=name,
                    zeros=int(np.count_nonzero(value == 0)),
                    count=int(value.size),
                    mask_zeros=mask_zeros,
                    quantized_zeros=qzeros,
                )
            )
    return rows


def format_sparsity(rows: List[SparsityRow]) -> str:
    """caffe-jacinto's display_sparsity lines, plus mask/quantized zeros where known."""
    lines = [f"Num Params({len(rows)}), Sparsity (zero_weights/count): "]
    zeros = total = 0
    for row in rows:
        line = f"{row.layer}_param_{row.weight}({row.sparsity:.3g}) ({row.zeros}/{row.count})"
        extras = []
        if row.mask_zeros is not None:
            extras.append(f"mask {row.mask_zeros / row.count:.3g}")
        if row.quantized_zeros is not None:
            extras.append(f"quantized {row.quantized_zeros / row.count:.3g}")
        if extras:
            line += " [" + ", ".join(extras) + "]"
        lines.append(line)
        zeros += row.zeros
        total += row.count
    ratio = zeros / total if total else 0.0
    lines.append(f"Total Sparsity (zero_weights/count) =  ({zeros}/{total}) {ratio:.3g}")
    return "\n".join(lines)


__all__ = ["SparsityRow", "sparsity_report", "format_sparsity"]
