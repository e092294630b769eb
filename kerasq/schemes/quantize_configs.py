"""tfmot ``QuantizeConfig`` classes, one per layer family.

A config says which weights of a layer are fake-quantized by which quantizer and which
quantizers act on the layer's output (post-activation). Quantizers are constructor
arguments and are serialized with the config, so a saved model reloads with exactly
the quantizers it was trained with.

Families: :class:`ConvQuantizeConfig` (Conv1D/2D/3D), :class:`DepthwiseConvQuantizeConfig`,
:class:`DenseQuantizeConfig`, :class:`ConvTransposeQuantizeConfig`,
:class:`SeparableConvQuantizeConfig`, :class:`FoldedConvQuantizeConfig` (a conv or dense
whose following BatchNormalization was folded into it), :class:`OutputQuantizeConfig`
(activations, Add/Concatenate/pooling/BatchNormalization outputs, unknown layers when
``unknown_layers="quantize_outputs"``) and :class:`NoOpQuantizeConfig` (layers that only move
values, whose output is already on its producer's grid, and layers kept in float).

Example:
    >>> cfg = DenseQuantizeConfig(weight_quantizers={"kernel": DFPWeightQuantizer(4)})  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from kerasq._compat import keras, tfmot
from kerasq.serialization import deserialize

_QuantizeConfig = tfmot().quantization.keras.QuantizeConfig


def _serialize(q: Any) -> Any:
    return keras.utils.serialize_keras_object(q) if q is not None else None


def _deserialize(d: Any) -> Any:
    return deserialize(d)


class _WeightsAndOutputConfig(_QuantizeConfig):
    """Fake-quantize the named weight attributes and the layer output."""

    weight_attrs: Tuple[str, ...] = ()

    def __init__(self, weight_quantizers: Optional[Mapping[str, Any]] = None,
                 output_quantizers: Sequence[Any] = ()) -> None:
        self.weight_quantizers = dict(weight_quantizers or {})
        unknown = set(self.weight_quantizers) - set(self.weight_attrs)
        if unknown:
            raise ValueError(f"{type(self).__name__}: no weight attribute {sorted(unknown)}")
        self.output_quantizers = list(output_quantizers)

    def _present(self, layer: Any) -> List[str]:
        return [a for a in self.weight_attrs
                if a in self.weight_quantizers and getattr(layer, a, None) is not None]

    def get_weights_and_quantizers(self, layer: Any) -> List[Tuple[Any, Any]]:
        return [(getattr(layer, a), self.weight_quantizers[a]) for a in self._present(layer)]

    def get_activations_and_quantizers(self, layer: Any) -> List[Tuple[Any, Any]]:
        return []

    def set_quantize_weights(self, layer: Any, quantize_weights: List[Any]) -> None:
        attrs = self._present(layer)
        if len(attrs) != len(quantize_weights):
            raise ValueError(f"{layer.name}: expected {len(attrs)} quantized weights, "
                             f"got {len(quantize_weights)}")
        for attr, value in zip(attrs, quantize_weights, strict=True):
            setattr(layer, attr, value)

    def set_quantize_activations(self, layer: Any, quantize_activations: List[Any]) -> None:
        return None

    def get_output_quantizers(self, layer: Any) -> List[Any]:
        return list(self.output_quantizers)

    def get_config(self) -> Dict[str, Any]:
        return {"weight_quantizers": {k: _serialize(v) for k, v in self.weight_quantizers.items()},
                "output_quantizers": [_serialize(q) for q in self.output_quantizers]}

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "_WeightsAndOutputConfig":
        config = dict(config)
        config["weight_quantizers"] = {
            k: _deserialize(v) for k, v in (config.get("weight_quantizers") or {}).items()}
        config["output_quantizers"] = [_deserialize(q) for q in config.get("output_quantizers") or []]
        return cls(**config)

    def __eq__(self, other: object) -> bool:
        return (type(self) is type(other)
                and self.weight_quantizers == other.weight_quantizers  # type: ignore[attr-defined]
                and self.output_quantizers == other.output_quantizers)  # type: ignore[attr-defined]

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(weight_quantizers={self.weight_quantizers!r}, "
                f"output_quantizers={self.output_quantizers!r})")


@keras.utils.register_keras_serializable(package="kerasq")
class ConvQuantizeConfig(_WeightsAndOutputConfig):
    """Conv1D/2D/3D: ``kernel`` (per output channel, last axis) and ``bias``."""

    weight_attrs = ("kernel", "bias")


@keras.utils.register_keras_serializable(package="kerasq")
class DenseQuantizeConfig(_WeightsAndOutputConfig):
    """Dense: ``kernel`` (per output unit, last axis) and ``bias``."""

    weight_attrs = ("kernel", "bias")


@keras.utils.register_keras_serializable(package="kerasq")
class DepthwiseConvQuantizeConfig(_WeightsAndOutputConfig):
    """DepthwiseConv2D: ``depthwise_kernel`` (per output channel = axes 2 and 3) and ``bias``."""

    weight_attrs = ("depthwise_kernel", "bias")


@keras.utils.register_keras_serializable(package="kerasq")
class ConvTransposeQuantizeConfig(_WeightsAndOutputConfig):
    """Conv2DTranspose/Conv3DTranspose: ``kernel`` (output channels on axis -2) and ``bias``."""

    weight_attrs = ("kernel", "bias")


@keras.utils.register_keras_serializable(package="kerasq")
class SeparableConvQuantizeConfig(_WeightsAndOutputConfig):
    """SeparableConv1D/2D: ``depthwise_kernel``, ``pointwise_kernel`` and ``bias``."""

    weight_attrs = ("depthwise_kernel", "pointwise_kernel", "bias")


@keras.utils.register_keras_serializable(package="kerasq")
class FoldedConvQuantizeConfig(_WeightsAndOutputConfig):
    """A Conv2D/DepthwiseConv2D/Dense carrying a folded BatchNormalization.

    The kernel holds W·γ/√(σ²+ε) and the bias (b − μ)·γ/√(σ²+ε) + β, so the weights
    that are quantized are the ones an integer runtime would use.
    """

    weight_attrs = ("kernel", "depthwise_kernel", "bias")

    def __init__(self, weight_quantizers: Optional[Mapping[str, Any]] = None,
                 output_quantizers: Sequence[Any] = (), folded_batchnorm: str = "") -> None:
        super().__init__(weight_quantizers, output_quantizers)
        self.folded_batchnorm = folded_batchnorm

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "folded_batchnorm": self.folded_batchnorm}


@keras.utils.register_keras_serializable(package="kerasq")
class OutputQuantizeConfig(_WeightsAndOutputConfig):
    """Only the output: activations, Add, Concatenate, pooling, unknown layers."""

    weight_attrs = ()


@keras.utils.register_keras_serializable(package="kerasq")
class NoOpQuantizeConfig(_WeightsAndOutputConfig):
    """Nothing quantized (layout layers, ignored layers, float precision)."""

    weight_attrs = ()

    def __init__(self, weight_quantizers: Optional[Mapping[str, Any]] = None,
                 output_quantizers: Sequence[Any] = ()) -> None:
        super().__init__({}, [])


QUANTIZE_CONFIGS = (ConvQuantizeConfig, DenseQuantizeConfig, DepthwiseConvQuantizeConfig,
                    ConvTransposeQuantizeConfig, SeparableConvQuantizeConfig,
                    FoldedConvQuantizeConfig, OutputQuantizeConfig, NoOpQuantizeConfig)

__all__ = [c.__name__ for c in QUANTIZE_CONFIGS]
