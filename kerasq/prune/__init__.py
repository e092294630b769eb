"""Sparsity that survives quantization: saved masks, magnitude pruning schedules, reports.

Public API (names are resolved on first use, so ``import kerasq.prune`` stays cheap):

* :class:`SparsityPreservingQuantizer` - tfmot weight quantizer with a saved mask
  (``quantize_model(..., preserve_sparsity=True)`` wraps every weight quantizer with it).
* :func:`prune_model` / :class:`PruneWrapper` - masks for a float model; :func:`strip`.
* :class:`PruningCallback` with :class:`ConstantSparsity` / :class:`PolynomialDecay` (tfmot's
  schedules) or :class:`JacintoChannelSchedule` (caffe-jacinto's channel-wise threshold).
* :func:`sparsity_report`, :func:`format_sparsity`, :class:`SparsityReportCallback`.
* :func:`init_masks`, :func:`apply_masks`, :func:`find_mask_slots`.

Example:
    >>> import kerasq.prune as kp
    >>> schedule = kp.JacintoChannelSchedule(target=0.8)  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY_ATTRS = {
    "SparsityPreservingQuantizer": "kerasq.schemes.sparsity",
    "PruneWrapper": "kerasq.prune.wrapper",
    "prunable_weight_names": "kerasq.prune.wrapper",
    "MaskSlot": "kerasq.prune.masks",
    "find_mask_slots": "kerasq.prune.masks",
    "init_masks": "kerasq.prune.masks",
    "apply_masks": "kerasq.prune.masks",
    "magnitude_mask": "kerasq.prune.magnitude",
    "jacinto_channel_mask": "kerasq.prune.magnitude",
    "jacinto_channel_threshold": "kerasq.prune.magnitude",
    "ConstantSparsity": "kerasq.prune.schedules",
    "PolynomialDecay": "kerasq.prune.schedules",
    "JacintoChannelSchedule": "kerasq.prune.schedules",
    "PruningCallback": "kerasq.prune.callbacks",  # tf_keras or Keras 3 models
    "SparsityReportCallback": "kerasq.prune.callbacks",
    "prune_model": "kerasq.prune.api",  # tf_keras or Keras 3 models
    "strip": "kerasq.prune.api",
    "one_shot_prune": "kerasq.prune.api",
    "sparsity_report": "kerasq.prune.report",
    "format_sparsity": "kerasq.prune.report",
    "SparsityRow": "kerasq.prune.report",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY_ATTRS:
        value = getattr(importlib.import_module(_LAZY_ATTRS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'kerasq.prune' has no attribute {name!r}")


def __dir__() -> list:
    return sorted(set(globals()) | set(_LAZY_ATTRS))


__all__ = list(_LAZY_ATTRS)  # noqa: PLE0605
