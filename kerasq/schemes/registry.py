"""``KerasqQuantizeRegistry``: layer -> QuantizeConfig, built from a ``QuantizationConfig``.

The table below is the whole policy. Weighted layers get weight quantizers (per output
channel along the listed axes) and an output quantizer; activation, merge and
averaging layers get an output quantizer; layers that only move values (reshape,
padding, max pooling, dropout) keep their producer's grid and get none. A layer kerasq
has no rule for follows ``QuantizationConfig.unknown_layers``.

Example:
    >>> registry = KerasqQuantizeRegistry(QuantizationConfig(bitwidth_weights=4))  # doctest: +SKIP
    >>> registry.get_quantize_config(model.get_layer("conv1"))  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

from kerasq._compat import tfmot
from kerasq.errors import UnsupportedLayerError
from kerasq.schemes import quantize_configs as C
from kerasq.schemes.config import QuantizationConfig
from kerasq.schemes.quantizers import (
    AccumulatorBiasQuantizer,
    BiasQuantizer,
    DFPActivationQuantizer,
    DFPWeightQuantizer,
    MinifloatQuantizer,
    Pow2WeightQuantizer,
)

logger = logging.getLogger("kerasq.schemes.registry")

@dataclasses.dataclass(frozen=True)
class LayerFacts:
    """What kerasq knows about one Keras layer class.

    ``role``: "weighted" (weight and output quantizers), "output" (a new real value:
    output quantizer), "passthrough" (moves values: keeps its producer's grid) or
    "float". ``config``: the QuantizeConfig class of a weighted layer. ``channel_axes``:
    weight attribute -> kept (per-channel) axes of its quantizer. ``kernel_attr``: the
    kernel attribute a BatchNorm folds into / integer kernels read. ``fold_axis``: the
    kernel's output-channel axis for BatchNorm folding (:data:`FOLD_DEPTHWISE` for a
    depthwise kernel (kh, kw, in, mult); None: BatchNorm is not folded into it).
    ``folded_config``: a folded layer gets ``FoldedConvQuantizeConfig``. ``linear_kind``:
    "conv" / "depthwise" / "dense" for layers with an integer (int8) kernel.
    """

    role: str
    config: Optional[type] = None
    channel_axes: Mapping[str, Tuple[int, ...]] = dataclasses.field(default_factory=dict)
    kernel_attr: Optional[str] = None
    fold_axis: Union[int, str, None] = None
    folded_config: bool = False
    linear_kind: Optional[str] = None

    @property
    def foldable(self) -> bool:
        """True if a following BatchNormalization folds into this layer."""
        return self.fold_axis is not None


FOLD_DEPTHWISE = "depthwise"

_KERNEL = {"kernel": (-1,)}
_DEPTHWISE = {"depthwise_kernel": (-2, -1)}
_SEPARABLE = {"depthwise_kernel": (-2, -1), "pointwise_kernel": (-1,)}

#: Keras class name -> :class:`LayerFacts` (the whole per-layer policy of kerasq).
LAYER_FACTS: Dict[str, LayerFacts] = {
    "Conv1D": LayerFacts("weighted", C.ConvQuantizeConfig, _KERNEL, "kernel", -1, True),
    "Conv2D": LayerFacts("weighted", C.ConvQuantizeConfig, _KERNEL, "kernel", -1, True, "conv"),
    "Conv3D": LayerFacts("weighted", C.ConvQuantizeConfig, _KERNEL, "kernel"),
    "Dense": LayerFacts("weighted", C.DenseQuantizeConfig, _KERNEL, "kernel", -1, True, "dense"),
    "DepthwiseConv2D": LayerFacts("weighted", C.DepthwiseConvQuantizeConfig, _DEPTHWISE,
                                  "depthwise_kernel", FOLD_DEPTHWISE, True, "depthwise"),
    "DepthwiseConv1D": LayerFacts("weighted", C.DepthwiseConvQuantizeConfig, _DEPTHWISE,
                                  "depthwise_kernel"),
    "Conv2DTranspose": LayerFacts("weighted", C.ConvTransposeQuantizeConfig, {"kernel": (-2,)},
                                  "kernel", -2),
    "Conv3DTranspose": LayerFacts("weighted", C.ConvTransposeQuantizeConfig, {"kernel": (-2,)},
                                  "kernel"),
    "SeparableConv1D": LayerFacts("weighted", C.SeparableConvQuantizeConfig, _SEPARABLE,
                                  "pointwise_kernel"),
    "SeparableConv2D": LayerFacts("weighted", C.SeparableConvQuantizeConfig, _SEPARABLE,
                                  "pointwise_kernel"),
    **{name: LayerFacts("output") for name in (
        "ReLU", "Activation", "LeakyReLU", "PReLU", "ELU", "ThresholdedReLU", "Softmax",
        "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate",
        "AveragePooling1D", "AveragePooling2D", "AveragePooling3D",
        "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D",
        "BatchNormalization", "LayerNormalization", "UpSampling2D", "Resizing")},
    # output values are a subset of input values: already on the grid
    **{name: LayerFacts("passthrough") for name in (
        "Reshape", "Flatten", "Permute", "Dropout", "SpatialDropout1D", "SpatialDropout2D",
        "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Cropping1D", "Cropping2D",
        "Cropping3D", "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "GlobalMaxPooling1D",
        "GlobalMaxPooling2D", "GlobalMaxPooling3D", "RepeatVector", "GaussianNoise",
        "GaussianDropout", "AlphaDropout", "ActivityRegularization", "InputLayer")},
}

# Views of LAYER_FACTS by role (class name -> (config class, {weight attribute: axes})).
WEIGHTED_LAYERS: Dict[str, Tuple[type, Mapping[str, Tuple[int, ...]]]] = {
    name: (f.config, f.channel_axes) for name, f in LAYER_FACTS.items() if f.role == "weighted"}
OUTPUT_LAYERS = frozenset(n for n, f in LAYER_FACTS.items() if f.role == "output")
PASSTHROUGH_LAYERS = frozenset(n for n, f in LAYER_FACTS.items() if f.role == "passthrough")
#: Roles a custom layer class may declare in its ``quantization_role`` class attribute.
DECLARED_ROLES = ("weighted", "output", "passthrough", "float")


def layer_facts(layer: Any) -> Optional[LayerFacts]:
    """The :class:`LayerFacts` of a layer (instance or class) by its Keras class name."""
    cls = layer if isinstance(layer, type) else type(layer)
    return LAYER_FACTS.get(cls.__name__)


def layer_role(layer: Any) -> Optional[str]:
    """"weighted", "output", "passthrough", "float" or None (unknown) for ``layer``.

    A custom layer class declares its role as a class attribute
    ``quantization_role = "output" | "passthrough" | "float"`` (read first); Keras layers
    have theirs in :data:`LAYER_FACTS`.
    """
    declared = getattr(type(layer), "quantization_role", None)
    if declared in ("output", "passthrough", "float"):
        return declared
    facts = layer_facts(layer)
    return facts.role if facts is not None else None


def float_valued_layers(layers: Mapping[str, Any],
                        producers: Mapping[str, Sequence[str]]) -> frozenset:
    """Names of the layers whose values are float by role: "float"-role layers, and the
    passthrough layers and Concatenates all of whose producers are float-valued (e.g. the
    SSD priors: PriorBox constants -> Reshape -> Concatenate ``mbox_priorbox``). They get
    no quantizer, so the values stay exact.

    Example:
        >>> float_valued_layers({}, {})
        frozenset()
    """
    floats: set = set()
    changed = True
    while changed:
        changed = False
        for name, layer in layers.items():
            if name in floats:
                continue
            role = layer_role(layer)
            ins = [p for p in producers.get(name, ()) if p in layers]
            keeps = role == "passthrough" or type(layer).__name__ == "Concatenate"
            if role == "float" or (keeps and ins and all(p in floats for p in ins)):
                floats.add(name)
                changed = True
    return frozenset(floats)


# Consumers that quantize their own output: a producer feeding only these is not
# quantized (caffe-jacinto: Conv/IP/Eltwise followed by ReLU or BatchNorm).
MERGING_CONSUMERS = frozenset({"ReLU", "BatchNormalization"})


def activation_quantizer(config: QuantizationConfig) -> Any:
    """The output/activation quantizer that ``config`` asks for (None for float)."""
    if config.precision == "float" or not config.quantize_activations:
        return None
    if config.precision == "minifloat":
        return MinifloatQuantizer(config.exp_bits, config.mant_bits, config.rounding,
                                  config.train_rounding, config.quantization_start,
                                  is_weight=False)
    return DFPActivationQuantizer(
        bitwidth=config.bitwidth_activations, rounding=config.rounding,
        train_rounding=config.train_rounding,
        signed=None if config.unsigned_activations else True,
        power2_range=config.power2_range, apply_offset=config.apply_offset_activations,
        range_estimator=config.range_estimator, percentile=config.percentile,
        ema_update_factor=config.ema_update_factor, range_expansion=config.range_expansion,
        frac_bits=config.frac_bits_activations, quantization_start=config.quantization_start)


def weight_quantizer(config: QuantizationConfig, channel_axes: Tuple[int, ...]) -> Any:
    """The kernel quantizer that ``config`` asks for (None for float)."""
    if config.precision == "float" or not config.quantize_weights:
        return None
    if config.precision == "minifloat":
        return MinifloatQuantizer(config.exp_bits, config.mant_bits, config.rounding,
                                  config.train_rounding, config.quantization_start)
    if config.precision == "pow2_weights":
        return Pow2WeightQuantizer(config.pow2_exp_min, config.pow2_exp_max, config.rounding,
                                   config.train_rounding, config.quantization_start)
    return DFPWeightQuantizer(
        bitwidth=config.bitwidth_weights, rounding=config.rounding,
        train_rounding=config.train_rounding,
        channel_axes=channel_axes if config.per_channel_weights else None,
        power2_range=config.power2_range, apply_offset=config.apply_offset_weights,
        frac_bits=config.frac_bits_weights, quantization_start=config.quantization_start)


def bias_quantizer(config: QuantizationConfig) -> Any:
    """Bias: float for ``bitwidth_bias=32`` (an int32 accumulator bias at export) and
    for pow2 weights (Ristretto); the minifloat format for minifloat; else DFP."""
    if config.precision in ("float", "pow2_weights") or not config.quantize_weights:
        return None
    if config.precision == "minifloat":
        return MinifloatQuantizer(config.exp_bits, config.mant_bits, config.rounding,
                                  config.train_rounding, config.quantization_start)
    if config.bitwidth_bias >= 32:
        # float until the int8 export (or SharedGridCallback) links it to the int32 grid
        # s_in·s_w; a Ristretto/caffe-jacinto dialect keeps 32-bit biases in float
        if config.power2_range and not config.apply_offset_weights \
                and config.frac_bits_weights is None:
            return AccumulatorBiasQuantizer(config.rounding, config.train_rounding,
                                            config.quantization_start)
        return None
    # A pinned weight fl (Ristretto's fl_params) also applies to the bias, as in Ristretto.
    return BiasQuantizer(config.bitwidth_bias, config.rounding, config.train_rounding,
                         frac_bits=config.frac_bits_weights,
                         quantization_start=config.quantization_start)


def _is_probability(layer: Any) -> bool:
    name = type(layer).__name__
    if name == "Softmax":
        return True
    return name == "Activation" and layer.get_config().get("activation") in ("softmax", "sigmoid")


class KerasqQuantizeRegistry(tfmot().quantization.keras.QuantizeRegistry):
    """Maps a layer to its kerasq ``QuantizeConfig`` under a ``QuantizationConfig``."""

    def __init__(self, config: Optional[QuantizationConfig] = None) -> None:
        self.config = config or QuantizationConfig()

    def supports(self, layer: Any) -> bool:
        """True unless the layer is unknown and ``unknown_layers="error"``."""
        return layer_role(layer) is not None or self.config.unknown_layers != "error"

    def get_quantize_config(self, layer: Any, *, quantize_output: bool = True,
                            folded_batchnorm: str = "") -> Any:
        """The QuantizeConfig for ``layer``; ``quantize_output=False`` when a consumer
        (ReLU, BatchNormalization) quantizes the value instead."""
        cfg = self.config.for_layer(layer)
        name = type(layer).__name__
        out_q = activation_quantizer(cfg) if quantize_output else None
        outputs = [out_q] if out_q is not None else []
        if cfg.precision == "float":
            return C.NoOpQuantizeConfig()
        if name in WEIGHTED_LAYERS:
            config_cls, axes_by_attr = WEIGHTED_LAYERS[name]
            wq = {}
            for attr, axes in axes_by_attr.items():
                q = weight_quantizer(cfg, axes)
                if q is not None:
                    wq[attr] = q
            bq = bias_quantizer(cfg)
            if bq is not None:
                wq["bias"] = bq
            if folded_batchnorm and LAYER_FACTS[name].folded_config:
                return C.FoldedConvQuantizeConfig(wq, outputs, folded_batchnorm=folded_batchnorm)
            return config_cls(wq, outputs)
        role = layer_role(layer)
        if role == "output":
            if outputs and _is_probability(layer) and isinstance(out_q, DFPActivationQuantizer):
                # softmax/sigmoid lie in [0, 1]: fixed unsigned fl = B (TFLite: scale 1/256)
                fixed = out_q.get_config()
                fixed.update(signed=False, frac_bits=cfg.bitwidth_activations)
                outputs = [DFPActivationQuantizer.from_config(fixed)]
            return C.OutputQuantizeConfig({}, outputs)
        if role in ("passthrough", "float"):
            return C.NoOpQuantizeConfig()
        policy = cfg.unknown_layers
        if policy == "error":
            raise UnsupportedLayerError(
                f"no quantization rule for layer type {name}; set unknown_layers='float' or "
                f"'quantize_outputs', or list it in ignored_layers", layer=layer.name)
        if policy == "quantize_outputs":
            logger.info("%s (%s): unknown layer type, its float outputs are quantized",
                        layer.name, name)
            return C.OutputQuantizeConfig({}, outputs)
        logger.warning("%s (%s): unknown layer type, kept in float (unknown_layers='float')",
                       layer.name, name)
        return C.NoOpQuantizeConfig()


__all__ = ["KerasqQuantizeRegistry", "activation_quantizer", "weight_quantizer",
           "bias_quantizer", "LayerFacts", "LAYER_FACTS", "layer_facts", "layer_role",
           "WEIGHTED_LAYERS", "OUTPUT_LAYERS", "PASSTHROUGH_LAYERS", "MERGING_CONSUMERS",
           "float_valued_layers",
           "FOLD_DEPTHWISE"]
