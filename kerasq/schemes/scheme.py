"""``KerasqQuantizeScheme``: the tfmot scheme (registry + layout transform) of kerasq.

Usable directly with tfmot's API as well as through :func:`kerasq.quantize_model`::

    annotated = tfmot.quantization.keras.quantize_annotate_model(model)
    qmodel = tfmot.quantization.keras.quantize_apply(
        annotated, KerasqQuantizeScheme(QuantizationConfig(bitwidth_weights=4)))
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

from kerasq._compat import tfmot
from kerasq.schemes.config import QuantizationConfig
from kerasq.schemes.registry import KerasqQuantizeRegistry, activation_quantizer
from kerasq.schemes.transforms import fold_batchnorm, insert_input_quantizers

_keras_q = tfmot().quantization.keras


class KerasqLayoutTransform(_keras_q.QuantizeLayoutTransform):
    """Folds BatchNormalization into conv/dense and quantizes the float model inputs."""

    def __init__(self, config: Optional[QuantizationConfig] = None) -> None:
        self.config = config or QuantizationConfig()
        self.folded: Dict[str, str] = {}

    def apply(self, model: Any, layer_quantize_map: Dict[str, Any]) -> Tuple[Any, Dict[str, Any]]:
        """Return (transformed model, layer_quantize_map without the folded BN layers)."""
        if self.config.fold_batchnorm:
            model, folded = fold_batchnorm(model)
            self.folded.update(folded)
            for bn in folded.values():
                layer_quantize_map.pop(bn, None)
        if self.config.quantize_inputs:
            model = insert_input_quantizers(model, activation_quantizer(self.config))
        return model, layer_quantize_map


class _AppliedLayoutTransform(_keras_q.QuantizeLayoutTransform):
    """The layout step of a model that :class:`KerasqLayoutTransform` already transformed."""

    def apply(self, model: Any, layer_quantize_map: Dict[str, Any]) -> Tuple[Any, Dict[str, Any]]:
        return model, layer_quantize_map


class KerasqQuantizeScheme(_keras_q.QuantizeScheme):
    """kerasq's scheme: :class:`KerasqLayoutTransform` + :class:`KerasqQuantizeRegistry`.

    ``layout_applied=True``: the model given to ``quantize_apply`` is already transformed
    (what :func:`kerasq.quantize_model` does, to plan each layer's config on the folded
    graph), so tfmot does not run the transform a second time.
    """

    def __init__(self, config: Optional[QuantizationConfig] = None, *,
                 layout_applied: bool = False) -> None:
        self.config = config or QuantizationConfig()
        self.layout_applied = layout_applied

    def get_layout_transformer(self) -> Any:
        if self.layout_applied:
            return _AppliedLayoutTransform()
        return KerasqLayoutTransform(self.config)

    def get_quantize_registry(self) -> KerasqQuantizeRegistry:
        return KerasqQuantizeRegistry(self.config)


__all__ = ["KerasqQuantizeScheme", "KerasqLayoutTransform"]
