"""``QuantizationConfig``: the net-level quantization settings of kerasq.

One immutable, validated, JSON-serializable object that plays the role of
caffe-jacinto's ``NetQuantizationParameter`` and Ristretto's ``QuantizationParameter``.
kerasq's defaults are its own: symmetric power-of-two dynamic fixed point (DFP) with
8-bit weights (per channel) and 8-bit activations, which is exactly representable as
TFLite int8 (scale 2^-fl, zero point 0) and maps an exact zero to an exact zero.

Rounding, precisely (kerasq's default ``rounding`` is ``"nearest_even"``: ties to even
is what TFLite's default int8 kernels (XNNPACK) do when they requantize, so an exported
int8 file and the Keras model agree bit for bit; the Ristretto / caffe-jacinto readers
set ``"nearest"``, ties away from zero, explicitly):
  * inference (``training=False``): every quantizer uses ``rounding``;
  * training (``training=True``): weights use ``train_rounding`` or, when it is
    ``None``, ``"stochastic"`` (Ristretto and caffe-jacinto round weights stochastically
    in the TRAIN phase); activations use ``train_rounding`` when it is set and
    ``rounding`` otherwise (stochastic activations are opt-in).

Range estimation (``range_estimator``), for activations; weight ranges always come from
the current weights (min/max, or max|w| per channel):
  * ``"minmax"``: running min and max over all calibration batches (kerasq default);
  * ``"max_abs"``: Ristretto's ``ristretto quantize`` statistics: running max|x| over all
    batches and Ristretto's integer-length rule il = ceil(log2(max|x|)) for activations
    (one bit shorter than needed for signed tensors, reproduced on purpose), and
    il = ceil(log2(max|w|)) + 1 for weights; fl = bitwidth - il;
  * ``"ema"``: caffe-jacinto 0.17's running range: the first batch sets
    r = e*batch_min/max, later ones r <- (1 - b)*r + b*e*batch_min/max with
    b = ``ema_update_factor`` (0.01) and e = ``range_expansion`` (1.25);
  * ``"percentile"``: running max of the per-batch ``percentile``-th percentile of |x|
    (and the 100 - p-th / p-th percentiles for min/max).

Example:
    >>> cfg = QuantizationConfig(bitwidth_weights=4, overrides={"Dense": {"bitwidth_weights": 8}})
    >>> cfg.bitwidth_weights, cfg.replace(rounding="nearest").rounding
    (4, 'nearest')
    >>> QuantizationConfig.from_json(cfg.to_json()) == cfg
    True
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import types
from typing import Any, Dict, Mapping, Optional, Tuple

from kerasq.errors import QuantizationConfigError
from kerasq.numerics.rounding import DEFAULT_ROUNDING, ROUNDING_MODES

PRECISIONS = ("dfp", "minifloat", "pow2_weights", "float")
ROUNDINGS = ROUNDING_MODES
RANGE_ESTIMATORS = ("minmax", "max_abs", "ema", "percentile")
UNKNOWN_LAYER_POLICIES = ("float", "quantize_outputs", "error")


#: Caffe type keys for plain Keras models only: a Keras layer without a ``caffe_type`` tag
#: (a model not made by the Caffe converter) also answers to the Caffe type of its class, so
#: ``overrides={"Convolution": {...}}`` reaches its Conv2D layers. Layers the converter made
#: carry their exact Caffe type as ``caffe_type`` (saved with the model) and never use this.
CAFFE_TYPE_OF_KERAS_CLASS = {
    "Conv2D": "Convolution", "DepthwiseConv2D": "Convolution", "Dense": "InnerProduct",
    "Conv2DTranspose": "Deconvolution", "ReLU": "ReLU", "PReLU": "PReLU", "ELU": "ELU",
    "Add": "Eltwise", "Multiply": "Eltwise", "Maximum": "Eltwise", "Concatenate": "Concat",
    "MaxPooling2D": "Pooling", "AveragePooling2D": "Pooling",
    "GlobalAveragePooling2D": "Pooling", "GlobalMaxPooling2D": "Pooling",
    "BatchNormalization": "BatchNorm", "Softmax": "Softmax",
}


def _frozen_overrides(value: Any) -> Mapping[str, Mapping[str, Any]]:
    if value is None:
        return types.MappingProxyType({})
    if not isinstance(value, Mapping):
        raise QuantizationConfigError(
            f"overrides={value!r}: must be a mapping of layer name or type to a dict of fields"
        )
    frozen = {}
    for key, fields in value.items():
        if not isinstance(key, str) or not key:
            raise QuantizationConfigError(f"overrides: key {key!r} must be a layer name or type")
        if not isinstance(fields, Mapping):
            raise QuantizationConfigError(
                f"overrides[{key!r}]={fields!r}: must be a dict of QuantizationConfig fields",
                layer=key,
            )
        for name in fields:
            if name in ("overrides", "ignored_layers") or name not in _FIELD_NAMES:
                raise QuantizationConfigError(
                    f"overrides[{key!r}]: unknown or non-overridable field {name!r}", layer=key
                )
        frozen[key] = types.MappingProxyType(dict(fields))
    return types.MappingProxyType(frozen)


@dataclasses.dataclass(frozen=True)
class QuantizationConfig:
    """Validated quantization settings for a whole model, with per-layer overrides.

    Fields (kerasq defaults): ``precision`` "dfp" | "minifloat" | "pow2_weights" | "float";
    ``bitwidth_weights``/``bitwidth_activations`` 8, ``bitwidth_bias`` 32 (2..32; bias
    fl = fl_in + fl_w when 32, like an int32 accumulator, else the weights' fl);
    ``rounding``/``train_rounding`` (see module docstring); ``power2_range`` True (DFP
    scales 2^-fl; False = caffe-jacinto's scale (2^(b-1)-1)/max|x|); offsets (asymmetric)
    off; ``unsigned_activations`` True (non-negative tensors use [0, 2^b - 1]);
    ``exp_bits``/``mant_bits`` 5/10 (minifloat E5M10); ``pow2_exp_min``/``max`` -8/-1;
    ``per_channel_weights`` True; ``range_estimator`` and its parameters;
    ``frac_bits_weights``/``frac_bits_activations`` fixed fractional lengths (Ristretto's
    ``fl_params``/``fl_layer_out``; None = derived from the ranges);
    ``quantization_start`` steps before fake quantization starts (ranges are collected
    before); ``quantize_inputs`` True (a DFP quantizer on every float model input;
    caffe-jacinto never quantizes the network input: False keeps it float, then the
    first layer's input is float and, in an int8 export, TFLite's QUANTIZE op picks
    its own input scale); ``ignored_layers``; ``unknown_layers`` what to do with layers kerasq has no
    rule for ("float" leaves them unquantized and logs it, "quantize_outputs" fake-quantizes
    their float outputs, "error" raises); ``fold_batchnorm`` folds BatchNormalization
    into the preceding conv/dense before quantizing (caffe-jacinto ``caffe optimize``);
    ``overrides`` maps a layer name or type to a dict of fields (name beats type).
    """

    precision: str = "dfp"
    bitwidth_weights: int = 8
    bitwidth_activations: int = 8
    bitwidth_bias: int = 32
    rounding: str = DEFAULT_ROUNDING
    train_rounding: Optional[str] = None
    power2_range: bool = True
    apply_offset_weights: bool = False
    apply_offset_activations: bool = False
    unsigned_activations: bool = True
    quantize_weights: bool = True
    quantize_activations: bool = True
    exp_bits: int = 5
    mant_bits: int = 10
    pow2_exp_min: int = -8
    pow2_exp_max: int = -1
    per_channel_weights: bool = True
    range_estimator: str = "minmax"
    percentile: float = 99.99
    ema_update_factor: float = 0.01
    range_expansion: float = 1.25
    frac_bits_weights: Optional[int] = None
    frac_bits_activations: Optional[int] = None
    quantization_start: int = 0
    quantize_inputs: bool = True
    ignored_layers: Tuple[str, ...] = ()
    unknown_layers: str = "float"
    fold_batchnorm: bool = True
    overrides: Mapping[str, Mapping[str, Any]] = dataclasses.field(
        default_factory=lambda: types.MappingProxyType({})
    )

    # ------------------------------------------------------------------ validation
    def __post_init__(self) -> None:
        def fail(field: str, why: str) -> None:
            raise QuantizationConfigError(f"{field}={getattr(self, field)!r}: {why}")

        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        def is_num(v: Any) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        if self.precision not in PRECISIONS:
            fail("precision", f"must be one of {', '.join(PRECISIONS)}")
        for name in ("bitwidth_weights", "bitwidth_activations", "bitwidth_bias"):
            v = getattr(self, name)
            if not is_int(v) or not 2 <= v <= 32:
                fail(name, "must be an integer in 2..32")
        if self.rounding not in ROUNDINGS:
            fail("rounding", f"must be one of {', '.join(ROUNDINGS)}")
        if self.train_rounding is not None and self.train_rounding not in ROUNDINGS:
            fail("train_rounding", f"must be None or one of {', '.join(ROUNDINGS)}")
        for name in (
            "power2_range", "apply_offset_weights", "apply_offset_activations",
            "unsigned_activations", "quantize_weights", "quantize_activations",
            "per_channel_weights", "fold_batchnorm", "quantize_inputs",
        ):
            if not isinstance(getattr(self, name), bool):
                fail(name, "must be True or False")
        if not is_int(self.exp_bits) or not 1 <= self.exp_bits <= 8:
            fail("exp_bits", "must be an integer in 1..8 (float32 holds the values)")
        if not is_int(self.mant_bits) or not 0 <= self.mant_bits <= 23:
            fail("mant_bits", "must be an integer in 0..23 (float32 holds the values)")
        for name in ("pow2_exp_min", "pow2_exp_max"):
            v = getattr(self, name)
            if not is_int(v) or not -126 <= v <= 127:
                fail(name, "must be an integer in -126..127")
        if self.pow2_exp_min > self.pow2_exp_max:
            fail("pow2_exp_min", f"must not exceed pow2_exp_max={self.pow2_exp_max}")
        if self.range_estimator not in RANGE_ESTIMATORS:
            fail("range_estimator", f"must be one of {', '.join(RANGE_ESTIMATORS)}")
        if not is_num(self.percentile) or not 50.0 < self.percentile <= 100.0:
            fail("percentile", "must be a number in (50, 100]")
        if not is_num(self.ema_update_factor) or not 0.0 < self.ema_update_factor <= 1.0:
            fail("ema_update_factor", "must be a number in (0, 1]")
        if not is_num(self.range_expansion) or not self.range_expansion >= 1.0:
            fail("range_expansion", "must be a number >= 1")
        for name in ("frac_bits_weights", "frac_bits_activations"):
            v = getattr(self, name)
            if v is not None and (not is_int(v) or not -64 <= v <= 64):
                fail(name, "must be None or an integer in -64..64")
        if not is_int(self.quantization_start) or self.quantization_start < 0:
            fail("quantization_start", "must be an integer >= 0")
        if self.unknown_layers not in UNKNOWN_LAYER_POLICIES:
            fail("unknown_layers", f"must be one of {', '.join(UNKNOWN_LAYER_POLICIES)}")
        ignored = self.ignored_layers
        if isinstance(ignored, str) or not all(isinstance(n, str) for n in ignored):
            fail("ignored_layers", "must be a sequence of layer names")
        object.__setattr__(self, "ignored_layers", tuple(ignored))
        if self.precision == "minifloat" and self.exp_bits + self.mant_bits + 1 > 32:
            fail("mant_bits", f"1 + exp_bits + mant_bits must be <= 32 (exp_bits={self.exp_bits})")
        overrides = _frozen_overrides(self.overrides)
        object.__setattr__(self, "overrides", overrides)
        for key, fields in overrides.items():
            try:
                dataclasses.replace(self, overrides={}, **dict(fields))
            except QuantizationConfigError as err:
                raise QuantizationConfigError(f"overrides[{key!r}]: {err.reason}",
                                              layer=key) from None

    def __hash__(self) -> int:
        return hash(self.to_json())

    # --------------------------------------------------------------- conveniences
    def replace(self, **changes: Any) -> "QuantizationConfig":
        """Return a copy with ``changes`` applied (validated).

        Example: ``QuantizationConfig().replace(bitwidth_weights=4)``.
        """
        unknown = sorted(set(changes) - set(_FIELD_NAMES))
        if unknown:
            raise QuantizationConfigError(f"{unknown[0]}: unknown QuantizationConfig field")
        return dataclasses.replace(self, **changes)

    @property
    def train_weight_rounding(self) -> str:
        """Rounding of weights while training: ``train_rounding`` or "stochastic"."""
        return self.train_rounding or "stochastic"

    @property
    def train_activation_rounding(self) -> str:
        """Rounding of activations while training: ``train_rounding`` or ``rounding``."""
        return self.train_rounding or self.rounding

    def is_ignored(self, layer: Any) -> bool:
        """True if ``layer`` (a Keras layer or a name) is listed in ``ignored_layers``."""
        name = layer if isinstance(layer, str) else getattr(layer, "name", None)
        return name in self.ignored_layers

    def for_layer(self, layer: Any, layer_type: Optional[str] = None) -> "QuantizationConfig":
        """The config that applies to ``layer``: overrides by type, then by name.

        ``layer`` is a Keras layer or a layer name. A layer's types are its Keras class
        name, its Caffe type, and ``layer_type`` if given; later ones win, the layer name
        wins over all. The Caffe type is the ``caffe_type`` tag the converter gives every
        layer it builds, or for an untagged layer the Caffe type of its Keras class
        (:data:`CAFFE_TYPE_OF_KERAS_CLASS`: Conv2D -> Convolution, Dense -> InnerProduct...).
        An ignored layer gets ``precision="float"``.
        """
        if isinstance(layer, str):
            name, types_ = layer, [layer_type]
        else:
            name = getattr(layer, "name", None)
            caffe_type = getattr(layer, "caffe_type", None)
            if not isinstance(caffe_type, str):
                caffe_type = CAFFE_TYPE_OF_KERAS_CLASS.get(type(layer).__name__)
            types_ = [type(layer).__name__, caffe_type, layer_type]
        merged: Dict[str, Any] = {}
        for t in types_:
            if t and t in self.overrides:
                merged.update(self.overrides[t])
        if name in self.overrides:
            merged.update(self.overrides[name])
        if name in self.ignored_layers:
            merged["precision"] = "float"
        if not merged:
            return self
        return dataclasses.replace(self, overrides={}, ignored_layers=(), **merged)

    def check_layer_names(self, model: Any) -> None:
        """Refuse ``ignored_layers`` entries and ``overrides`` keys that name nothing in ``model``.

        A name is known when it is a layer of ``model`` (nested models included), the Caffe
        name of a converted layer (its ``caffe_name`` tag) or of a Caffe layer the converter
        folded into one (``caffe_folded``: a BatchNorm or Scale folded into its conv); an
        ``overrides`` key may also be a layer type: a Keras layer class name or a Caffe type.
        The error names the key and lists close matches (a config read from the prototxt of
        another net fails on its first layer name).

        Example:
            >>> QuantizationConfig(ignored_layers=("conv9",)).check_layer_names(model)  # doctest: +SKIP
            Traceback (most recent call last):
            kerasq.errors.QuantizationConfigError: ignored_layers: no layer named 'conv9' ...
        """
        names = _model_layer_names(model)
        if not self.ignored_layers and not self.overrides:
            return
        types_ = _known_layer_types(model)
        for key, what in ([(n, "ignored_layers") for n in self.ignored_layers]
                          + [(k, "overrides") for k in self.overrides]):
            if key in names or (what == "overrides" and key in types_):
                continue
            pool = sorted(names | types_) if what == "overrides" else sorted(names)
            close = difflib.get_close_matches(key, pool, n=3)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            kind = "layer or layer type" if what == "overrides" else "layer"
            raise QuantizationConfigError(
                f"no {kind} named {key!r} in model {getattr(model, 'name', '?')!r}{hint}",
                layer=what)

    # -------------------------------------------------------------- serialization
    def to_dict(self) -> Dict[str, Any]:
        """Plain-Python dict of every field (JSON-compatible)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["ignored_layers"] = list(self.ignored_layers)
        out["overrides"] = {k: dict(v) for k, v in self.overrides.items()}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "QuantizationConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise ``QuantizationConfigError``."""
        if not isinstance(data, Mapping):
            raise QuantizationConfigError(f"config must be a mapping, got {type(data).__name__}")
        unknown = sorted(set(data) - set(_FIELD_NAMES))
        if unknown:
            raise QuantizationConfigError(f"{unknown[0]}: unknown QuantizationConfig field")
        kwargs = dict(data)
        if "ignored_layers" in kwargs and isinstance(kwargs["ignored_layers"], list):
            kwargs["ignored_layers"] = tuple(kwargs["ignored_layers"])
        return cls(**kwargs)

    def to_json(self) -> str:
        """JSON text of :meth:`to_dict` (keys sorted)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "QuantizationConfig":
        """Inverse of :meth:`to_json`."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise QuantizationConfigError(f"not valid JSON: {err}") from None
        except RecursionError:
            raise QuantizationConfigError("JSON nested too deeply") from None
        return cls.from_dict(data)

    @classmethod
    def from_caffe(cls, prototxt: Any, solver: Any = None, *,
                   flavor: Optional[str] = None) -> "QuantizationConfig":
        """Settings from a caffe-jacinto / Ristretto prototxt (and solver, or a 0.15 solver
        holding ``net_param`` alone), read by the Caffe converter
        (:mod:`kerasq.converters.caffe.quantization`) and translated by
        :mod:`kerasq.schemes.from_caffe`. ``flavor`` forces the dialect ("jacinto-0.15",
        "jacinto-0.16", "jacinto-0.17", "ristretto"); absent fields take its defaults.

        Example: ``QuantizationConfig.from_caffe("test.prototxt", solver="solver.prototxt")``
        """
        # imported here so that this module loads without the Caffe reader (one direction:
        # from_caffe never imports config)
        from kerasq.schemes import from_caffe

        settings = from_caffe.read_quantization_settings(prototxt, solver, flavor=flavor)
        return from_caffe.build_config(cls, settings)


_FIELD_NAMES = tuple(f.name for f in dataclasses.fields(QuantizationConfig))


def _model_layer_names(model: Any) -> set:
    """Layer names of ``model`` and its nested models, with the converter's Caffe names."""
    names: set = set()
    caffe: set = set()
    stack = list(getattr(model, "layers", []))
    while stack:
        layer = stack.pop()
        names.add(layer.name)
        for attr in ("caffe_name", "caffe_folded"):
            tag = getattr(layer, attr, None)
            if isinstance(tag, str) and tag:
                caffe.update(tag.split(",") if attr == "caffe_folded" else [tag])
        stack.extend(getattr(layer, "layers", []) or [])
    if caffe:  # configs read from a prototxt also key layers by their Keras-safe names
        from kerasq.converters.caffe.graph import sanitize_name

        names.update(caffe, map(sanitize_name, caffe))
    return names


def _known_layer_types(model: Any) -> set:
    """Keras layer class names, the Caffe types the converter lowers, and the types of
    ``model``'s own layers (custom classes, ``caffe_type`` tags)."""
    from kerasq._compat import keras

    found = {n for n in dir(keras.layers) if n[:1].isupper()}
    found.update(CAFFE_TYPE_OF_KERAS_CLASS.values())
    try:
        from kerasq.converters.caffe.layers import _registry

        found.update(_registry.supported_types())
    except (ImportError, AttributeError):  # converter absent from this build
        pass
    stack = list(getattr(model, "layers", []))
    while stack:
        layer = stack.pop()
        found.add(type(layer).__name__)
        tag = getattr(layer, "caffe_type", None)
        if isinstance(tag, str):
            found.add(tag)
        stack.extend(getattr(layer, "layers", []) or [])
    return found


def config_from_caffe(prototxt: Any, solver: Any = None, *,
                      flavor: Optional[str] = None) -> QuantizationConfig:
    """``QuantizationConfig.from_caffe`` as a function.

    Example: ``config_from_caffe("test.prototxt", flavor="jacinto-0.17")``
    """
    return QuantizationConfig.from_caffe(prototxt, solver, flavor=flavor)


__all__ = ["QuantizationConfig", "config_from_caffe", "PRECISIONS", "ROUNDINGS",
           "RANGE_ESTIMATORS"]
