"""A config that TFLite int8 can hold, made from one that it cannot (e.g. caffe-jacinto's).

caffe-jacinto's settings (12-bit weights, non-power-of-two scales ``(2^(b-1)-1)/max|x|``,
offsets, a float network input) and Ristretto's (minifloat, power-of-two weights, 16-bit
fixed fractional lengths) have no int8 TFLite form: an int8 tensor holds 8-bit codes on a
scale, and kerasq's exact int8 export needs power-of-two scales with zero point 0.
:func:`int8_deployable` keeps every setting int8 can hold (bit widths up to 8, per-tensor or
per-channel weights, range estimator, unsigned activations, bias bit widths, float layers)
and changes the rest, per layer:

* weights / activations wider than 8 bits -> 8 bits (a fractional length pinned for the
  wider format is dropped: calibration chooses it);
* non-power-of-two scales (``power2_range=False``) -> power-of-two (DFP) scales;
* offsets (asymmetric ranges) -> symmetric ranges;
* minifloat and power-of-two weights -> DFP 8-bit;
* inference rounding ``nearest`` (Caffe's ties away from zero), ``half_up`` or
  ``stochastic`` -> ``nearest_even`` (ties to even, what TFLite's int8 kernels do, so that
  the file and the Keras model agree bit for bit; training rounding is kept);
* a float network input (``quantize_inputs=False``) -> quantized (the int8 file's input).

Example:
    >>> from kerasq.schemes.config import QuantizationConfig
    >>> jacinto = QuantizationConfig(bitwidth_weights=12, power2_range=False,
    ...                              apply_offset_weights=True, rounding="nearest")
    >>> config, changes = int8_deployable(jacinto)
    >>> config.bitwidth_weights, config.power2_range, config.apply_offset_weights
    (8, True, False)
    >>> changes[0]
    'net: weights 12 -> 8 bits'
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Tuple

from kerasq.schemes.config import QuantizationConfig

INT8_BITS = 8
_ROUNDING_WORDS = {
    "nearest": "nearest (ties away from zero)",
    "stochastic": "stochastic",
    "half_up": "half_up",
}

__all__ = ["int8_deployable", "INT8_BITS"]


def _changes(fields: Mapping[str, Any]) -> Tuple[Dict[str, Any], List[Tuple[Tuple[str, ...], str]]]:
    """(changed fields, [(fields a change touches, its description)]) for one set of
    effective settings."""
    new: Dict[str, Any] = {}
    said: List[Tuple[Tuple[str, ...], str]] = []
    precision = fields["precision"]
    if precision == "float":
        return new, said
    if precision == "minifloat":
        new.update(precision="dfp", bitwidth_weights=INT8_BITS, bitwidth_activations=INT8_BITS)
        said.append((("precision", "exp_bits", "mant_bits"),
                     f"minifloat E{fields['exp_bits']}M{fields['mant_bits']} -> DFP 8-bit "
                     "weights and activations"))
    elif precision == "pow2_weights":
        new.update(precision="dfp", bitwidth_weights=INT8_BITS)
        said.append((("precision", "pow2_exp_min", "pow2_exp_max"),
                     f"power-of-two weights (2^{fields['pow2_exp_min']}..2^"
                     f"{fields['pow2_exp_max']}) -> DFP 8-bit weights"))
    for kind in ("weights", "activations"):
        bits = new.get(f"bitwidth_{kind}", fields[f"bitwidth_{kind}"])
        if bits > INT8_BITS:
            new[f"bitwidth_{kind}"] = INT8_BITS
            said.append(((f"bitwidth_{kind}",), f"{kind} {bits} -> {INT8_BITS} bits"))
        if f"bitwidth_{kind}" in new and fields[f"frac_bits_{kind}"] is not None:
            new[f"frac_bits_{kind}"] = None
            said.append(((f"frac_bits_{kind}",),
                         f"{kind} fractional length {fields[f'frac_bits_{kind}']} (pinned for "
                         f"{bits} bits) -> calibrated"))
    if not fields["power2_range"]:
        new["power2_range"] = True
        said.append((("power2_range",), "non-power-of-two scales -> power-of-two (DFP) scales"))
    for kind in ("weights", "activations"):
        if fields[f"apply_offset_{kind}"]:
            new[f"apply_offset_{kind}"] = False
            said.append(((f"apply_offset_{kind}",), f"{kind} offset -> symmetric range"))
    if fields["rounding"] in ("nearest", "stochastic", "half_up"):
        new["rounding"] = "nearest_even"
        said.append((("rounding",), f"rounding {_ROUNDING_WORDS[fields['rounding']]} -> "
                     "nearest_even (ties to even, as TFLite's int8 kernels)"))
    return new, said


def int8_deployable(config: QuantizationConfig) -> Tuple[QuantizationConfig, List[str]]:
    """``config`` changed where TFLite int8 cannot hold it, and one line per change
    (``"net: ..."`` for the net-level settings, ``"<layer>: ..."`` for a layer override that
    sets the changed field itself; an override keyed by both the Caffe and the Keras name of
    a layer is reported once).

    Example:
        >>> cfg, changes = int8_deployable(QuantizationConfig())
        >>> cfg == QuantizationConfig(), changes
        (True, [])
    """
    base = config.to_dict()
    net_new, net_said = _changes(base)
    changes = [f"net: {text}" for _, text in net_said]
    if not config.quantize_inputs and config.precision != "float":
        net_new["quantize_inputs"] = True
        changes.append("net: float network input -> quantized (the int8 file's input)")
    net = config.replace(**net_new) if net_new else config
    changed_base = net.to_dict()
    overrides: Dict[str, Dict[str, Any]] = {}
    reported = set()
    for key, fields in config.overrides.items():
        own = dict(fields)
        layer_new, layer_said = _changes({**base, **own})
        updated = {**own, **layer_new}
        overrides[key] = {k: v for k, v in updated.items()
                          if k in own or v != changed_base.get(k)}
        lines = [text for touched, text in layer_said
                 if any(name in own for name in touched)]
        content = tuple(sorted((k, repr(v)) for k, v in own.items()))
        if lines and content not in reported:
            reported.add(content)
            changes.extend(f"{key}: {text}" for text in lines)
    return net.replace(overrides=overrides), changes
