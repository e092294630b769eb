"""Keras callbacks: gradual pruning during (quantization-aware) training, sparsity display.

:class:`PruningCallback` updates the saved masks of a model (``PruneWrapper`` float layers or
``SparsityPreservingQuantizer`` quantized layers) on a schedule, by the magnitude of the float
(shadow) weights, so pruning can go on while QAT runs. The step is the optimizer's
``iterations``: tfmot schedules are evaluated before each batch at the number of finished steps
(tfmot's ``UpdatePruningStep`` convention), caffe-jacinto's after each batch at the 1-based
iteration (Caffe's ``sparsity_itr_increment_bfr_applying`` default).

Example:
    >>> cb = PruningCallback(PolynomialDecay(0.0, 0.8, 0, 500))  # doctest: +SKIP
    >>> report = SparsityReportCallback(every_epochs=1)  # doctest: +SKIP
    >>> qmodel.fit(x, y, epochs=5, callbacks=[cb, report])  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Optional

from kerasq._compat import keras
from kerasq.errors import KerasqError
from kerasq.prune.masks import find_mask_slots, init_masks
from kerasq.prune.report import format_sparsity, sparsity_report
from kerasq.prune.schedules import JacintoChannelSchedule, PruningSchedule, apply_tfmot_schedule

logger = logging.getLogger("kerasq.prune.callbacks")


class PruningCallback(keras.callbacks.Callback):
    """Update pruning masks on ``schedule`` while the model trains.

    Args:
        schedule: a tfmot ``PruningSchedule`` (``ConstantSparsity``, ``PolynomialDecay``) or a
            :class:`JacintoChannelSchedule`.

    On a quantized Keras 3 model (Keras 3's ``fit`` calls this callback too) a tfmot
    schedule is applied to the model's saved masks at the optimizer's step
    (:class:`kerasq.prune.keras3.ScheduledPruning`).

    Raises:
        KerasqError: at train start, if the model has no masks (use ``prune_model`` or
            ``quantize_model(..., preserve_sparsity=True)`` first).
    """

    _keras3: Any = None

    def __init__(self, schedule: Any) -> None:
        super().__init__()
        if not isinstance(schedule, (PruningSchedule, JacintoChannelSchedule)):
            raise KerasqError(
                f"schedule must be a tfmot PruningSchedule or JacintoChannelSchedule, "
                f"got {type(schedule).__name__}",
                layer="schedule",
            )
        self.schedule = schedule
        self._slots: list = []

    def _step(self) -> int:
        return int(self.model.optimizer.iterations.numpy())

    def on_train_begin(self, logs: Optional[dict] = None) -> None:
        from kerasq._compat import is_keras3_model

        self._keras3 = None
        if is_keras3_model(self.model):
            from kerasq.prune.keras3 import ScheduledPruning

            self._keras3 = ScheduledPruning(self.schedule)
            self._keras3.begin(self.model)
            return
        self._slots = find_mask_slots(self.model)
        if not self._slots:
            raise KerasqError(
                "model has no pruning masks: wrap it with kerasq.prune.prune_model or quantize "
                "it with preserve_sparsity=True",
                layer=getattr(self.model, "name", None),
            )
        init_masks(self.model)

    def on_train_batch_begin(self, batch: int, logs: Optional[dict] = None) -> None:
        if self._keras3 is not None:
            self._keras3.step(self.model)
        elif isinstance(self.schedule, PruningSchedule):
            apply_tfmot_schedule(self.schedule, self._step(), self._slots)

    def on_train_batch_end(self, batch: int, logs: Optional[dict] = None) -> None:
        if self._keras3 is None and isinstance(self.schedule, JacintoChannelSchedule):
            self.schedule(self._step(), self._slots)


class SparsityReportCallback(keras.callbacks.Callback):
    """Print the sparsity table (caffe-jacinto ``display_sparsity`` style) during ``fit``.

    Args:
        every_epochs: print after every this many epochs (``None`` = never per epoch).
        every_steps: print after every this many training steps (``None`` = never per step).
        print_fn: where the table goes (default: the ``kerasq.prune.callbacks`` logger at INFO).
        at_end: also print when training ends.
    """

    def __init__(
        self,
        every_epochs: Optional[int] = 1,
        every_steps: Optional[int] = None,
        print_fn: Optional[Callable[[str], Any]] = None,
        at_end: bool = False,
    ) -> None:
        super().__init__()
        self.every_epochs = every_epochs
        self.every_steps = every_steps
        self.print_fn = print_fn or logger.info
        self.at_end = at_end

    def _show(self) -> None:
        self.print_fn(format_sparsity(sparsity_report(self.model)))

    def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None:
        if self.every_epochs and (epoch + 1) % self.every_epochs == 0:
            self._show()

    def on_train_batch_end(self, batch: int, logs: Optional[dict] = None) -> None:
        if self.every_steps:
            step = int(self.model.optimizer.iterations.numpy())
            if step % self.every_steps == 0:
                self._show()

    def on_train_end(self, logs: Optional[dict] = None) -> None:
        if self.at_end:
            self._show()


__all__ = ["PruningCallback", "SparsityReportCallback"]
