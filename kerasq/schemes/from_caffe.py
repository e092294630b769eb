"""caffe-jacinto / Ristretto settings (read by the converter) -> ``QuantizationConfig`` fields.

The Caffe converter reads a net's quantization settings once
(:func:`kerasq.converters.caffe.quantization.read_quantization_settings`, a neutral
:class:`~kerasq.converters.caffe.quantization.CaffeQuantization`). This module is the thin
translation into the fields of a :class:`~kerasq.schemes.config.QuantizationConfig`: the
net-level settings become the config's fields, each layer's own settings an ``overrides``
entry keyed by its Caffe name and by the Keras name the converter gives it (``conv1/3x3`` ->
``conv1_3x3``). One policy applies on the way: kerasq's power-of-two (DFP) grid is symmetric,
so an offset asked for together with a power-of-two scale is dropped with a warning.

Use ``QuantizationConfig.from_caffe(path, solver=None, flavor=None)`` (or
:func:`kerasq.schemes.config.config_from_caffe`); this module imports nothing of
``kerasq.schemes`` (``config`` imports it, not the other way round).

Example:
    >>> from kerasq.converters.caffe.quantization import CaffeQuantization
    >>> fields = config_fields(CaffeQuantization("ristretto", {"precision": "float"}))
    >>> fields["precision"], fields["overrides"]
    ('float', {})
"""

from __future__ import annotations

import logging
import re
from typing import Any, Callable, Dict, Optional

from kerasq.converters.caffe.quantization import (
    FLAVORS,
    CaffeQuantization,
    detect_flavor,
    read_quantization_settings,
)
from kerasq.errors import QuantizationConfigError

log = logging.getLogger("kerasq.schemes.from_caffe")

__all__ = ["config_fields", "build_config", "detect_flavor", "read_quantization_settings",
           "FLAVORS"]


def _drop_pow2_offsets(fields: Dict[str, Any], source: Optional[str],
                       inherited: Optional[Dict[str, Any]] = None) -> None:
    """caffe-jacinto allows a power-of-two scale with an offset; kerasq's DFP grid is
    symmetric, so the offset is dropped (with a warning) instead of failing.

    ``inherited`` are the net-level fields a per-layer ``fields`` dict is merged onto."""
    effective = {**(inherited or {}), **fields}
    if not effective.get("power2_range", False):
        return
    for name in ("apply_offset_weights", "apply_offset_activations"):
        if effective.get(name):
            log.warning("%s: %s with a power-of-two scale is not supported by kerasq (its DFP "
                        "grid is symmetric); the offset is not applied", source, name)
            fields[name] = False


def config_fields(settings: CaffeQuantization) -> Dict[str, Any]:
    """``QuantizationConfig`` fields (``overrides`` included) for ``settings``.

    Overrides are keyed by the Caffe layer name and, when it differs, by the converter's
    Keras layer name.
    """
    fields = dict(settings.net)
    _drop_pow2_offsets(fields, settings.source)
    overrides: Dict[str, Dict[str, Any]] = {}
    for layer in settings.layers:
        layer_fields = dict(layer.fields)
        _drop_pow2_offsets(layer_fields, settings.source, inherited=fields)
        overrides[layer.name] = layer_fields
    keyed = dict(overrides)
    for layer in settings.layers:
        keyed.setdefault(layer.keras_name, overrides[layer.name])
    fields["overrides"] = keyed
    return fields


def build_config(config_class: Callable[..., Any], settings: CaffeQuantization) -> Any:
    """A validated ``config_class`` (``QuantizationConfig``) from ``settings``; errors name the
    Caffe field, file, line and layer.

    Example:
        ``build_config(QuantizationConfig, read_quantization_settings("test.prototxt"))``
    """
    fields = config_fields(settings)
    net_fields = {k: v for k, v in fields.items() if k != "overrides"}
    for layer in settings.layers:
        try:
            config_class(**net_fields).replace(**fields["overrides"][layer.name])
        except QuantizationConfigError as err:
            raise QuantizationConfigError(f"quantization_param: {err.reason}",
                                          file=settings.source, layer=layer.name) from None
    try:
        return config_class.from_dict(fields)
    except QuantizationConfigError as err:
        match = re.match(r"(\w+)=", err.reason)
        key = match.group(1) if match else None
        if err.layer is None and key in settings.provenance:
            caffe, line = settings.provenance[key]
            raise QuantizationConfigError(f"{caffe} (line {line}): {err.reason}",
                                          file=settings.source) from None
        raise err.with_context(file=settings.source) from None
