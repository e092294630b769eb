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

from typing import Any, Iterable, Optional

from kerasq._compat import keras3
from kerasq.errors import ModelFormatError
from kerasq.prune.keras3 import mask_slots, set_sparsity
from kerasq.prune.keras3 import prune_float as prune_model

keras = keras3()


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


__all__ = ["prune_model", "PruningCallback", "polynomial_sparsity", "mask_slots",
           "set_sparsity"]
