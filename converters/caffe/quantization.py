"""caffe-jacinto (0.15, 0.16, 0.17) and Ristretto quantization settings of a Caffe net.

The converter reads a net's quantization settings here, once, into a neutral typed structure
(:class:`CaffeQuantization`): the detected dialect, the net-level settings, and per layer its
Caffe name, Caffe type as written (``ConvolutionRistretto`` ...), the Keras layer name the
converter gives it, and its own settings. ``kerasq.schemes`` turns that into a
``QuantizationConfig`` (``QuantizationConfig.from_caffe``); this module imports nothing above
the converter.

Settings are named with the vocabulary of kerasq's configs (``precision`` "dfp" | "minifloat"
| "pow2_weights" | "float", ``bitwidth_weights``, ``frac_bits_activations``, ``rounding``
"nearest" | "stochastic", ``range_estimator`` ...), with absent fields at the defaults of the
dialect, not kerasq's. Dialects (``flavor``), detected from the field names by
:func:`detect_flavor`:

``"jacinto-0.16"`` (the default when only ``quantize: true`` is present)
    ``quantize: true`` plus ``net_quantization_param { ... }`` with 0.16 names
    (``power2_range``, ``insert_quantization_param``); enum values may be written with or
    without the ``QuantizationParameter_Precision_`` / ``QuantizationParameter_Rounding_``
    prefix. Absent fields take caffe-jacinto 0.16's defaults: 12-bit weights with an offset,
    8-bit activations, non-power-of-two scales, EMA ranges (new-batch weight 0.1, expansion
    1.2, or 1.0 with ``power2_range``), quantization from forward pass 1, bias not quantized.
``"jacinto-0.17"``
    0.17 names: ``power2_scale_weights``/``power2_scale_activations``,
    ``update_quantization_param``, ``bitwidth_bias`` (16), ``range_update_factor`` (0.01),
    ``range_expansion_factor`` (1.25), ``ignored_layer_names``.
``"jacinto-0.15"``
    per-layer ``quantization_param { bw_layer_in bw_layer_out bw_weights fl_* quantize_layer_* }``
    and the solver's ``quantization_start_iter`` (2000), ``quantization_param``,
    ``insert_quantization_param``; power-of-two (DFP) scales, EMA ranges (new-batch weight 0.01).
    A 0.15 solver that holds the net in ``net_param`` is read on its own.
``"ristretto"``
    ``ConvolutionRistretto``/``FcRistretto``/``DeconvolutionRistretto``/``LRNRistretto``
    layers with ``bw_layer_in/out``, ``bw_params``, ``fl_*``, ``precision``
    (DYNAMIC_FIXED_POINT, MINIFLOAT, INTEGER_POWER_OF_2_WEIGHTS), ``rounding_scheme``,
    ``mant_bits``/``exp_bits``, ``exp_min``/``exp_max``; only those layers are quantized
    (the rest of the net stays float), with the fixed fractional lengths of the file.

Rounding: Caffe's NEAREST is C ``round()`` (ties away from zero) = ``"nearest"``;
caffe-jacinto rounds every trim stochastically in the TRAIN phase
(``train_rounding="stochastic"``), Ristretto only the weights (``train_rounding=None``).

The protobuf schema of :mod:`.reader` cannot hold these fields (the forks give the same
names different numbers and enums), so they are read with the schema-less text reader
:mod:`.text_format`, which also keeps the line of every field for error messages. Unknown
fields are ignored (logged at debug level); malformed files raise
:class:`~kerasq.errors.CaffeFormatError` with file and line; values of the wrong kind raise
:class:`~kerasq.errors.QuantizationConfigError` naming the Caffe field, the file and the line.

Example:
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "test.prototxt")
    >>> _ = open(path, "w").write("quantize: true\\nlayer { name: 'c/1' type: 'Convolution' "
    ...                           "quantization_param { precision: FLOAT } }")
    >>> settings = read_quantization_settings(path)
    >>> settings.flavor, settings.net["bitwidth_weights"], settings.net["power2_range"]
    ('jacinto-0.16', 12, False)
    >>> [(l.name, l.caffe_type, l.keras_name, dict(l.fields)) for l in settings.layers]
    [('c/1', 'Convolution', 'c_1', {'precision': 'float'})]
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import types
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from kerasq.converters.caffe.graph import sanitize_name
from kerasq.converters.caffe.reader import check_regular_file
from kerasq.converters.caffe.text_format import Identifier, Message, parse_file
from kerasq.errors import CaffeFormatError, QuantizationConfigError

PathLike = Union[str, "os.PathLike[str]"]
Source = Union[PathLike, Message]

log = logging.getLogger("kerasq.converters.caffe.quantization")

FLAVORS = ("jacinto-0.15", "jacinto-0.16", "jacinto-0.17", "ristretto")

__all__ = [
    "CaffeQuantization",
    "LayerQuantization",
    "read_quantization_settings",
    "detect_flavor",
    "has_quantization_settings",
    "FLAVORS",
]


@dataclasses.dataclass(frozen=True)
class LayerQuantization:
    """One layer's own settings: Caffe ``name`` and ``caffe_type`` as written, the Keras
    layer name the converter gives it, and its settings (kerasq config vocabulary)."""

    name: str
    caffe_type: str
    keras_name: str
    fields: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class CaffeQuantization:
    """The quantization settings of one Caffe net (see the module docstring).

    ``net``: net-level settings; ``layers``: per-layer settings in file order;
    ``provenance``: setting name -> (Caffe field, line) for error messages;
    ``present``: False when the file carries no quantization settings at all (a plain
    deploy prototxt); ``source``: the file read.
    """

    flavor: str
    net: Mapping[str, Any]
    layers: Tuple[LayerQuantization, ...] = ()
    provenance: Mapping[str, Tuple[str, int]] = dataclasses.field(
        default_factory=lambda: types.MappingProxyType({})
    )
    present: bool = True
    source: Optional[str] = None


# Enum spellings. caffe-jacinto 0.16/0.17 declare top-level enums, so their text format
# carries a prefix; 0.15 and Ristretto nest the enums (no prefix). Numbers differ per branch.
_PRECISION_NAMES = {
    "FLOAT": "float",
    "DYNAMIC_FIXED_POINT": "dfp",
    "MINIFLOAT": "minifloat",
    "INTEGER_POWER_OF_2_WEIGHTS": "pow2_weights",
}
_PRECISION_NUMBERS = {  # enum number -> name, per flavour (quant-schemes.md §2.1, §3.1, §4.1)
    "ristretto": {0: "DYNAMIC_FIXED_POINT", 1: "MINIFLOAT", 2: "INTEGER_POWER_OF_2_WEIGHTS"},
    "jacinto-0.15": {
        0: "DYNAMIC_FIXED_POINT", 1: "MINIFLOAT", 2: "INTEGER_POWER_OF_2_WEIGHTS", 3: "FLOAT"
    },
    "jacinto-0.16": {0: "FLOAT", 1: "DYNAMIC_FIXED_POINT"},
    "jacinto-0.17": {0: "FLOAT", 1: "DYNAMIC_FIXED_POINT"},
}
_ROUNDING_NAMES = {"NEAREST": "nearest", "STOCHASTIC": "stochastic"}
_ROUNDING_NUMBERS = {0: "NEAREST", 1: "STOCHASTIC"}
_ENUM_PREFIX = re.compile(r"^(?:caffe\.)?(?:QuantizationParameter_(?:Precision|Rounding)_)")

# Field names that identify a dialect.
_NET_017_FIELDS = {
    "power2_scale_weights", "power2_scale_activations", "update_quantization_param",
    "bitwidth_bias", "range_update_factor", "range_expansion_factor", "ignored_layer_names",
}
_LAYER_015_FIELDS = {
    "bw_weights", "fl_weights", "quantize_layer_in", "quantize_layer_out",
    "quantize_layer_weights", "unsigned_layer_in", "unsigned_layer_out",
    "min_layer_in", "max_layer_in", "min_layer_out", "max_layer_out",
    "min_layer_weights", "max_layer_weights",
}
_LAYER_RISTRETTO_FIELDS = {"bw_params", "fl_params"}
_SOLVER_015_FIELDS = {
    "quantization_start_iter", "insert_quantization_param", "quantization_param",
    "unsigned_check_in", "unsigned_check_out",
}
_RISTRETTO_TYPES = (
    "ConvolutionRistretto", "FcRistretto", "DeconvolutionRistretto", "LRNRistretto",
)


class _Reader:
    """Typed access to a Message's fields with errors naming file, layer, field and line."""

    def __init__(self, msg: Message, where: str, layer: Optional[str] = None) -> None:
        self.msg = msg
        self.where = where  # e.g. "net_quantization_param"
        self.layer = layer
        self.used: set = set()

    def _fail(self, name: str, why: str) -> QuantizationConfigError:
        line = self.msg.line_of(name)
        return QuantizationConfigError(
            f"{self.where}.{name}={self.msg.get(name)!r} (line {line}): {why}",
            file=self.msg.source, layer=self.layer,
        )

    def has(self, name: str) -> bool:
        return self.msg.has(name)

    def raw(self, name: str, default: Any = None) -> Any:
        self.used.add(name)
        return self.msg.get(name, default)

    def int(self, name: str, default: int) -> int:
        value = self.raw(name, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._fail(name, "must be an integer")
        return value

    def float(self, name: str, default: float) -> float:
        value = self.raw(name, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self._fail(name, "must be a number")
        return float(value)

    def bool(self, name: str, default: bool) -> bool:
        value = self.raw(name, default)
        if isinstance(value, bool):
            return value
        if isinstance(value, Identifier) and value in ("true", "True", "t"):
            return True
        if isinstance(value, Identifier) and value in ("false", "False", "f"):
            return False
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise self._fail(name, "must be true or false")

    def enum(self, name: str, names: Dict[str, str], numbers: Dict[int, str], default: str) -> str:
        value = self.raw(name, None)
        if value is None:
            return names[default]
        if isinstance(value, int) and not isinstance(value, bool):
            if value not in numbers:
                raise self._fail(name, f"unknown enum number (known: {sorted(numbers)})")
            return names[numbers[value]]
        if isinstance(value, str):
            bare = _ENUM_PREFIX.sub("", value)
            if bare in names:
                return names[bare]
        raise self._fail(name, f"must be one of {', '.join(sorted(names))}")

    def strings(self, name: str) -> Tuple[str, ...]:
        self.used.add(name)
        values = self.msg.getall(name)
        for value in values:
            if not isinstance(value, str) or isinstance(value, Identifier):
                raise QuantizationConfigError(
                    f"{self.where}.{name}={value!r} (line {self.msg.line_of(name)}): "
                    "must be a quoted layer name", file=self.msg.source, layer=self.layer,
                )
        return tuple(values)

    def log_unused(self) -> None:
        for name in self.msg.names():
            if name not in self.used:
                log.debug("%s: %s%s.%s (line %d) is not used by kerasq", self.msg.source,
                          f"{self.layer}: " if self.layer else "", self.where, name,
                          self.msg.line_of(name))


def _load(source: Source, what: str) -> Message:
    if isinstance(source, Message):
        return source
    if not isinstance(source, (str, os.PathLike)):
        raise CaffeFormatError(f"{what} must be a path or a parsed Message, got {type(source)}")
    check_regular_file(source, what)  # a FIFO would block, /dev/zero never ends
    return parse_file(source)


def _layers(net: Message) -> List[Message]:
    """V2 ``layer`` and V1 ``layers`` entries (both carry ``name``)."""
    return [m for m in net.getall("layer") + net.getall("layers") if isinstance(m, Message)]


def _layer_name(layer: Message) -> str:
    name = layer.get("name")
    if not isinstance(name, str) or not name:
        raise CaffeFormatError(f"line {layer.line}: layer without a name", file=layer.source)
    return name


def _message_field(msg: Message, name: str) -> Optional[Message]:
    value = msg.get(name)
    if value is None:
        return None
    if not isinstance(value, Message):
        raise CaffeFormatError(
            f"line {msg.line_of(name)}: {name} must be a message {{ ... }}", file=msg.source
        )
    return value


def detect_flavor(net: Message, solver: Optional[Message] = None) -> str:
    """Guess the dialect of ``net`` (and ``solver``) from the field names it uses.

    Ristretto layer types or ``bw_params``/``fl_params`` -> "ristretto"; 0.15 per-layer or
    solver fields -> "jacinto-0.15"; 0.17 net-level names -> "jacinto-0.17"; otherwise
    "jacinto-0.16". A solver holding ``net_param`` may be given as ``net``.
    """
    net, solver = _net_and_solver(net, solver)
    layer_fields: set = set()
    for layer in _layers(net):
        if str(layer.get("type", "")) in _RISTRETTO_TYPES:
            return "ristretto"
        qp = layer.get("quantization_param")
        if isinstance(qp, Message):
            layer_fields.update(qp.names())
    if layer_fields & _LAYER_RISTRETTO_FIELDS:
        return "ristretto"
    if layer_fields & _LAYER_015_FIELDS:
        return "jacinto-0.15"
    if solver is not None and set(solver.names()) & _SOLVER_015_FIELDS:
        return "jacinto-0.15"
    nqp = net.get("net_quantization_param")
    if isinstance(nqp, Message) and set(nqp.names()) & _NET_017_FIELDS:
        return "jacinto-0.17"
    if layer_fields & {"power2_scale_weights", "power2_scale_activations"}:
        return "jacinto-0.17"
    return "jacinto-0.16"


# ----------------------------------------------------------------------------- jacinto 0.16/0.17
def _jacinto_net(net: Message, flavor: str, prov: Dict[str, Tuple[str, int]]) -> Dict[str, Any]:
    """Net-level fields for caffe-jacinto 0.16 / 0.17 (quant-schemes.md §4.1, §5.1)."""
    v017 = flavor == "jacinto-0.17"
    msg = _message_field(net, "net_quantization_param") or Message(line=net.line, source=net.source)
    r = _Reader(msg, "net_quantization_param")
    numbers = _PRECISION_NUMBERS[flavor]
    fields: Dict[str, Any] = {
        "precision": r.enum("precision", _PRECISION_NAMES, numbers, "DYNAMIC_FIXED_POINT"),
        "rounding": r.enum("rounding_scheme", _ROUNDING_NAMES, _ROUNDING_NUMBERS, "NEAREST"),
        "train_rounding": "stochastic",  # TRAIN phase forces STOCHASTIC for every trim
        "bitwidth_activations": r.int("bitwidth_activations", 8),
        "bitwidth_weights": r.int("bitwidth_weights", 12),
        # 0.16 leaves the bias in float (its trim is commented out); 0.17 defaults to 16 bits.
        "bitwidth_bias": r.int("bitwidth_bias", 16) if v017 else 32,
        "quantize_weights": r.bool("quantize_weights", True),
        "quantize_activations": r.bool("quantize_activations", True),
        "apply_offset_activations": r.bool("apply_offset_activations", False),
        "apply_offset_weights": r.bool("apply_offset_weights", True),
        "quantization_start": r.int("quantization_start", 1),
        "unsigned_activations": True,  # unsigned_data = (min >= 0)
        "per_channel_weights": False,  # Blob::min/max over the whole blob
        "range_estimator": "ema",
        "quantize_inputs": False,  # the network input blob is never trimmed
    }
    for name, caffe in (
        ("precision", "precision"), ("rounding", "rounding_scheme"),
        ("bitwidth_activations", "bitwidth_activations"), ("bitwidth_weights", "bitwidth_weights"),
        ("bitwidth_bias", "bitwidth_bias"), ("quantize_weights", "quantize_weights"),
        ("quantize_activations", "quantize_activations"),
        ("apply_offset_activations", "apply_offset_activations"),
        ("apply_offset_weights", "apply_offset_weights"),
        ("quantization_start", "quantization_start"),
    ):
        prov[name] = (f"net_quantization_param.{caffe}", msg.line_of(caffe))
    if v017:
        pw = r.bool("power2_scale_weights", False)
        pa = r.bool("power2_scale_activations", False)
        if pw != pa:
            log.warning(
                "%s: power2_scale_weights=%s and power2_scale_activations=%s differ; kerasq has "
                "one power2_range setting and uses the activations' value (%s)",
                msg.source, pw, pa, pa,
            )
        fields["power2_range"] = pa
        prov["power2_range"] = ("net_quantization_param.power2_scale_activations",
                                msg.line_of("power2_scale_activations"))
        fields["ema_update_factor"] = r.float("range_update_factor", 0.01)
        fields["range_expansion"] = r.float("range_expansion_factor", 1.25)
        prov["ema_update_factor"] = ("net_quantization_param.range_update_factor",
                                     msg.line_of("range_update_factor"))
        prov["range_expansion"] = ("net_quantization_param.range_expansion_factor",
                                   msg.line_of("range_expansion_factor"))
        fields["ignored_layers"] = r.strings("ignored_layer_names")
        update = r.bool("update_quantization_param", True)
    else:
        fields["power2_range"] = r.bool("power2_range", False)
        prov["power2_range"] = ("net_quantization_param.power2_range", msg.line_of("power2_range"))
        # 0.16: EMA with weight 0.1 on the newest batch, expansion 1.2 (1.0 in power-2 mode).
        fields["ema_update_factor"] = 0.1
        fields["range_expansion"] = 1.0 if fields["power2_range"] else 1.2
        update = r.bool("insert_quantization_param", True)
    r.raw("display_quantization")  # a logging period: kerasq's report replaces it
    r.log_unused()

    quantize = net.get("quantize")
    enabled = quantize is not None and _Reader(net, "net").bool("quantize", False)
    if not enabled and not has_quantization_settings(net):
        log.info("%s: no quantization settings: caffe-jacinto runs this net in float, so the "
                 "settings have precision='float'", net.source)
        fields["precision"] = "float"
    elif not enabled:
        log.warning("%s: `quantize: true` is absent: caffe-jacinto runs this net in float, so "
                    "the config has precision='float'", net.source)
        fields["precision"] = "float"
    elif not v017 and fields["quantization_start"] == 0:
        # 0.16 quantizes only if quantize && quantization_start > 0 (net.cpp ForwardFromTo).
        log.warning("%s: quantization_start: 0 disables quantization in caffe-jacinto 0.16; "
                    "the config has precision='float'", net.source)
        fields["precision"] = "float"
    fields["_update_ranges"] = update
    return fields


def _jacinto_layer(
    layer: Message, flavor: str, update_ranges: bool
) -> Dict[str, Any]:
    """Overrides from a 0.16/0.17 per-layer ``quantization_param`` (field 8404)."""
    name = _layer_name(layer)
    qp = _message_field(layer, "quantization_param")
    if qp is None:
        return {}
    r = _Reader(qp, "quantization_param", layer=name)
    out: Dict[str, Any] = {}
    numbers = _PRECISION_NUMBERS[flavor]
    if r.has("precision"):
        out["precision"] = r.enum("precision", _PRECISION_NAMES, numbers, "DYNAMIC_FIXED_POINT")
    if r.has("rounding_scheme"):
        out["rounding"] = r.enum("rounding_scheme", _ROUNDING_NAMES, _ROUNDING_NUMBERS, "NEAREST")
    # the seed issue's `quantization_param { precision: MINIFLOAT mant_bits: 5 exp_bits: 2 }`
    if out.get("precision") == "minifloat" or r.has("mant_bits") or r.has("exp_bits"):
        out["mant_bits"] = r.int("mant_bits", 23)
        out["exp_bits"] = r.int("exp_bits", 8)
    if out.get("precision") == "pow2_weights" or r.has("exp_min") or r.has("exp_max"):
        out["pow2_exp_min"] = r.int("exp_min", -8)
        out["pow2_exp_max"] = r.int("exp_max", -1)
    if r.has("power2_range"):
        out["power2_range"] = r.bool("power2_range", False)
    if r.has("power2_scale_activations"):
        out["power2_range"] = r.bool("power2_scale_activations", False)
    r.raw("power2_scale_weights")
    r.raw("quantized_infer_count")
    power2 = out.get("power2_range")
    for key, kind in (("qparam_w", "weights"), ("qparam_out", "activations")):
        r.used.add(key)
        if update_ranges:
            continue  # recomputed from the running ranges: the stored QParams are not used
        qparams = [q for q in qp.getall(key) if isinstance(q, Message)]
        if not qparams:
            continue
        q = _Reader(qparams[0], f"quantization_param.{key}", layer=name)
        if not q.bool("quantize", False):
            out[f"quantize_{kind}"] = False
            continue
        out[f"quantize_{kind}"] = True
        out[f"bitwidth_{kind}"] = q.int("bitwidth", 8)
        if kind == "weights" and len(qparams) > 1:  # 0.17: one qparam_w per blob, [1] = bias
            bias = _Reader(qparams[1], "quantization_param.qparam_w", layer=name)
            if bias.bool("quantize", False):
                out["bitwidth_bias"] = bias.int("bitwidth", 8)
        if kind == "activations" and q.has("unsigned_data"):
            out["unsigned_activations"] = q.bool("unsigned_data", False)
        if power2:
            out[f"frac_bits_{kind}"] = q.int("fracbits", 0)
    r.used.add("qparam_in")
    r.log_unused()
    return out


# ----------------------------------------------------------------------------- jacinto 0.15
def _jacinto015(net: Message, solver: Optional[Message]) -> Dict[str, Any]:
    """Net-level fields for caffe-jacinto 0.15 (quant-schemes.md §3): from the solver."""
    fields: Dict[str, Any] = {
        "precision": "dfp",
        "rounding": "nearest",
        "train_rounding": "stochastic",
        "bitwidth_weights": 8,
        "bitwidth_activations": 8,
        "bitwidth_bias": 32,  # bias trimmed with the weights' bw/fl but without clipping
        "power2_range": True,
        "apply_offset_weights": False,
        "apply_offset_activations": False,
        "unsigned_activations": True,
        "per_channel_weights": False,
        "range_estimator": "ema",
        "ema_update_factor": 0.01,  # old weight 0.99
        "range_expansion": 1.0,
        "quantization_start": 0,
    }
    if solver is None or not _Reader(solver, "solver").bool("insert_quantization_param", False):
        # Without insert_quantization_param only layers with their own quantization_param
        # (used as given) are trimmed; the rest of the net stays float.
        fields["precision"] = "float"
        fields["_insert"] = False
    else:
        fields["_insert"] = True
    if solver is None:
        return fields
    r = _Reader(solver, "solver")
    r.raw("insert_quantization_param")
    fields["quantization_start"] = r.int("quantization_start_iter", 2000)
    unsigned_in = r.bool("unsigned_check_in", True)
    unsigned_out = r.bool("unsigned_check_out", True)
    fields["unsigned_activations"] = unsigned_out or unsigned_in
    for flag in ("quantize_weights", "quantize_activations"):
        if r.has(flag) and not r.bool(flag, True):
            # net.cpp SetTrainQuantizationParams replaced these checks with if(true).
            log.warning("%s: solver %s: false is ignored by caffe-jacinto 0.15 and by kerasq",
                        solver.source, flag)
    qp = _message_field(solver, "quantization_param")
    r.used.add("quantization_param")
    if qp is not None:
        q = _Reader(qp, "solver.quantization_param")
        numbers = _PRECISION_NUMBERS["jacinto-0.15"]
        precision = q.enum("precision", _PRECISION_NAMES, numbers, "DYNAMIC_FIXED_POINT")
        if fields["_insert"]:
            fields["precision"] = precision
        fields["rounding"] = q.enum("rounding_scheme", _ROUNDING_NAMES, _ROUNDING_NUMBERS,
                                    "NEAREST")
        fields["bitwidth_weights"] = q.int("bw_weights", 8)
        fields["bitwidth_activations"] = q.int("bw_layer_out", 8)
        q.int("bw_layer_in", 8)
        fields["mant_bits"] = q.int("mant_bits", 23)
        fields["exp_bits"] = q.int("exp_bits", 8)
        fields["pow2_exp_min"] = q.int("exp_min", -8)
        fields["pow2_exp_max"] = q.int("exp_max", -1)
        q.log_unused()
    return fields


def _jacinto015_layer(layer: Message, insert: bool) -> Dict[str, Any]:
    """Overrides from a 0.15 per-layer ``quantization_param``: used as given, or, when the
    solver inserts quantization parameters, only its precision/rounding/format."""
    name = _layer_name(layer)
    qp = _message_field(layer, "quantization_param")
    if qp is None:
        return {}
    r = _Reader(qp, "quantization_param", layer=name)
    numbers = _PRECISION_NUMBERS["jacinto-0.15"]
    out: Dict[str, Any] = {
        "precision": r.enum("precision", _PRECISION_NAMES, numbers, "DYNAMIC_FIXED_POINT"),
        "rounding": r.enum("rounding_scheme", _ROUNDING_NAMES, _ROUNDING_NUMBERS, "NEAREST"),
    }
    if out["precision"] == "minifloat":
        out["mant_bits"] = r.int("mant_bits", 23)
        out["exp_bits"] = r.int("exp_bits", 8)
    if out["precision"] == "pow2_weights":
        out["pow2_exp_min"] = r.int("exp_min", -8)
        out["pow2_exp_max"] = r.int("exp_max", -1)
    if insert:
        for fixed in ("quantize_layer_weights", "quantize_layer_out", "bw_weights", "fl_weights",
                      "bw_layer_out", "fl_layer_out", "unsigned_layer_out"):
            r.raw(fixed)
        r.log_unused()
        return out
    # proto defaults: quantize_layer_* false, i.e. a param block without the flags trims nothing
    out["quantize_weights"] = r.bool("quantize_layer_weights", False)
    out["quantize_activations"] = r.bool("quantize_layer_out", False)
    out["bitwidth_weights"] = r.int("bw_weights", 8)
    out["frac_bits_weights"] = r.int("fl_weights", 16)
    out["bitwidth_activations"] = r.int("bw_layer_out", 8)
    out["frac_bits_activations"] = r.int("fl_layer_out", 16)
    out["unsigned_activations"] = r.bool("unsigned_layer_out", False)
    for unused in ("bw_layer_in", "fl_layer_in", "unsigned_layer_in", "quantize_layer_in"):
        if r.has(unused):
            r.raw(unused)
            log.debug("%s: %s: quantization_param.%s: kerasq quantizes layer outputs; the "
                      "input is quantized as its producer's output", qp.source, name, unused)
    r.log_unused()
    return out


# ----------------------------------------------------------------------------- Ristretto
def _ristretto_layer(layer: Message) -> Dict[str, Any]:
    """Overrides for one Ristretto layer (quant-schemes.md §2.1, §2.5)."""
    name = _layer_name(layer)
    ltype = str(layer.get("type", ""))
    qp = _message_field(layer, "quantization_param") or Message(line=layer.line,
                                                                 source=layer.source)
    r = _Reader(qp, "quantization_param", layer=name)
    numbers = _PRECISION_NUMBERS["ristretto"]
    precision = r.enum("precision", _PRECISION_NAMES, numbers, "DYNAMIC_FIXED_POINT")
    out: Dict[str, Any] = {
        "precision": precision,
        "rounding": r.enum("rounding_scheme", _ROUNDING_NAMES, _ROUNDING_NUMBERS, "NEAREST"),
    }
    if ltype == "LRNRistretto" and precision != "minifloat":
        raise QuantizationConfigError(
            f"quantization_param.precision (line {qp.line_of('precision')}): LRNRistretto "
            "supports MINIFLOAT only", file=qp.source, layer=name,
        )
    if precision == "minifloat":
        out["mant_bits"] = r.int("mant_bits", 23)
        out["exp_bits"] = r.int("exp_bits", 8)
    else:
        # DFP layer outputs; also the activations of power-of-two-weight layers (GPU path).
        out["bitwidth_activations"] = r.int("bw_layer_out", 32)
        out["frac_bits_activations"] = r.int("fl_layer_out", 16)
    if precision == "dfp":
        bw, fl = r.int("bw_params", 32), r.int("fl_params", 16)
        # The bias uses the weights' bw_params and fl_params.
        out.update(bitwidth_weights=bw, frac_bits_weights=fl, bitwidth_bias=bw)
    elif precision == "pow2_weights":
        out["pow2_exp_min"] = r.int("exp_min", -8)
        out["pow2_exp_max"] = r.int("exp_max", -1)
    for unused in ("bw_layer_in", "fl_layer_in"):
        if r.has(unused):
            r.raw(unused)
            log.debug("%s: %s: quantization_param.%s: kerasq quantizes layer outputs; the "
                      "input is quantized as its producer's output", qp.source, name, unused)
    r.log_unused()
    return out


def _ristretto(net: Message) -> Dict[str, Any]:
    fields: Dict[str, Any] = {
        # Only the *Ristretto layers are trimmed; everything else stays float.
        "precision": "float",
        "rounding": "nearest",
        # weights stochastic in TRAIN; Ristretto's activations are float in TRAIN, kerasq's
        # QAT quantizes them with ``rounding`` (no config field for float-in-training)
        "train_rounding": None,
        "unsigned_activations": False,  # Ristretto's trims are always signed
        "per_channel_weights": False,
        "range_estimator": "max_abs",
        "power2_range": True,
    }
    overrides: List[Tuple[Message, Dict[str, Any]]] = []
    for layer in _layers(net):
        ltype = str(layer.get("type", ""))
        if ltype in _RISTRETTO_TYPES or isinstance(layer.get("quantization_param"), Message):
            overrides.append((layer, _ristretto_layer(layer)))
    roundings = {o["rounding"] for _, o in overrides}
    if len(roundings) == 1:
        fields["rounding"] = roundings.pop()
    fields["overrides"] = overrides
    return fields


def _solver_overrides(solver: Message, fields: Dict[str, Any],
                      prov: Dict[str, Tuple[str, int]]) -> None:
    """0.16+ solvers may carry quantization_start; some users keep quantization_start_iter."""
    r = _Reader(solver, "solver")
    for caffe in ("quantization_start_iter", "quantization_start"):
        if solver.has(caffe):
            fields["quantization_start"] = r.int(caffe, 0)
            prov["quantization_start"] = (f"solver.{caffe}", solver.line_of(caffe))


def _net_and_solver(net: Message, solver: Optional[Message]) -> Tuple[Message, Optional[Message]]:
    """A solver that holds its net in ``net_param`` (caffe-jacinto 0.15 style) is both."""
    inner = net.get("net_param")
    if isinstance(inner, Message) and not _layers(net):
        if inner.source is None:
            inner.source = net.source
        return inner, solver if solver is not None else net
    return net, solver


def has_quantization_settings(net: Message, solver: Optional[Message] = None) -> bool:
    """True if the net (or solver) carries caffe-jacinto or Ristretto quantization settings:
    ``quantize``, ``net_quantization_param``, a layer ``quantization_param``, a
    ``*Ristretto`` layer, or 0.15 solver quantization fields.

    Example:
        >>> from kerasq.converters.caffe.text_format import parse
        >>> has_quantization_settings(parse("layer { name: 'c' type: 'Convolution' }"))
        False
    """
    net, solver = _net_and_solver(net, solver)
    if net.has("quantize") or net.has("net_quantization_param"):
        return True
    for layer in _layers(net):
        if str(layer.get("type", "")) in _RISTRETTO_TYPES or layer.has("quantization_param"):
            return True
    return solver is not None and bool(set(solver.names()) & _SOLVER_015_FIELDS)


def read_quantization_settings(
    prototxt: Source, solver: Optional[Source] = None, *, flavor: Optional[str] = None
) -> CaffeQuantization:
    """Read the quantization settings of a caffe-jacinto or Ristretto prototxt (+ solver).

    ``prototxt``/``solver`` are paths (or parsed :class:`~.text_format.Message`); a solver
    holding ``net_param`` may be given as ``prototxt`` alone. ``flavor`` forces the dialect
    (one of :data:`FLAVORS`); by default :func:`detect_flavor` decides.

    Example:
        ``read_quantization_settings("test.prototxt", "solver.prototxt").net["precision"]``
    """
    net = _load(prototxt, "prototxt")
    solver_msg = _load(solver, "solver") if solver is not None else None
    net, solver_msg = _net_and_solver(net, solver_msg)
    present = has_quantization_settings(net, solver_msg)
    if flavor is None:
        flavor = detect_flavor(net, solver_msg)
    elif flavor not in FLAVORS:
        raise QuantizationConfigError(f"flavor={flavor!r}: must be one of {', '.join(FLAVORS)}")
    log.info("%s: reading %s quantization settings", net.source, flavor)
    prov: Dict[str, Tuple[str, int]] = {}
    per_layer: List[Tuple[Message, Dict[str, Any]]] = []
    if flavor == "ristretto":
        fields = _ristretto(net)
        per_layer = fields.pop("overrides")
    elif flavor == "jacinto-0.15":
        fields = _jacinto015(net, solver_msg)
        insert = fields.pop("_insert")
        per_layer = [(layer, _jacinto015_layer(layer, insert)) for layer in _layers(net)]
    else:
        fields = _jacinto_net(net, flavor, prov)
        update = fields.pop("_update_ranges")
        per_layer = [(layer, _jacinto_layer(layer, flavor, update)) for layer in _layers(net)]
    if solver_msg is not None and flavor != "jacinto-0.15":
        _solver_overrides(solver_msg, fields, prov)
    layers = tuple(
        LayerQuantization(
            name=_layer_name(layer),
            caffe_type=str(layer.get("type", "")),
            keras_name=sanitize_name(_layer_name(layer)),
            fields=types.MappingProxyType(layer_fields),
        )
        for layer, layer_fields in per_layer
        if layer_fields
    )
    return CaffeQuantization(
        flavor=flavor,
        net=types.MappingProxyType(fields),
        layers=layers,
        provenance=types.MappingProxyType(prov),
        present=present,
        source=net.source,
    )
