"""Pruning schedules: tfmot's ``ConstantSparsity`` / ``PolynomialDecay`` and caffe-jacinto's.

A schedule decides, at a training step, whether and how the masks change; the masks are
updated by :class:`kerasq.prune.PruningCallback` from the magnitude of the float (shadow)
weights, inside float or quantized models alike.

* tfmot schedules (re-exported unchanged): at the steps where ``schedule(step)`` says so, every
  mask becomes the per-tensor magnitude mask for ``sparsity(step)``
  (:func:`kerasq.prune.magnitude.magnitude_mask`), ANDed with the old mask.
  ``PolynomialDecay``: ``s(t) = s_f + (s_i - s_f) (1 - p)^power``, ``p`` the clipped progress
  through ``[begin_step, end_step]`` (Zhu & Gupta 2017).
* :class:`JacintoChannelSchedule`: caffe-jacinto 0.16 ``Solver::ThresholdNet`` (quant-schemes.md
  §6.2). After iteration ``it`` (1-based, i.e. ``optimizer.iterations`` after the step): if
  ``target > 0``, ``it >= start_iter``, ``it % step_iter == 0``,
  ``factor <= min(target + 0.15, 0.95)`` and the current mask sparsity of the convolutions is
  below ``target``, every eligible convolution is thresholded channel-wise with fraction
  ``factor / 2`` (small layers) or ``factor`` (``ni >= 32 and no >= 32``), then
  ``factor += step_factor``. ``factor`` starts at ``start_factor``.
  Eligible: ``(ni >= 32 or no >= 32)``, ``group < no`` (not depthwise) and both kernel sides
  ``>= min_kernel_size`` (3: no 1x1/2x2 kernels) - so Dense layers are never thresholded, as
  Caffe never thresholds InnerProduct.

Example:
    >>> schedule = JacintoChannelSchedule(target=0.8, start_factor=0.6, step_iter=100)
    >>> schedule.fraction_for(ni=64, no=64)
    0.6
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Sequence

import numpy as np

from kerasq._compat import tfmot
from kerasq.errors import KerasqError, ModelFormatError
from kerasq.prune.magnitude import jacinto_channel_mask, magnitude_mask
from kerasq.prune.masks import MaskSlot, set_mask

logger = logging.getLogger("kerasq.prune.schedules")

_sparsity = tfmot().sparsity.keras
ConstantSparsity = _sparsity.ConstantSparsity
PolynomialDecay = _sparsity.PolynomialDecay
PruningSchedule = _sparsity.PruningSchedule


def mask_sparsity(slots: Sequence[MaskSlot]) -> float:
    """Fraction of zeros in the (effective) masks of ``slots``: sum(zeros) / sum(count)."""
    zeros = total = 0
    for slot in slots:
        mask = slot.mask.numpy() if int(slot.ready.numpy()) else (slot.weight.numpy() != 0)
        zeros += int(np.count_nonzero(mask == 0))
        total += int(mask.size)
    return zeros / total if total else 0.0


def _masked_weight(slot: MaskSlot) -> np.ndarray:
    w = slot.weight.numpy()
    if int(slot.ready.numpy()):
        w = w * slot.mask.numpy()
    return w


def apply_tfmot_schedule(schedule: Any, step: int, slots: Sequence[MaskSlot]) -> bool:
    """Update every mask by magnitude if the tfmot ``schedule`` prunes at ``step``."""
    should_prune, sparsity = schedule(step)
    if not bool(np.asarray(should_prune)):
        return False
    sparsity = float(np.asarray(sparsity))
    for slot in slots:
        set_mask(slot, magnitude_mask(_masked_weight(slot), sparsity))
    logger.info("step %d: magnitude masks set to sparsity %.4f", step, sparsity)
    return True


class JacintoChannelSchedule:
    """caffe-jacinto's channel-wise threshold schedule (see module docstring).

    Args:
        target: sparsity_target (fraction of zeros wanted in the convolutions), 0 < target < 1.
        start_iter: sparsity_start_iter (0).
        start_factor: sparsity_start_factor (0.0).
        step_factor: sparsity_step_factor (0.01).
        step_iter: sparsity_step_iter (1000).
        threshold_maxratio: sparsity_threshold_maxratio (0.2).
        threshold_value_max: sparsity_threshold_value_max (0.2).
        threshold_step_factor: search step relative to max|w_c| (1e-7, hard-coded in Caffe).
        min_channels: 32 (Caffe's ni/no limits); min_kernel_size: 3.
    """

    when = "end"  # runs after the optimizer step, like Caffe's ThresholdNet

    def __init__(
        self,
        target: float,
        *,
        start_iter: int = 0,
        start_factor: float = 0.0,
        step_factor: float = 0.01,
        step_iter: int = 1000,
        threshold_maxratio: float = 0.2,
        threshold_value_max: float = 0.2,
        threshold_step_factor: float = 1e-7,
        min_channels: int = 32,
        min_kernel_size: int = 3,
    ) -> None:
        if not 0.0 < float(target) < 1.0:
            raise KerasqError(f"target must be in (0, 1), got {target!r}", layer="target")
        if int(step_iter) < 1:
            raise KerasqError(f"step_iter must be >= 1, got {step_iter!r}", layer="step_iter")
        self.target = float(target)
        self.start_iter = int(start_iter)
        self.start_factor = float(start_factor)
        self.step_factor = float(step_factor)
        self.step_iter = int(step_iter)
        self.threshold_maxratio = float(threshold_maxratio)
        self.threshold_value_max = float(threshold_value_max)
        self.threshold_step_factor = float(threshold_step_factor)
        self.min_channels = int(min_channels)
        self.min_kernel_size = int(min_kernel_size)
        self.factor = self.start_factor

    def fraction_for(self, ni: int, no: int) -> float:
        """Caffe's low/mid/high fraction: factor/2, factor, factor."""
        if ni >= 256 and no >= 512:
            return self.factor
        if ni >= self.min_channels and no >= self.min_channels:
            return self.factor
        return self.factor / 2.0

    def eligible(self, slot: MaskSlot) -> bool:
        """Caffe's rule: (ni >= 32 or no >= 32), group < no, kernel sides >= 3."""
        ni, no, group, kernel_h, kernel_w = slot.geometry()
        return (
            (ni >= self.min_channels or no >= self.min_channels)
            and group < no
            and kernel_h >= self.min_kernel_size
            and kernel_w >= self.min_kernel_size
        )

    @staticmethod
    def _is_convolution(slot: MaskSlot) -> bool:
        return len(slot.weight.shape) > 2

    def threshold(self, slots: Sequence[MaskSlot]) -> List[str]:
        """One thresholding pass at the current factor; returns the names thresholded."""
        done = []
        for slot in slots:
            if not self.eligible(slot):
                continue
            ni, no, _, _, _ = slot.geometry()
            mask = jacinto_channel_mask(
                _masked_weight(slot),
                self.fraction_for(ni, no),
                layout=slot.layout,
                maxratio=self.threshold_maxratio,
                value_max=self.threshold_value_max,
                step_factor=self.threshold_step_factor,
            )
            set_mask(slot, mask)
            done.append(slot.name)
        return done

    def __call__(self, step: int, slots: Sequence[MaskSlot]) -> bool:
        """Apply the schedule after iteration ``step``; True if masks changed."""
        convs = [s for s in slots if self._is_convolution(s)]
        if not (
            self.target > 0
            and step >= self.start_iter
            and step % self.step_iter == 0
            and self.factor <= min(self.target + 0.15, 0.95)
        ):
            return False
        current = mask_sparsity(convs)
        if current >= self.target:
            return False
        names = self.threshold(convs)
        logger.info(
            "iter %d: channel-wise threshold at factor %.3f on %d layers (was %.4f sparse)",
            step,
            self.factor,
            len(names),
            current,
        )
        self.factor += self.step_factor
        return bool(names)

    def get_config(self) -> Dict[str, Any]:
        return {
            "target": self.target,
            "start_iter": self.start_iter,
            "start_factor": self.start_factor,
            "step_factor": self.step_factor,
            "step_iter": self.step_iter,
            "threshold_maxratio": self.threshold_maxratio,
            "threshold_value_max": self.threshold_value_max,
            "threshold_step_factor": self.threshold_step_factor,
            "min_channels": self.min_channels,
            "min_kernel_size": self.min_kernel_size,
        }


def final_sparsity(schedule: Any) -> float:
    """The sparsity a tfmot schedule ends at (``final_sparsity`` / ``target_sparsity``).

    Example: ``final_sparsity(ConstantSparsity(0.5, 0))`` -> 0.5.
    """
    for attr in ("final_sparsity", "target_sparsity"):
        if hasattr(schedule, attr):
            return float(getattr(schedule, attr))
    raise ModelFormatError(
        f"cannot read the final sparsity of {type(schedule).__name__}", layer="schedule"
    )


__all__ = [
    "ConstantSparsity",
    "PolynomialDecay",
    "PruningSchedule",
    "JacintoChannelSchedule",
    "apply_tfmot_schedule",
    "mask_sparsity",
    "final_sparsity",
]
