"""Rebuild a quantized (tfmot-wrapped) Keras model as a deploy graph for one TFLite target.

The deploy graph has the same topology as the quantized model; every tfmot
``QuantizeWrapper`` becomes its layer with constant, already quantized weights
(:class:`~kerasq.export.layers.QuantizedLinear` for Conv2D / DepthwiseConv2D / Dense, a
clone with the quantized weights for other layers) followed by
:class:`~kerasq.export.layers.GridQuantize` for each activation / output quantizer, on the
grid read by :mod:`kerasq.export.spec`. In int8, a Conv2DTranspose becomes convolutions
with the same sums (sub-pixel or zero-insertion form, see ``_Builder._transpose``).
``QuantizeLayer`` (input quantization) becomes a ``GridQuantize``; every other layer is
cloned with its weights.

Example:
    >>> plan = build_deploy_model(qmodel, mode="fakequant8")   # doctest: +SKIP
    >>> plan.model.summary(); plan.tensor_specs                  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from kerasq._compat import keras, tf
from kerasq.errors import ExportError
from kerasq.export import spec as specs
from kerasq.schemes import slots
from kerasq.export.layers import (
    AffineFakeQuant,
    ArgMaxIndex,
    GridQuantize,
    MinifloatQuantize,
    PhaseInterleave,
    QuantizedLinear,
    ZeroInsert,
)

log = logging.getLogger("kerasq.export.graph")

MODES = ("fakequant8", "plain16", "exact")
OUTPUT_SUFFIX = "__kerasq_output"
# in the names of the layers of a float island (a float operator kept on purpose, between a
# DEQUANTIZE and a QUANTIZE, where TFLite's integer kernel is not exact)
FLOAT_ISLAND = "__float_island"
_LINEAR_KINDS = {"Conv2D": "conv", "DepthwiseConv2D": "depthwise", "Dense": "dense",
                 "Conv2DTranspose": "transpose"}


@dataclasses.dataclass
class DeployPlan:
    """The deploy model and what export learnt about each quantizer."""

    model: "keras.Model"
    # layer name -> list of (what, GridSpec); what is "input", "kernel", "pre", "post", "output"
    specs: Dict[str, List[Tuple[str, specs.GridSpec]]]
    # GridQuantize layer name -> GridSpec (to find the tensors in the TFLite file)
    activation_layers: Dict[str, specs.GridSpec]
    output_spec: Optional[specs.GridSpec]
    # the grid of each output, in the model's output order (None: not a DFP grid)
    output_specs: List[Optional[specs.GridSpec]] = dataclasses.field(default_factory=list)
    # layers computed in float inside the int8 file on purpose (see FLOAT_ISLAND)
    float_islands: List[str] = dataclasses.field(default_factory=list)
    # input preprocessing left to the device (preprocessing="outside"), one per input
    preprocessing: List[Any] = dataclasses.field(default_factory=list)


def _quantizer_fn(quantizer: Any, qvars: Any) -> Callable[[np.ndarray], np.ndarray]:
    def run(x: np.ndarray) -> np.ndarray:
        return quantizer(tf.constant(x), training=False, weights=qvars).numpy()

    return run


def _base(variable: Any) -> str:
    """``conv1/kernel:0`` -> ``kernel``."""
    return variable.name.split("/")[-1].split(":")[0]


def _weight_entries(wrapper: Any) -> List[Tuple[Any, Any, Any]]:
    """(float weight, quantizer, its variables) of each quantized weight of ``wrapper``."""
    return [(s.weight, s.quantizer, s.variables) for s in slots.weight_slots(wrapper)]


def _output_quantizers(wrapper: Any) -> List[Tuple[Any, Any]]:
    """[(quantizer, its variables)] of ``wrapper``'s output, or [] when it has none."""
    slot = slots.output_slot(wrapper)
    return [(slot.quantizer, slot.variables)] if slot is not None else []


def _clone(layer: Any, *, name: Optional[str] = None, **config_changes: Any) -> Any:
    config = layer.get_config()
    config.update(config_changes)
    if name is not None:
        config["name"] = name
    return type(layer).from_config(config)


class _Builder:
    def __init__(self, qmodel: "keras.Model", mode: str, preprocessing: str = "inside") -> None:
        from kerasq.export.preprocessing import PREPROCESSING_MODES

        if mode not in MODES:
            raise ExportError(f"unknown deploy mode {mode!r}")
        if preprocessing not in PREPROCESSING_MODES:
            raise ExportError(f"unknown preprocessing {preprocessing!r}; choose one of "
                              f"{', '.join(PREPROCESSING_MODES)}")
        self.qmodel = qmodel
        self.mode = mode
        self.preprocessing = preprocessing
        self.outside: List[Any] = []  # Preprocessing records of the inputs left outside
        self.specs: Dict[str, List[Tuple[str, specs.GridSpec]]] = {}
        self.activation_layers: Dict[str, specs.GridSpec] = {}
        self.last_spec: Dict[int, Optional[specs.GridSpec]] = {}
        self.float_islands: List[str] = []
        self.grid_of: Dict[int, specs.GridSpec] = {}  # id(deploy tensor) -> its DFP grid

    # -- activations ---------------------------------------------------------------------
    def quantize(self, x: Any, quantizer: Any, qvars: Any, owner: str, what: str) -> Any:
        spec = specs.activation_spec(
            _quantizer_fn(quantizer, qvars),
            name=f"{owner}/{what}",
            quantizer=quantizer,
            quantizer_vars=qvars,
        )
        self.specs.setdefault(owner, []).append((what, spec))
        if spec.kind == "none":
            return x
        if spec.kind == "affine":  # tfmot's own min/max quantizers (e.g. its input layer)
            if spec.bitwidth > {"plain16": 16}.get(self.mode, 8):
                raise ExportError(
                    f"{spec.bitwidth}-bit affine activations do not fit the target", layer=owner
                )
            return AffineFakeQuant(
                spec.low, spec.high, spec.bitwidth, spec.narrow, name=f"{owner}_{what}_q"
            )(x)
        if spec.kind != "dfp":
            if self.mode != "exact":
                raise ExportError(
                    f"activations are {spec.describe()}, which has no TFLite integer type; "
                    "export with target 'float' or 'float16'",
                    layer=owner,
                )
            if spec.kind == "minifloat" and spec.exp_bits <= 6:
                return MinifloatQuantize(
                    spec.exp_bits,
                    spec.mant_bits,
                    spec.subnormals,
                    spec.rounding,
                    name=f"{owner}_{what}_q",
                )(x)
            raise ExportError(
                f"activations are {spec.describe()}: only fixed-point and "
                "minifloat (E <= 6) activation grids are exported",
                layer=owner,
            )
        bits = {"fakequant8": 8, "plain16": 16}.get(self.mode)
        if bits is not None and spec.bitwidth > bits:
            can = "int16x8" if spec.bitwidth <= 16 else "float"
            raise ExportError(
                f"{spec.bitwidth}-bit activations do not fit the {bits}-bit target; "
                f"use target {can!r}",
                layer=owner,
            )
        if self.mode == "exact" and spec.bitwidth > 24:
            raise ExportError(
                f"{spec.bitwidth}-bit activations are not exact in float32 "
                "arithmetic (24-bit significand)",
                layer=owner,
            )
        if self.mode == "plain16":  # the converter calibrates int16 activations itself
            return x
        name = f"{owner}_{what}_q"
        layer = GridQuantize(
            int(spec.frac_bits), spec.qmin, spec.qmax, spec.rounding, self.mode, name=name
        )
        self.activation_layers[name] = spec
        y = layer(x)
        self.grid_of[id(y)] = spec
        return y

    # -- layers ----------------------------------------------------------------------------
    def wrapped(self, wrapper: Any, x: Any) -> Any:
        inner = wrapper.layer
        owner = inner.name
        quantized: Dict[int, np.ndarray] = {}
        kernel_spec: Optional[specs.GridSpec] = None
        # plain16: stock layers holding the quantized weights (TFLite's 16x8 calibration
        # fails on constant-weight graphs)
        linear_kind = _LINEAR_KINDS.get(type(inner).__name__)
        if linear_kind == "transpose" and self.mode != "fakequant8" and (
                not _is_depthwise_transpose(
                    np.asarray(slots.weight_variable(wrapper, "kernel").numpy()))
                or isinstance(x, (list, tuple)) or None in tuple(x.shape)[1:3]):
            # float targets: a general Conv2DTranspose (or one on a free input size) keeps
            # its stock layer with the quantized weights (int8 lowers it, see _transpose)
            linear_kind = None
        kind = None if self.mode == "plain16" else linear_kind
        for weight, quantizer, qvars in _weight_entries(wrapper):
            value = quantizer(weight, training=False, weights=qvars)
            value = np.asarray(value.numpy() if hasattr(value, "numpy") else value, np.float32)
            quantized[id(weight)] = value
            if linear_kind is not None and weight is slots.weight_variable(wrapper, "kernel"):
                axis_value = _per_channel_last(value, linear_kind)
                kernel_spec = specs.weight_spec(quantizer, qvars, axis_value, axis=-1)
                self.specs.setdefault(owner, []).append(("kernel", kernel_spec))
        if (
            self.mode == "plain16"
            and kernel_spec is not None
            and (kernel_spec.kind != "dfp" or kernel_spec.bitwidth > 8)
        ):
            raise ExportError(
                f"weights are {kernel_spec.describe()}; int16x8 stores 8-bit "
                "integer weights; use target 'float'",
                layer=owner,
            )
        config = inner.get_config()
        outs = _output_quantizers(wrapper)
        global_pool = (type(inner).__name__ == "GlobalAveragePooling2D"
                       and config.get("data_format", "channels_last") == "channels_last"
                       and not isinstance(x, (list, tuple)) and None not in x.shape[1:3])
        if (
            self.mode == "fakequant8"
            and (global_pool or (type(inner).__name__ == "AveragePooling2D"
                                 and config.get("padding") == "valid"))
            and not isinstance(x, (list, tuple))
        ):
            if global_pool:  # TFLite's int8 MEAN rounds differently: the same lowering
                pool = (int(x.shape[1]), int(x.shape[2]))
                config = {**config, "pool_size": pool, "strides": pool}
            else:
                pool = tuple(config["pool_size"])
            count = pool[0] * pool[1]
            if count & (count - 1) == 0:  # 1/count is a power of two: exact as a weight
                # TFLite's int8 AVERAGE_POOL_2D rounds in the zero-point-offset domain (ties
                # go down for unsigned tensors); a depthwise convolution with weights
                # 1/count rounds in the real domain like the Keras model does.
                channels = int(x.shape[-1])
                kernel = np.full(pool + (channels, 1), 1.0 / count, np.float32)
                fl = int(np.log2(count)) + 6  # code 64 (< 127) for the weight 1/count
                y = QuantizedLinear(
                    "depthwise",
                    kernel,
                    None,
                    strides=config["strides"],
                    padding="valid",
                    weight_frac_bits=np.full(channels, fl),
                    fake_quant=True,
                    name=inner.name,
                )(x)
                if global_pool and not config.get("keepdims", False):
                    y = keras.layers.Reshape((int(x.shape[-1]),), name=f"{owner}_squeeze")(y)
                if outs:
                    y = self.quantize(y, *outs[0], owner, "output")
                return y
        if (self.mode == "fakequant8" and type(inner).__name__ == "PReLU"
                and not slots.weight_slots(wrapper)):
            # the Keras model keeps the slopes float: TFLite's int8 PRELU would store them
            # on an int8 grid of its own choosing, so PReLU is a float island
            clone = _clone(inner, name=f"{owner}{FLOAT_ISLAND}_prelu")
            y = clone(self._enter_island(x, owner))
            clone.set_weights(inner.get_weights())
            return self._round_island(y, outs, wrapper, owner)
        if self.mode == "fakequant8" and type(inner).__name__ == "ConstantMultiply":
            return self._constant_multiply(inner, x, outs, wrapper, owner)
        if self.mode == "fakequant8" and type(inner).__name__ == "CaffePreprocess":
            return self._preprocess(inner, x, outs, wrapper, owner)
        if self.mode == "fakequant8" and _is_softmax(inner) and not isinstance(x, (list, tuple)):
            return self._float_softmax(inner, x, outs, wrapper, owner)
        pre, post = self._activation_quantizers(wrapper)
        act_fn = slots.activation_function(wrapper)
        activation = keras.activations.serialize(act_fn) if act_fn is not None else "linear"
        if not isinstance(activation, str):
            raise ExportError(f"activation {activation!r} is not a Keras builtin", layer=owner)
        split = bool(pre or post)  # quantizers sit around the activation: apply it separately
        if kind is not None:
            y = self._linear(
                wrapper, kind, quantized, kernel_spec, x, owner, "linear" if split else activation
            )
        else:
            changes = {}
            if "activation" in config:
                changes["activation"] = "linear" if split else activation
            clone = _clone(inner, **changes)
            y = clone(x)
            if clone.weights:
                values = {_base(w): w.numpy() for w in inner.weights}
                values.update(
                    {_base(w): quantized[id(w)] for w, _, _ in _weight_entries(wrapper)}
                )
                try:
                    clone.set_weights([values[_base(w)] for w in clone.weights])
                except KeyError as err:
                    raise ExportError(
                        f"cannot match weight {err} of the quantized layer", layer=owner
                    )
        if split:
            for quantizer, qvars in pre:
                y = self.quantize(y, quantizer, qvars, owner, "pre")
            if activation != "linear":
                y = keras.layers.Activation(activation, name=f"{owner}_act")(y)
            for quantizer, qvars in post:
                y = self.quantize(y, quantizer, qvars, owner, "post")
        if outs:
            y = self.quantize(y, *outs[0], owner, "output")
        return y

    def _float_softmax(self, inner: Any, x: Any, outs: list, wrapper: Any, owner: str) -> Any:
        """Softmax (or tanh, sigmoid...) as a float island of the int8 file: DEQUANTIZE, the
        float op, rounding to the output grid with exact float builtins, QUANTIZE (exact:
        the value is on the grid).

        TFLite's int8 SOFTMAX / TANH / LOGISTIC approximate the function with tables and
        fixed-point arithmetic, a few steps off round(f(x)·2^fl); the float op differs from
        the Keras model's by float rounding only.
        """
        x = self._enter_island(x, owner)
        y = _clone(inner, name=f"{owner}{FLOAT_ISLAND}_op")(x)
        return self._round_island(y, outs, wrapper, owner)

    def _enter_island(self, x: Any, owner: str) -> Any:
        """The island's input as a float tensor the converter cannot quantize: the exact
        float rounding onto its own grid (the identity on its values). Without it the
        converter quantizes ops with a fixed output range (SOFTMAX, TANH, LOGISTIC) whose
        input comes straight from a quantized tensor."""
        spec = self.grid_of.get(id(x))
        if spec is None:
            return x
        return GridQuantize(int(spec.frac_bits), spec.qmin, spec.qmax, spec.rounding, "exact",
                            name=f"{owner}{FLOAT_ISLAND}_enter")(x)

    def _constant_multiply(self, inner: Any, x: Any, outs: list, wrapper: Any,
                           owner: str) -> Any:
        """x·c with a constant c (Caffe's AVE-pool border divisor). When every c is a
        dyadic number that int8 holds with one power-of-two scale, c is stored so (an int8
        MUL, exact products); otherwise the product is a float island (DEQUANTIZE, MUL,
        exact rounding to the output grid, QUANTIZE), as the converter would pick an int8
        scale that does not hold c."""
        constant = np.asarray(inner.get_weights()[0], np.float64)
        fl = _dyadic_int8_frac_bits(constant)
        if fl is not None:
            y = _ConstMul(constant.astype(np.float32), fl, name=owner)(x)
            if outs:
                y = self.quantize(y, *outs[0], owner, "output")
            return y
        clone = _clone(inner, name=f"{owner}{FLOAT_ISLAND}_mul")
        y = clone(self._enter_island(x, owner))
        clone.set_weights(inner.get_weights())
        return self._round_island(y, outs, wrapper, owner)

    def _preprocess(self, inner: Any, x: Any, outs: list, wrapper: Any, owner: str) -> Any:
        """Caffe input preprocessing ``(swap(x) - mean)·scale`` in an int8 file.

        Its own int8 step where that is exact: a 1x1 convolution whose kernel is ``scale``
        times the channel permutation and whose bias is ``-scale·mean``. Exact when the
        input is on a DFP grid 2^-fl_in, ``scale`` is a power of two (weight code 64) and
        every mean value lies on TFLite's bias grid 2^-fl_in·scale/64 (the int32 bias is
        then the exact mean, and the float model's subtraction and product are exact).
        The mean is not folded into the first convolution: that convolution's zero padding
        would pad with ``-mean`` instead of 0 at the borders.

        Otherwise (a mean image, a scale such as 1/58.8, a mean off that grid) an
        ExportError names the layer and the ways out.
        """
        spec_in = self.grid_of.get(id(x))
        weights = inner.get_weights()
        mean = np.asarray(weights[0], np.float64) if weights else None
        scale = float(inner.scale)
        channels = int(x.shape[-1])
        exponent = np.log2(abs(scale)) if scale != 0 else 0.5
        per_channel = mean is None or mean.ndim == 1
        if spec_in is not None and per_channel and exponent == np.round(exponent):
            weight_fl = 6 - int(exponent)  # scale = 64·2^-weight_fl
            bias = np.zeros(channels) if mean is None else -scale * mean
            bias_step = 2.0 ** (-int(spec_in.frac_bits) - weight_fl)
            codes = bias / bias_step
            top = max(abs(spec_in.qmin), abs(spec_in.qmax)) * 2.0 ** -int(spec_in.frac_bits)
            exact = (np.all(codes == np.round(codes)) and np.all(np.abs(codes) < 2**31)
                     and (top + (0 if mean is None else np.max(np.abs(mean))))
                     / (bias_step / abs(scale)) < 2**24)
            if exact:
                order = np.arange(channels)[::-1] if inner.swap_channels else np.arange(channels)
                kernel = np.zeros((1, 1, channels, channels), np.float32)
                kernel[0, 0, order, np.arange(channels)] = scale
                y = QuantizedLinear("conv", kernel, bias.astype(np.float32), padding="valid",
                                    weight_frac_bits=weight_fl, fake_quant=True,
                                    name=owner)(x)
                log.info("%s: preprocessing exported as an int8 1x1 convolution", owner)
                if outs:
                    y = self.quantize(y, *outs[0], owner, "output")
                return y
        if spec_in is None:
            why = "its input is not on a fixed-point grid"
        elif not per_channel:
            why = "a mean image is not a per-channel bias"
        elif exponent != np.round(exponent):
            why = f"the scale {scale:g} is not a power of two"
        else:
            why = (f"a mean value is not a multiple of the int8 bias step "
                   f"2^-{int(spec_in.frac_bits)}/64 of the input grid")
        raise ExportError(
            f"the input preprocessing has no exact int8 form: {why}; export with "
            "--preprocessing outside (preprocessing='outside': the file takes the "
            "preprocessed tensor, the constants go to <file>.preprocessing.json), or convert "
            "with a power-of-two --scale and per-channel --mean values on that step, or "
            "export with --target float",
            layer=owner,
        )

    def _round_island(self, y: Any, outs: list, wrapper: Any, owner: str) -> Any:
        if not outs:
            return y
        quantizer, qvars = outs[0]
        spec = specs.activation_spec(_quantizer_fn(quantizer, qvars), name=f"{owner}/output",
                                     quantizer=quantizer, quantizer_vars=qvars)
        if spec.kind == "dfp" and spec.bitwidth <= 8:
            y = GridQuantize(int(spec.frac_bits), spec.qmin, spec.qmax, spec.rounding, "exact",
                             name=f"{owner}{FLOAT_ISLAND}_round")(y)
        self.float_islands.append(owner)
        return self.quantize(y, quantizer, qvars, owner, "output")

    @staticmethod
    def _activation_quantizers(wrapper: Any) -> Tuple[list, list]:
        found = slots.activation_slots(wrapper)
        return ([(s.quantizer, s.variables) for s in found if s.role == "pre"],
                [(s.quantizer, s.variables) for s in found if s.role == "post"])

    def _linear(
        self,
        wrapper: Any,
        kind: str,
        quantized: Dict[int, np.ndarray],
        kernel_spec: Optional[specs.GridSpec],
        x: Any,
        owner: str,
        activation: str,
    ) -> Any:
        inner = wrapper.layer
        kernel_var = slots.weight_variable(wrapper, "kernel")
        if kernel_var is None:
            raise ExportError("cannot find the layer's kernel variable", layer=owner)
        kernel = quantized.get(id(kernel_var), kernel_var.numpy())
        bias_var = slots.weight_variable(wrapper, "bias")
        bias = None if bias_var is None else quantized.get(id(bias_var), bias_var.numpy())
        fake_quant = self.mode == "fakequant8"
        frac_bits = None
        if self.mode != "exact":
            if kernel_spec is None:
                kernel_spec = specs.weight_spec_from_values(
                    _per_channel_last(kernel, kind), axis=-1)
                self.specs.setdefault(owner, []).append(("kernel", kernel_spec))
            if kernel_spec.kind != "dfp":
                raise ExportError(
                    f"weights are {kernel_spec.describe()}, which has no TFLite "
                    "integer type; export with target 'float' or 'float16'",
                    layer=owner,
                )
            if kernel_spec.bitwidth > 8:
                raise ExportError(
                    f"{kernel_spec.bitwidth}-bit weights do not fit int8 (TFLite "
                    "int8 and int16x8 store 8-bit weights); use target 'float'",
                    layer=owner,
                )
            frac_bits = kernel_spec.frac_bits if fake_quant else None
            if fake_quant and bias is not None:
                self._warn_off_accumulator_grid(bias, kernel_spec, x, owner)
        common = dict(
            activation=activation,
            weight_frac_bits=frac_bits,
            fake_quant=fake_quant,
            name=inner.name,
        )
        if kind == "dense":
            layer = QuantizedLinear("dense", kernel, bias, **common)
        else:
            cfg = inner.get_config()
            if cfg.get("data_format", "channels_last") != "channels_last":
                raise ExportError("only channels_last convolutions are exported", layer=owner)
            if kind == "transpose":
                # the sub-pixel form needs a grid right after the layer (see _transpose)
                gridded = bool(_output_quantizers(wrapper) or slots.activation_slots(wrapper))
                return self._transpose(inner, kernel, bias, cfg, x, common, gridded)
            layer = QuantizedLinear(
                kind,
                kernel,
                bias,
                strides=cfg["strides"],
                padding=cfg["padding"],
                dilation_rate=cfg["dilation_rate"],
                **common,
            )
        return layer(x)

    def _warn_off_accumulator_grid(self, bias: np.ndarray, kernel_spec: specs.GridSpec,
                                   x: Any, owner: str) -> None:
        """One warning line when a bias is not on TFLite's int32 bias grid s_in·s_w =
        2^-(fl_in + fl_w) (e.g. caffe-jacinto 0.17's 16-bit bias with more fractional bits
        than the accumulator): the converter rounds it there, so the file can differ from
        the Keras model by an output step. Skipped when the input grid is not known here."""
        spec_in = self.grid_of.get(id(x))
        if spec_in is None or spec_in.frac_bits is None or kernel_spec.frac_bits is None:
            return
        bias = np.asarray(bias, np.float64).reshape(-1)
        fl_acc = int(spec_in.frac_bits) + np.asarray(kernel_spec.frac_bits, np.int64).reshape(-1)
        if fl_acc.size not in (1, bias.size):
            return
        codes = np.ldexp(bias, np.broadcast_to(fl_acc, bias.shape))
        if np.all(codes == np.round(codes)):
            return
        log.warning("%s: the bias is not on TFLite's int32 bias grid s_in*s_w = 2^-%d (its "
                    "own grid is finer, e.g. a bitwidth_bias < 32); the int8 file rounds it "
                    "and can differ by an output step; quantize with bitwidth_bias=32 for a "
                    "bit-identical file", owner, int(np.min(fl_acc)))

    @staticmethod
    def _transpose(inner: Any, kernel: np.ndarray, bias: Any, cfg: dict, x: Any,
                   common: dict, gridded: bool = True) -> Any:
        """A Conv2DTranspose as zero insertion (RESHAPE + PAD, exact in int8: PAD fills with
        the zero point) and a "valid" convolution with the spatially flipped kernel: the
        same products and int32 sums, requantized by the same CONV_2D / DEPTHWISE_CONV_2D
        kernels as every other convolution of the file. TFLite's TRANSPOSE_CONV is not
        used: with the batch left free it is not delegated to XNNPACK, and its builtin int8
        kernel rounds ties differently (up to a step per layer, more downstream).

        With ``full[j] = Σ_{s·i + t = j} x[i]·w[t]`` (j < s·(n − 1) + k) the layer's output
        is ``out[o] = full[o + p]``, p = 0 for "valid" and TF's ⌊max(s·(n − 1) + k − O, 0)/2⌋
        for "same" (O the output length, output_padding included). The zero-inserted input
        gets k − 1 − p zeros before and O + p − s·(n − 1) − 1 after; a kernel whose
        (cout, cin) part is diagonal (Caffe Deconvolution with group = channels) becomes a
        depthwise convolution, any other (group = 1, or grouped as a block-diagonal
        kernel) a CONV_2D with the (kh, kw, cin, cout) kernel. A dense kernel with equal
        strides s > 1 uses the sub-pixel form instead (:meth:`_subpixel_transpose`), which
        skips the s² − 1 of s² products with inserted zeros, when the layer's output has a
        grid of its own (``gridded``: an output or activation quantizer follows it; the
        converter carries that scale back through DEPTH_TO_SPACE and the crop). Without
        one (a ReLU / BatchNorm layer after it quantizes), the CONV_2D must be last so
        that the converter fuses the next ReLU into it and requantizes onto its grid."""
        name = common["name"]
        strides = tuple(int(v) for v in cfg["strides"])
        dilation = tuple(int(v) for v in cfg.get("dilation_rate", (1, 1)))
        if dilation != (1, 1):  # the dilated kernel, zeros between the taps (exact in int8)
            kh, kw = kernel.shape[:2]
            dilated = np.zeros(((kh - 1) * dilation[0] + 1, (kw - 1) * dilation[1] + 1)
                               + kernel.shape[2:], kernel.dtype)
            dilated[::dilation[0], ::dilation[1]] = kernel
            kernel = dilated
        sizes = [int(d) for d in x.shape[1:3]] if None not in x.shape[1:3] else None
        out_shape = inner.compute_output_shape(x.shape)
        if sizes is None or None in tuple(out_shape)[1:3]:
            raise ExportError("Conv2DTranspose with a free spatial input size is not exported "
                              "to int8; give the model input a fixed height and width",
                              layer=name)
        before, after = [], []
        for n, s, k, o in zip(sizes, strides, kernel.shape[:2], tuple(out_shape)[1:3]):
            full = s * (n - 1) + k
            p = max(full - int(o), 0) // 2 if cfg.get("padding") == "same" else 0
            before.append(k - 1 - p)
            after.append(int(o) + p - s * (n - 1) - 1)
        if min(before) < 0:
            raise ExportError(f"Conv2DTranspose crops more than its kernel ({before}); "
                              "not exported", layer=name)
        if gridded and strides[0] == strides[1] > 1 and not _is_depthwise_transpose(kernel):
            crops = [k - 1 - b for k, b in zip(kernel.shape[:2], before)]  # p of each axis
            return _Builder._subpixel_transpose(kernel, bias, strides[0], sizes, crops,
                                                [int(o) for o in tuple(out_shape)[1:3]], x,
                                                common)
        flipped = kernel[::-1, ::-1]
        padded = ZeroInsert(strides, before, after, name=f"{name}_zero_insert")(x)
        if _is_depthwise_transpose(kernel):
            diag = np.einsum("hwcc->hwc", flipped)[:, :, :, None]
            return QuantizedLinear("depthwise", np.ascontiguousarray(diag), bias,
                                   strides=(1, 1), padding="valid", **common)(padded)
        forward = np.ascontiguousarray(np.transpose(flipped, (0, 1, 3, 2)))
        return QuantizedLinear("conv", forward, bias, strides=(1, 1), padding="valid",
                               **common)(padded)

    @staticmethod
    def _subpixel_transpose(kernel: np.ndarray, bias: Any, s: int, sizes: List[int],
                            crops: List[int], out_hw: List[int], x: Any,
                            common: dict) -> Any:
        """A stride-s (s > 1 on both axes) transposed convolution in sub-pixel form: one
        "valid" CONV_2D with s²·cout output channels over the input padded by M − 1 zeros
        (M = ⌈k/s⌉), then DEPTH_TO_SPACE and the crop: the output at s·a + r (phase r) is
        Σ_m x[a − m]·w[r + s·m], so channel block r of the CONV_2D holds the taps
        w[r + s·(M − 1 − u)] at u. The same products and int32 sums as the layer, s² fewer
        multiplications than the zero-insertion form."""
        kh, kw, cout, cin = kernel.shape
        m_h, m_w = -(-kh // s), -(-kw // s)
        padded = np.zeros((m_h * s, m_w * s, cout, cin), kernel.dtype)
        padded[:kh, :kw] = kernel
        # taps[u_h, r_h, u_w, r_w] = w[r + s·(M − 1 − u)] per axis
        taps = padded.reshape(m_h, s, m_w, s, cout, cin)[::-1, :, ::-1]
        forward = np.transpose(taps, (0, 2, 5, 1, 3, 4)).reshape(m_h, m_w, cin, s * s * cout)
        # the CONV_2D output a covers phases s·a .. s·a + s − 1; rows up to o + p are needed
        need = [(o - 1 + p) // s + 1 for o, p in zip(out_hw, crops)]
        after = [max(a - n, 0) for a, n in zip(need, sizes)]
        before = [m_h - 1, m_w - 1]
        pad = keras.layers.ZeroPadding2D(((before[0], after[0]), (before[1], after[1])),
                                         name=f"{common['name']}_pad")(x)
        frac_bits = common["weight_frac_bits"]
        if frac_bits is not None and np.ndim(frac_bits) > 0:
            frac_bits = np.tile(np.asarray(frac_bits), s * s)
        conv = QuantizedLinear(
            "conv", np.ascontiguousarray(forward),
            None if bias is None else np.tile(np.asarray(bias), s * s),
            strides=(1, 1), padding="valid", **{**common, "weight_frac_bits": frac_bits,
                                                "name": f"{common['name']}_phases"})(pad)
        return PhaseInterleave(s, crops, out_hw, name=common["name"])(conv)

    def plain(self, layer: Any, args: tuple, kwargs: dict) -> Any:
        out = self._plain(layer, args, kwargs)
        source = args[0] if args else None
        if (self.mode == "fakequant8" and self.float_islands and not isinstance(out, list)
                and id(out) not in self.grid_of and not isinstance(source, (list, tuple))
                and id(source) in self.grid_of
                and type(getattr(layer, "layer", layer)).__name__ in _GRID_KEEPING):
            # after a float island the converter (run without calibration data) needs the
            # scale of every tensor: a layer that keeps its input's grid says so explicitly
            spec = self.grid_of[id(source)]
            if type(getattr(layer, "layer", layer)).__name__ == "AbsVal" and spec.signed:
                # |−128·2^−fl| needs the unsigned grid of the same step
                spec = dataclasses.replace(spec, signed=False)
            name = f"{getattr(layer, 'layer', layer).name}_keep_q"
            out = GridQuantize(int(spec.frac_bits), spec.qmin, spec.qmax, spec.rounding,
                               self.mode, name=name)(out)
            self.activation_layers[name] = spec
            self.grid_of[id(out)] = spec
        return out

    def _plain(self, layer: Any, args: tuple, kwargs: dict) -> Any:
        if slots.is_quantize_layer(layer):
            slot = slots.input_slot(layer)
            if slot is None:
                return args[0]
            return self.quantize(args[0], slot.quantizer, slot.variables, layer.name, "input")
        inner = getattr(layer, "layer", layer)
        if _is_index_argmax(inner) and args and not isinstance(args[0], (list, tuple)):
            return self._argmax(inner, args[0])
        if slots.is_quantize_wrapper(layer):
            return self.wrapped(layer, args[0])
        clone = _clone(layer)
        out = clone(*args, **kwargs)
        if layer.weights:
            clone.set_weights(layer.get_weights())
        return out

    def _argmax(self, inner: Any, x: Any) -> Any:
        """Caffe ArgMax (top_k 1, indices) as TFLite's ARG_MAX on the (int8) tensor itself:
        an int32 index output, exact (comparisons only); equal values give the higher index
        as Caffe's sort does (ARG_MAX on the reversed axis)."""
        if type(inner).__name__ == "TopKAxis":
            return ArgMaxIndex(int(inner.axis), flat=False, name=inner.name)(x)
        return ArgMaxIndex(-1, flat=True, out_rank=int(inner.out_rank), name=inner.name)(x)

    # -- graph -----------------------------------------------------------------------------
    def build(self) -> DeployPlan:
        model = self.qmodel
        if not hasattr(model, "_nodes_by_depth"):
            raise ExportError(
                "only Functional and Sequential Keras models can be exported "
                f"(got {type(model).__name__})"
            )
        inputs = [
            keras.Input(batch_shape=t.shape, dtype=t.dtype, name=t.name.split(":")[0])
            for t in model.inputs
        ]
        self._inputs = inputs
        usage = model._tensor_usage_count
        tensor_dict: Dict[str, list] = {}
        outside = self._outside_inputs() if self.preprocessing == "outside" else {}
        for k, (ref, new) in enumerate(zip(model.inputs, inputs)):
            site = outside.get(id(ref))
            if site is None:
                tensor_dict[str(id(ref))] = [new] * usage[str(id(ref))]
                continue
            inputs[k], y = self._preprocessed_input(site)
            tensor_dict[str(id(site.output))] = [y] * usage[str(id(site.output))]
        for depth in sorted(model._nodes_by_depth.keys(), reverse=True):
            for node in model._nodes_by_depth[depth]:
                if node.is_input or any(t not in tensor_dict for t in node.flat_input_ids):
                    continue
                args, kwargs = node.map_arguments(tensor_dict)
                kwargs.pop("training", None)
                try:
                    outputs = self.plain(node.layer, args, kwargs)
                except ExportError as err:
                    raise err.with_context(layer=node.layer.name)
                for x_id, y in zip(node.flat_output_ids, tf.nest.flatten(outputs)):
                    tensor_dict[x_id] = [y] * usage[x_id]
        missing = [_output_name(x) for x in model.outputs if str(id(x)) not in tensor_dict]
        if missing:
            raise ExportError(f"output {missing[0]} does not follow from the preprocessed "
                              "input alone; export with preprocessing 'inside'")
        outputs = [tensor_dict[str(id(x))].pop() for x in model.outputs]
        out_specs = [self.activation_layers.get(y._keras_history.layer.name) for y in outputs]
        outputs = self._name_outputs(outputs, [_output_name(x) for x in model.outputs])
        deploy = keras.Model(
            inputs, outputs if len(outputs) > 1 else outputs[0], name=f"{model.name}_deploy"
        )
        return DeployPlan(deploy, self.specs, self.activation_layers,
                          out_specs[0], out_specs, self.float_islands, self.outside)

    def _outside_inputs(self) -> Dict[int, Any]:
        """id(model input) -> the preprocessing site reading it (preprocessing="outside")."""
        from kerasq.export.preprocessing import find_preprocessing

        found = {id(site.model_input): site for site in find_preprocessing(self.qmodel)}
        if not found:
            raise ExportError("preprocessing 'outside': the model has no input preprocessing "
                              "layer (convert with --mean/--scale/--swap-rb to record one)")
        return found

    def _preprocessed_input(self, site: Any) -> Tuple[Any, Any]:
        """The file's input for an input whose preprocessing stays outside: the
        preprocessed tensor, quantized onto the preprocessing layer's output grid (the
        same rounding the Keras model applies after its float preprocessing)."""
        from kerasq.export.preprocessing import describe_layer

        source = site.quantize_layer
        layer = site.layer
        grid = None
        if source is not None:
            slot = slots.input_slot(source)
            if slot is not None:
                grid = specs.activation_spec(_quantizer_fn(slot.quantizer, slot.variables),
                                             name=f"{source.name}/input",
                                             quantizer=slot.quantizer,
                                             quantizer_vars=slot.variables)
                if grid.kind == "none":
                    grid = None
                elif grid.kind != "dfp":
                    raise ExportError(f"the raw input grid is {grid.describe()}, which the "
                                      "preprocessing sidecar cannot describe",
                                      layer=source.name)
        prep = describe_layer(site, grid)
        self.outside.append(prep)
        new = keras.Input(batch_shape=site.output.shape, dtype=site.output.dtype,
                          name=prep.tensor_name)
        y = new
        outs = _output_quantizers(layer) if slots.is_quantize_wrapper(layer) else []
        if outs:
            y = self.quantize(y, *outs[0], prep.layer, "output")
        log.info("%s: preprocessing left outside the file (input %s)", prep.layer,
                 prep.tensor_name)
        return new, y

    def _name_outputs(self, outputs: List[Any], names: List[str]) -> List[Any]:
        """End each output in an identity layer named ``<output name>`` +
        :data:`OUTPUT_SUFFIX`; the export strips the suffix from the file's signature and
        output tensor names, which so carry the model's output names (the Caffe tops)."""
        return [keras.layers.Activation("linear", name=f"{name}{OUTPUT_SUFFIX}")(y)
                for y, name in zip(outputs, names)]


# layers whose output values lie on their input's grid
_GRID_KEEPING = frozenset({
    "AbsVal", "Reshape", "Flatten", "Permute", "Dropout", "MaxPooling1D", "MaxPooling2D",
    "GlobalMaxPooling2D", "ZeroPadding2D", "Cropping2D", "ReLU",
})


def _dyadic_int8_frac_bits(values: np.ndarray) -> Optional[int]:
    """The fl with which every value is q·2^-fl, |q| <= 127 (the finest such), or None."""
    top = float(np.max(np.abs(values))) if values.size else 0.0
    if top == 0.0:
        return 0
    fl = int(np.floor(np.log2(127.0 / top)))
    codes = np.ldexp(values, fl)
    if np.all(codes == np.round(codes)) and np.all(np.abs(codes) <= 127):
        return fl
    return None


@keras.utils.register_keras_serializable(package="kerasq")
class _ConstMul(keras.layers.Layer):
    """x·c with c fake-quantized on the int8 grid 2^-fl (c is exactly on it)."""

    def __init__(self, constant: Any, frac_bits: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.constant = np.asarray(constant, np.float32)
        self.frac_bits = int(frac_bits)

    def call(self, x: Any) -> Any:
        step = 2.0 ** -self.frac_bits
        c = tf.quantization.fake_quant_with_min_max_args(
            tf.constant(self.constant), -128 * step, 127 * step)
        return x * c

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "constant": self.constant.tolist(),
                "frac_bits": self.frac_bits}


# activations whose TFLite int8 kernels approximate the function (tables, fixed-point
# polynomials), so they run as float islands in int8 files
FLOAT_ACTIVATIONS = frozenset({
    "softmax", "tanh", "sigmoid", "elu", "selu", "softplus", "softsign", "swish", "silu",
    "gelu", "exponential", "log_softmax",
})


def _is_softmax(layer: Any) -> bool:
    """A layer computed as a float island in int8 files: Softmax, or an Activation layer
    whose function TFLite's int8 kernels only approximate (tanh, sigmoid, ...)."""
    if type(layer).__name__ in ("Softmax", "ELU"):
        return True
    act = getattr(layer, "activation", None)
    return (type(layer).__name__ == "Activation"
            and getattr(act, "__name__", "") in FLOAT_ACTIVATIONS)


def _per_channel_last(kernel: np.ndarray, kind: Optional[str]) -> np.ndarray:
    """The kernel with its output channels on the last axis (the axis of the per-channel
    weight grids): depthwise (kh, kw, cin, mult) -> (kh, kw, cin·mult), transposed
    convolution (kh, kw, cout, cin) -> (kh, kw, cin, cout)."""
    if kind == "depthwise":
        return kernel.reshape(kernel.shape[0], kernel.shape[1], -1)
    if kind == "transpose":
        return np.transpose(kernel, (0, 1, 3, 2))
    return kernel


def _is_depthwise_transpose(kernel: np.ndarray) -> bool:
    """A (kh, kw, cout, cin) transposed-convolution kernel that is diagonal in cout, cin."""
    if kernel.ndim != 4 or kernel.shape[2] != kernel.shape[3]:
        return False
    off = kernel * (1.0 - np.eye(kernel.shape[2], dtype=kernel.dtype))
    return not np.any(off)


def _is_index_argmax(layer: Any) -> bool:
    """A converted Caffe ArgMax giving the top-1 index (not values): exported as ARG_MAX."""
    return (type(layer).__name__ in ("TopKAxis", "ArgMaxFlat")
            and int(getattr(layer, "top_k", 0)) == 1 and not getattr(layer, "out_max_val", True))


def _output_name(tensor: Any) -> str:
    layer = tensor._keras_history.layer
    return getattr(layer, "layer", layer).name


def build_deploy_model(qmodel: "keras.Model", mode: str,
                       preprocessing: str = "inside") -> DeployPlan:
    """Deploy graph of ``qmodel`` for ``mode``: "fakequant8" (int8 with kerasq's scales),
    "plain16" (TFLite's 16x8 calibration of the quantized weights) or "exact" (float).
    ``preprocessing="outside"``: the graph starts after the input preprocessing layer
    (:mod:`kerasq.export.preprocessing`), whose records are ``plan.preprocessing``."""
    return _Builder(qmodel, mode, preprocessing).build()


__all__ = ["FLOAT_ISLAND", "OUTPUT_SUFFIX", "DeployPlan", "build_deploy_model", "MODES"]
