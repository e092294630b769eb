"""Export a Keras / converted Caffe / kerasq-quantized model to ONNX, and verify the file.

The TensorFlow graph is translated by tf2onnx (1.17, which runs beside TensorFlow 2.21,
protobuf 7 and numpy 2 when the model is a ``tf_keras`` model, the only kind kerasq builds).
Targets:

* ``float`` — any Keras model, converted Caffe nets included (an SSD's DetectionOutput
  becomes the fixed-size post-processing, with ONNX ``NonMaxSuppression`` per class).
  A kerasq-quantized model is first rebuilt as its exact float deploy graph (:func:`~kerasq.export.graph.build_deploy_model`, mode
  "exact"): weights stored on their quantized grid, activations rounded with float ops,
  so the file computes the Keras fake-quant numbers.
* ``int8`` — a calibrated / QAT kerasq model as QDQ ONNX: every quantized activation is
  ``QuantizeLinear -> DequantizeLinear`` with scale exactly 2^-fl (int8, zero point 0 when
  signed; uint8, zero point 0 when unsigned), every Conv / depthwise / Dense weight is an
  int8 initializer behind a per-channel ``DequantizeLinear`` (scales 2^-fl per output
  channel, zero points 0); biases stay float (onnxruntime quantizes them to int32 at
  s_in·s_w when it fuses the QDQ groups).

``power2_symmetric=True`` (TIDL's form for pre-quantized models) additionally makes every
activation per-tensor, power-of-two and zero point 0: an affine range (tfmot's own input
quantizer) is widened to the smallest such grid covering it.

Verification runs the file in onnxruntime on ``verify_data`` and compares each output with
the Keras model: relative error (max|Δ| / max(1, max|ref|)) for ``float``; for ``int8``
the max error in output quantization steps, the fraction of identical values and the
top-1 agreement. On a failure the first layer whose tensor diverges is named.

Example:
    >>> from kerasq.export import to_onnx
    >>> blob = to_onnx(model, "net.onnx", verify_data=x)                    # doctest: +SKIP
    >>> blob = to_onnx(qmodel, "q.onnx", target="int8", verify_data=x)      # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Union

import numpy as np

from kerasq._compat import quiet_native_stderr
from kerasq._io import write_bytes_atomic
from kerasq.errors import ExportError, VerificationError
from kerasq.export import detection

log = logging.getLogger("kerasq.export.onnx")

TARGETS = ("float", "int8")
DEFAULT_OPSET = 17
PathLike = Union[str, "os.PathLike[str]"]


# -- reports ---------------------------------------------------------------------------------
@dataclasses.dataclass
class OutputComparison:
    """One model output: the ONNX file against the Keras model."""

    name: str
    samples: int
    max_abs_error: float
    relative_error: float  # max|Δ| / max(1, max|reference|)
    output_step: float | None  # int8: the output's quantization step
    max_error_steps: float | None
    exact_fraction: float
    top1_agreement: float | None

    def describe(self) -> str:
        parts = [f"{self.name}:"]
        if self.max_error_steps is not None:
            parts.append(f"max error {self.max_error_steps:.3g} steps (step {self.output_step:.3g}),")
        else:
            parts.append(f"relative error {self.relative_error:.3g},")
        parts.append(f"{100 * self.exact_fraction:.2f}% identical")
        if self.top1_agreement is not None:
            parts.append(f", top-1 agreement {100 * self.top1_agreement:.2f}%")
        return " ".join(parts).replace(" ,", ",")


@dataclasses.dataclass
class OnnxReport:
    """onnxruntime vs Keras on the same inputs, per output."""

    samples: int
    outputs: list[OutputComparison]
    first_divergence: str | None = None

    def ok(
        self, *, max_steps: float = 1.0, min_top1: float = 0.995, rtol: float = 1e-4
    ) -> bool:
        """True if every quantized output is within ``max_steps`` steps, every float output
        within ``rtol`` relative error, and top-1 agrees on >= ``min_top1``."""
        for out in self.outputs:
            if out.max_error_steps is not None:
                if out.max_error_steps > max_steps + 1e-6:
                    return False
            elif out.relative_error > rtol:
                return False
            if out.top1_agreement is not None and out.top1_agreement < min_top1:
                return False
        return True

    def describe(self) -> str:
        text = f"{self.samples} samples; " + "; ".join(o.describe() for o in self.outputs)
        if self.first_divergence:
            text += f"; first diverging layer: {self.first_divergence}"
        return text


@dataclasses.dataclass
class OnnxExportResult:
    """The exported file, its target and its verification (if data was given)."""

    content: bytes
    target: str
    report: OnnxReport | None

    @property
    def size(self) -> int:
        return len(self.content)


# -- conversion ------------------------------------------------------------------------------
def _tf2onnx() -> Any:
    try:
        import tf2onnx  # type: ignore[import-untyped]
        import tf2onnx.convert  # type: ignore[import-untyped]
    except ImportError as err:
        raise ExportError(
            f"ONNX export needs tf2onnx and onnx ({err}); install them with "
            "`pip install kerasq[onnx]`"
        )
    return tf2onnx


def is_quantized(model: Any) -> bool:
    """True if ``model`` holds tfmot quantize wrappers / layers (a kerasq-quantized model)."""
    return any(
        type(layer).__name__ in ("QuantizeLayer", "QuantizeWrapper", "QuantizeWrapperV2")
        for layer in getattr(model, "layers", [])
    )


def _all_layers(model: Any) -> list[Any]:
    out = []
    for layer in getattr(model, "layers", []):
        out.append(layer)
        out.extend(_all_layers(layer))
    return out


@contextlib.contextmanager
def _grouped_convs_inlined(model: Any) -> Iterator[None]:
    """Keras runs a grouped Conv2D through a ``jit_compile`` tf.function (a CPU
    workaround), which TensorFlow does not inline and tf2onnx cannot read; while tracing
    for ONNX, call the plain convolution op (ONNX Conv has groups natively)."""
    patched = []
    for layer in _all_layers(model):
        if getattr(layer, "groups", 1) > 1 and hasattr(layer, "convolution_op"):
            layer._jit_compiled_convolution_op = layer.convolution_op
            patched.append(layer)
    try:
        yield
    finally:
        for layer in patched:
            del layer._jit_compiled_convolution_op


def _convert(model: Any, opset: int, channels_first: bool = False) -> Any:
    tf2onnx = _tf2onnx()
    try:
        with warnings.catch_warnings(), quiet_native_stderr(), _grouped_convs_inlined(model):
            warnings.simplefilter("ignore")
            logging.getLogger("tf2onnx").setLevel(logging.ERROR)
            nchw_in = [t.name.split(":")[0] for t in model.inputs if len(t.shape) == 4]
            nchw_out = [n for n, t in zip(model.output_names, model.outputs) if len(t.shape) == 4]
            layout = {"inputs_as_nchw": nchw_in, "outputs_as_nchw": nchw_out}
            proto, _ = tf2onnx.convert.from_keras(
                model, opset=opset, **(layout if channels_first else {})
            )
            if channels_first:  # lets OnnxRunner(keras_layout=True) feed NHWC data
                for key, names in (("kerasq.nchw_inputs", nchw_in),
                                   ("kerasq.nchw_outputs", nchw_out)):  # fmt: skip
                    entry = proto.metadata_props.add()
                    entry.key, entry.value = key, ",".join(names)
    except Exception as err:  # tf2onnx raises many types; report one line
        lines = [line for line in str(err).strip().splitlines() if line.strip()]
        raise ExportError(f"ONNX conversion failed: {(lines[0] if lines else repr(err))[:300]}")
    return proto


def _scope_of(node_name: str, layer: str) -> bool:
    return f"/{layer}/" in f"/{node_name}"


def _pow2_exponent(scale: float) -> int | None:
    mant, exp = math.frexp(float(scale))
    return exp - 1 if mant == 0.5 else None


def _symmetric_grid(low: float, high: float) -> tuple[float, Any]:
    """Smallest power-of-two, zero-point-0 grid (int8 or uint8) covering [low, high]."""
    if low >= 0:
        return 2.0 ** math.ceil(math.log2(max(high, 1e-30) / 255.0)), np.uint8
    need = max(-low / 128.0, high / 127.0, 1e-30)
    return 2.0 ** math.ceil(math.log2(need)), np.int8


def _qdq_activations(proto: Any, power2_symmetric: bool) -> list[str]:
    """tf2onnx writes FakeQuant as uint8 QDQ with zero point 128 for signed ranges: make
    those int8 with zero point 0 (same grid). Returns problems (non power-of-two scales)."""
    from onnx import numpy_helper

    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    problems = []
    replaced: dict[tuple[str, str], tuple[str, str]] = {}
    for node in graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(node.input) < 3:
            continue
        scale_name, zp_name = node.input[1], node.input[2]
        if scale_name not in inits or zp_name not in inits:
            continue
        key = (scale_name, zp_name)
        if key not in replaced:
            scale = float(numpy_helper.to_array(inits[scale_name]))
            zp = numpy_helper.to_array(inits[zp_name])
            if zp.dtype != np.uint8:
                continue
            zero = int(zp)
            low, high = (0 - zero) * scale, (255 - zero) * scale
            dtype: Any
            if zero == 0:
                new_scale, dtype = scale, np.uint8
            elif zero == 128:
                new_scale, dtype = scale, np.int8
            elif power2_symmetric:
                new_scale, dtype = _symmetric_grid(low, high)
                log.info(
                    "power2-symmetric: affine range [%g, %g] -> %s scale %g",
                    low, high, np.dtype(dtype).name, new_scale,
                )  # fmt: skip
            else:
                replaced[key] = key
                continue
            if _pow2_exponent(new_scale) is None:
                problems.append(f"{node.name}: scale {new_scale!r} is not a power of two")
            s_name, z_name = f"{scale_name}_pow2", f"{zp_name}_{np.dtype(dtype).name}_zero"
            if s_name not in inits:
                t = numpy_helper.from_array(np.array(new_scale, np.float32), s_name)
                graph.initializer.append(t)
                inits[s_name] = t
            if z_name not in inits:
                t = numpy_helper.from_array(np.array(0, dtype), z_name)
                graph.initializer.append(t)
                inits[z_name] = t
            replaced[key] = (s_name, z_name)
        node.input[1], node.input[2] = replaced[key]
    return problems


def _same_weight(onnx_weight: np.ndarray, entry: tuple[np.ndarray, str, np.ndarray]) -> bool:
    """True if the ONNX weight is the Keras kernel in one of the layouts tf2onnx writes."""
    _, kind, k = entry
    if kind == "depthwise":  # (kh, kw, cin, mult) -> (cin·mult, 1, kh, kw)
        forms = [k.reshape(k.shape[0], k.shape[1], -1).transpose(2, 0, 1)[:, None]]
    elif kind == "conv":  # HWIO -> OIHW
        forms = [k.transpose(3, 2, 0, 1)]
    else:  # dense: MatMul (cin, cout), Gemm transB, 1x1 Conv
        forms = [k, k.T, k.T[:, :, None, None]]
    return any(f.shape == onnx_weight.shape and np.array_equal(f, onnx_weight) for f in forms)


def _qdq_weights(proto: Any, linear: Mapping[str, tuple[np.ndarray, str, np.ndarray]]) -> None:
    """Store each quantized Conv / MatMul weight as int8 + per-channel DequantizeLinear."""
    from onnx import helper, numpy_helper

    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    users: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            users[name] = users.get(name, 0) + 1
    new_nodes = []
    done = set()
    matched: set = set()
    for node in graph.node:
        if node.op_type not in ("Conv", "MatMul", "Gemm") or len(node.input) < 2:
            continue
        # the transpose optimizer renames Conv nodes; the weight constant keeps its scope
        layer = next(
            (
                name
                for name in linear
                if _scope_of(node.input[1], name) or _scope_of(node.name, name)
            ),
            None,
        )
        w_name = node.input[1]
        w = numpy_helper.to_array(inits[w_name]).astype(np.float32) if w_name in inits else None
        if layer is None and w is not None:  # folded constants lose their scope: by value
            layer = next((name for name in linear if name not in matched
                          and _same_weight(w, linear[name])), None)  # fmt: skip
        if layer is None:
            continue
        if w is None:
            raise ExportError("the weight is not a constant in the ONNX graph", layer=layer)
        matched.add(layer)
        axis = 0 if node.op_type == "Conv" else w.ndim - 1
        if node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute):
            axis = 0
        channels = w.shape[axis]
        frac_bits = np.asarray(linear[layer][0], np.int64).reshape(-1)
        if frac_bits.size not in (1, channels):
            raise ExportError(
                f"{frac_bits.size} weight scales for {channels} channels", layer=layer
            )
        fl = np.broadcast_to(frac_bits, (channels,))
        shape = [1] * w.ndim
        shape[axis] = channels
        codes = w * np.ldexp(1.0, fl).reshape(shape)
        if not np.array_equal(codes, np.round(codes)) or np.abs(codes).max(initial=0) > 128 or (
            codes.max(initial=0) > 127
        ):
            raise ExportError("weights are not on their 8-bit 2^-fl grid", layer=layer)
        base = f"{layer}_weight"
        q = numpy_helper.from_array(codes.astype(np.int8), f"{base}_int8")
        s = numpy_helper.from_array(np.ldexp(1.0, -fl).astype(np.float32), f"{base}_scale")
        z = numpy_helper.from_array(np.zeros(channels, np.int8), f"{base}_zero")
        graph.initializer.extend([q, s, z])
        dq = helper.make_node(
            "DequantizeLinear",
            [q.name, s.name, z.name],
            [f"{base}_dq"],
            name=f"{base}_DequantizeLinear",
            axis=axis,
        )
        new_nodes.append((node, dq))
        node.input[1] = dq.output[0]
        users[w_name] -= 1
        if users[w_name] == 0:
            done.add(w_name)
    missing = sorted(set(linear) - matched)
    if missing:
        raise ExportError(f"no ONNX Conv/MatMul found for the quantized layer(s) {missing}")
    kept = [t for t in graph.initializer if t.name not in done]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    # insert each DequantizeLinear right before its consumer (topological order)
    ordered = []
    before = {id(consumer): dq for consumer, dq in new_nodes}
    for node in graph.node:
        if id(node) in before:
            ordered.append(before[id(node)])
        ordered.append(node)
    nodes = [type(n)() for n in ordered]
    for dst, src in zip(nodes, ordered):
        dst.CopyFrom(src)
    del graph.node[:]
    graph.node.extend(nodes)


# ops that move or select values without changing them: a tensor on a grid stays on it
_VALUE_KEEPING = frozenset(
    {"Transpose", "Reshape", "Pad", "Slice", "Squeeze", "Unsqueeze", "Flatten", "MaxPool",
     "Identity"}
)  # fmt: skip


def _requantize_conv_inputs(proto: Any) -> list[str]:
    """A Conv whose input reaches it from a DequantizeLinear only through value-keeping ops
    (a zero-insertion upsampling: Pad / Reshape / Transpose) is not fused by onnxruntime,
    which needs DequantizeLinear -> Conv. Repeat the grid right before such a Conv
    (``QuantizeLinear -> DequantizeLinear``, same scale, zero point 0): exact, since the
    values are already on that grid (Pad adds zeros, code 0). Returns the Convs changed."""
    from onnx import helper, numpy_helper

    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}

    def zero_pad(node: Any) -> bool:
        mode = next((a.s for a in node.attribute if a.name == "mode"), b"constant")
        if mode != b"constant":
            return False
        if len(node.input) > 2 and node.input[2]:
            value = inits.get(node.input[2])
            return value is not None and not numpy_helper.to_array(value).any()
        return True

    def grid_of(tensor: str) -> tuple[str, str] | None:
        # onnxruntime moves a DequantizeLinear across Transpose / Reshape / MaxPool itself;
        # a chain needs the repeated grid only when it pads (zero insertion) or slices
        needed = False
        for _ in range(len(graph.node)):
            node = producer.get(tensor)
            if node is None:
                return None
            if node.op_type == "DequantizeLinear":
                if len(node.input) < 3 or node.input[1] not in inits or node.input[2] not in inits:
                    return None
                scale = numpy_helper.to_array(inits[node.input[1]])
                zero = numpy_helper.to_array(inits[node.input[2]])
                if scale.size != 1 or zero.any() or not needed:
                    return None
                return node.input[1], node.input[2]
            if node.op_type not in _VALUE_KEEPING or (node.op_type == "Pad" and not zero_pad(node)):
                return None
            needed = needed or node.op_type in ("Pad", "Slice")
            tensor = node.input[0]
        return None

    inserted: dict[int, list[Any]] = {}
    changed = []
    for node in graph.node:
        if node.op_type != "Conv" or producer.get(node.input[0]) is None:
            continue
        if producer[node.input[0]].op_type == "DequantizeLinear":
            continue
        grid = grid_of(node.input[0])
        if grid is None:
            continue
        base = f"{node.name}_input_regrid"
        q = helper.make_node("QuantizeLinear", [node.input[0], *grid], [f"{base}_q"],
                             name=f"{base}_QuantizeLinear")  # fmt: skip
        dq = helper.make_node("DequantizeLinear", [f"{base}_q", *grid], [f"{base}_dq"],
                              name=f"{base}_DequantizeLinear")  # fmt: skip
        node.input[0] = dq.output[0]
        inserted[id(node)] = [q, dq]
        changed.append(node.name)
    if changed:
        ordered = []
        for node in graph.node:
            ordered.extend(inserted.get(id(node), []))
            ordered.append(node)
        nodes = [type(n)() for n in ordered]
        for dst, src in zip(nodes, ordered):
            dst.CopyFrom(src)
        del graph.node[:]
        graph.node.extend(nodes)
    return changed


def _deploy_int8(
    model: Any,
) -> tuple[Any, dict[str, tuple[np.ndarray, str, np.ndarray]], list[float | None]]:
    """The fakequant8 deploy graph with plain constant weights, the weight grids by layer,
    and the step of each output."""
    from kerasq.export.graph import build_deploy_model
    from kerasq.export.layers import QuantizedLinear

    plan = build_deploy_model(model, "fakequant8")
    linear: dict[str, tuple[np.ndarray, str, np.ndarray]] = {}
    for layer in plan.model.layers:
        if isinstance(layer, QuantizedLinear) and layer.fake_quant:
            linear[layer.name] = (
                np.asarray(layer.weight_frac_bits),
                layer.kind,
                np.asarray(layer.kernel_value, np.float32),
            )
            # the kernel already holds quantized values: keep them as plain constants and
            # write the int8 codes + per-channel DequantizeLinear into the ONNX graph
            layer.fake_quant = False
    return plan.model, linear, _output_steps(plan)


def _output_steps(plan: Any) -> list[float | None]:
    """The DFP step of each deploy-model output. An output behind grid-keeping layers (a
    Caffe Crop, a Reshape, a max pool...) has the step of the quantizer before them; an
    output computed from a grid (an ArgMax index) has none."""
    from kerasq.export.graph import _GRID_KEEPING

    steps: list[float | None] = []
    for tensor in plan.model.outputs:
        layer = tensor._keras_history.layer
        spec = None
        for _ in range(len(plan.model.layers)):
            spec = plan.activation_layers.get(layer.name)
            nodes = getattr(layer, "_inbound_nodes", [])
            inbound = nodes[0].inbound_layers if nodes else []
            inbound = inbound if isinstance(inbound, (list, tuple)) else [inbound]
            keeps = type(layer).__name__ in _GRID_KEEPING or (
                type(layer).__name__ == "Activation" and layer.get_config().get("activation") == "linear"
            )
            if spec is not None or not keeps or len(inbound) != 1:
                break
            layer = inbound[0]
        steps.append(float(spec.step) if spec is not None and spec.kind == "dfp" else None)
    return steps


def build_onnx(
    model: Any,
    *,
    target: str = "float",
    opset: int = DEFAULT_OPSET,
    power2_symmetric: bool = False,
    channels_first: bool = False,
) -> tuple[Any, list[float | None], Any]:
    """The ONNX ModelProto of ``model`` for ``target``, the int8 step of each output (None:
    float, or not on a DFP grid), and the Keras graph it was translated from (the deploy
    graph for quantized models)."""
    if target not in TARGETS:
        raise ExportError(f"unknown ONNX target {target!r}; choose one of {', '.join(TARGETS)}")
    if not hasattr(model, "inputs") or not hasattr(model, "layers"):
        raise ExportError(f"not a Keras model: {type(model).__name__}")
    steps: list[float | None] = []
    if target == "int8":
        if not is_quantized(model):
            raise ExportError(
                "target int8 needs a kerasq-quantized (calibrated or QAT) model; "
                "use target 'float' for a float model"
            )
        # as for TFLite int8: put 32-bit biases on the int32 grid s_in·s_w (and tie the grids
        # of Concatenate inputs) in the Keras model, so it computes what onnxruntime's fused
        # int8 kernels compute (they quantize a float bias to int32 at s_in·s_w)
        from kerasq.schemes.shared_grids import align_for_int8

        aligned = align_for_int8(model)
        if aligned["biases"]:
            log.info("int8 ONNX: int32 accumulator-grid biases in %s", ", ".join(aligned["biases"]))
        graph_model, linear, steps = _deploy_int8(model)
        graph_model = detection.with_postprocess(graph_model)
        proto = _convert(graph_model, opset, channels_first)
        problems = _qdq_activations(proto, power2_symmetric)
        _qdq_weights(proto, linear)
        regridded = _requantize_conv_inputs(proto)
        if regridded:
            log.info("int8 ONNX: grid repeated before %s (fusable by onnxruntime)", regridded)
        if problems:
            raise ExportError("int8 ONNX scales are not kerasq's powers of two: " + "; ".join(
                problems[:5]))
    else:
        graph_model = model
        if is_quantized(model):
            from kerasq.export.graph import build_deploy_model

            graph_model = build_deploy_model(model, "exact").model
        # SSD: the DetectionOutput becomes the fixed-size post-processing (as for TFLite)
        graph_model = detection.with_postprocess(graph_model)
        proto = _convert(graph_model, opset, channels_first)
    proto.producer_name = "kerasq"
    _check(proto)
    return proto, steps, graph_model


def _check(proto: Any) -> None:
    import onnx

    try:
        onnx.checker.check_model(proto)
    except Exception as err:  # onnx.checker.ValidationError and protobuf errors
        raise ExportError(f"the ONNX model is invalid: {str(err).splitlines()[0][:300]}")


# -- running and comparing ---------------------------------------------------------------------
class OnnxRunner:
    """Run an ONNX file in onnxruntime (CPU) in batches.

    Example:
        >>> outs = OnnxRunner(blob)({"data": x})   # doctest: +SKIP
    """

    def __init__(
        self,
        content: bytes,
        *,
        threads: int = 1,
        optimize: bool = True,
        keras_layout: bool = False,
    ) -> None:
        try:
            import onnxruntime as ort  # type: ignore[import-untyped]
        except ImportError as err:
            raise ExportError(
                f"verifying ONNX needs onnxruntime ({err}); `pip install kerasq[onnx]`"
            )

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        if not optimize:
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        self.session = ort.InferenceSession(content, opts, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        # keras_layout: take / give NHWC for the tensors a channels_first file has as NCHW
        meta = self.session.get_modelmeta().custom_metadata_map if keras_layout else {}
        self.nchw_inputs = set(filter(None, meta.get("kerasq.nchw_inputs", "").split(",")))
        self.nchw_outputs = set(filter(None, meta.get("kerasq.nchw_outputs", "").split(",")))

    def __call__(
        self, inputs: Mapping[str, np.ndarray], *, batch_size: int = 64, names: Any = None
    ) -> dict[str, np.ndarray]:
        names = list(names or self.output_names)
        n = len(next(iter(inputs.values())))
        parts: dict[str, list[np.ndarray]] = {k: [] for k in names}
        dynamic = all(
            not isinstance(i.shape[0], int) for i in self.session.get_inputs() if i.shape
        )
        step = batch_size if dynamic else 1
        for start in range(0, n, step):
            feed = {k: np.asarray(v[start : start + step], np.float32) for k, v in inputs.items()}
            feed = {k: v.transpose(0, 3, 1, 2) if k in self.nchw_inputs else v
                    for k, v in feed.items()}  # fmt: skip
            for k, v in zip(names, self.session.run(names, feed)):
                v = np.asarray(v)
                parts[k].append(v.transpose(0, 2, 3, 1) if k in self.nchw_outputs else v)
        return {k: np.concatenate(v) if v and v[0].ndim else v[0] for k, v in parts.items()}


def _feed(model: Any, data: Any, input_names: Sequence[str]) -> dict[str, np.ndarray]:
    if isinstance(data, Mapping):
        return {k: np.asarray(v, np.float32) for k, v in data.items()}
    if len(input_names) != 1:
        raise ExportError(f"the model has {len(input_names)} inputs: give verify_data as a dict")
    return {input_names[0]: np.asarray(data, np.float32)}


def _keras_outputs(model: Any, feed: dict[str, np.ndarray], batch: int = 64) -> list[np.ndarray]:
    inputs = [feed[k] for k in feed]
    n = len(inputs[0])
    outs: list[list[np.ndarray]] = []
    for start in range(0, n, batch):
        args = [x[start : start + batch] for x in inputs]
        y = model(args if len(args) > 1 else args[0], training=False)
        if isinstance(y, dict):  # in the order of output_names (what the file is named by)
            names = list(getattr(model, "output_names", None) or [])
            ys = [y[k] for k in names] if set(names) == set(y) else list(y.values())
        else:
            ys = list(y) if isinstance(y, (list, tuple)) else [y]
        outs.append([np.asarray(v, np.float32) for v in ys])
    return [np.concatenate([o[i] for o in outs]) for i in range(len(outs[0]))]


def compare(
    name: str, got: np.ndarray, want: np.ndarray, step: float | None
) -> OutputComparison:
    """Compare one output (``got`` from ONNX, ``want`` from Keras)."""
    if got.shape != want.shape and got.size == want.size:
        got = got.reshape(want.shape)
    if got.shape != want.shape:
        raise VerificationError(f"output {name}: ONNX shape {got.shape} != Keras {want.shape}")
    err = np.abs(got.astype(np.float64) - want.astype(np.float64))
    max_err = float(err.max()) if err.size else 0.0
    top1 = None
    if want.ndim >= 2 and want.shape[-1] > 1:  # classes (or per-pixel classes) last
        top1 = float(np.mean(np.argmax(got, -1) == np.argmax(want, -1)))
    return OutputComparison(
        name=name,
        samples=len(want),
        max_abs_error=max_err,
        relative_error=max_err / max(1.0, float(np.abs(want).max(initial=0.0))),
        output_step=step,
        max_error_steps=None if step is None else max_err / step,
        exact_fraction=float(np.mean(err == 0)) if err.size else 1.0,
        top1_agreement=top1,
    )


def verify_onnx(
    content: bytes,
    keras_model: Any,
    data: Any,
    *,
    output_step: float | None = None,
    graph_model: Any = None,
    batch_size: int = 64,
    output_steps: Sequence[float | None] | None = None,
) -> OnnxReport:
    """Run ``content`` in onnxruntime on ``data`` and compare with ``keras_model`` per output
    (in steps of ``output_steps[i]`` where given — ``output_step`` for a single output —
    else relative error). ``graph_model`` is not used here; :func:`first_divergence` takes
    it to name the first diverging layer.

    Example:
        >>> verify_onnx(blob, model, x).describe()   # doctest: +SKIP
    """
    runner = OnnxRunner(content, keras_layout=True)
    feed = _feed(keras_model, data, runner.input_names)
    got = runner(feed, batch_size=batch_size)
    want = _keras_outputs(keras_model, feed, batch_size)
    names = list(getattr(keras_model, "output_names", None) or [])
    onnx_names = runner.output_names
    if len(onnx_names) != len(want):
        raise VerificationError(
            f"the ONNX file has {len(onnx_names)} outputs, the Keras model {len(want)}"
        )
    by_name = names if len(names) == len(want) and set(names) == set(onnx_names) else onnx_names
    steps = list(output_steps) if output_steps else [output_step if len(want) == 1 else None]
    steps += [None] * (len(want) - len(steps))
    outputs = [compare(n, got[n], w, s) for n, w, s in zip(by_name, want, steps)]
    report = OnnxReport(samples=len(next(iter(feed.values()))), outputs=outputs)
    log.info("ONNX verification: %s", report.describe())
    return report


def verify_onnx_detections(content: bytes, keras_model: Any, data: Any) -> Any:
    """SSD: the file's fixed detections against the Keras model's, as sets per image
    (:func:`kerasq.export.detection.compare_detections`), plus the loc / conf heads and the
    Keras post-processing run on the file's own heads (near-tied NMS outcomes).

    Example:
        >>> verify_onnx_detections(blob, ssd_model, x).ok   # doctest: +SKIP
        True
    """
    from kerasq._compat import keras

    runner = OnnxRunner(content, keras_layout=True)
    data = np.asarray(data, np.float32)
    got = runner({runner.input_names[0]: data}, batch_size=1)
    missing = [n for n in detection.OUTPUT_NAMES + detection.HEAD_NAMES if n not in got]
    if missing:
        raise ExportError(f"the ONNX file has no output(s) {missing}")
    want = detection.keras_detections(keras_model, data)
    report = detection.compare_detections(got, want)
    layer: Any = detection.detection_layer(keras_model)
    holder = detection._owner(keras_model, layer)
    inputs = holder.input if isinstance(holder.input, (list, tuple)) else [holder.input]
    heads = [np.asarray(h) for h in keras.Model(keras_model.inputs, list(inputs))(data)]
    errors, tolerance = [], 0.0
    for name, ref in zip(detection.HEAD_NAMES, heads[:2]):
        errors.append(float(np.abs(got[name].reshape(ref.shape).astype(np.float64) - ref).max()))
        tolerance = max(tolerance, 1.1e-4 * max(1.0, float(np.abs(ref).max())))
    own = layer.fixed_outputs([got[detection.HEAD_NAMES[0]], got[detection.HEAD_NAMES[1]],
                               heads[2][:1]])  # fmt: skip
    own_report = detection.compare_detections(
        got, {k: np.asarray(v) for k, v in zip(detection.OUTPUT_NAMES, own)}
    )
    report = dataclasses.replace(
        report,
        head_error=max(errors),
        head_tolerance=tolerance,
        postprocess_unmatched=own_report.unmatched + own_report.count_mismatches,
    )
    log.info("ONNX detection verification: %s", report.describe())
    return report


def first_divergence(
    content: bytes, graph_model: Any, data: Any, *, rtol: float = 1e-4, step: float | None = None
) -> str | None:
    """The first layer of ``graph_model`` (in graph order) whose output in the ONNX file
    differs from Keras by more than ``rtol`` relative (or one ``step``), or None.

    Each layer's tensor is the last ONNX node output in that layer's name scope; tensors
    the converter moved to NCHW are compared transposed; layers without one are skipped."""
    import onnx

    proto = onnx.load_from_string(content)
    order = [n for n in proto.graph.node]
    candidates: list[tuple[str, str]] = []
    for layer in graph_model.layers:
        if type(layer).__name__ == "InputLayer":
            continue
        outs = [n.output[0] for n in order if n.output and _scope_of(n.name, layer.name)]
        if outs:
            candidates.append((layer.name, outs[-1]))
    if not candidates:
        return None
    existing = {o.name for o in proto.graph.output}
    for _, tensor in candidates:
        if tensor not in existing:
            proto.graph.output.append(onnx.ValueInfoProto(name=tensor))
            existing.add(tensor)
    runner = OnnxRunner(proto.SerializeToString(), optimize=False, keras_layout=True)
    feed = _feed(graph_model, data, runner.input_names)
    small = {k: v[:8] for k, v in feed.items()}
    got = runner(small, names=[t for _, t in candidates])
    from kerasq._compat import keras

    for layer_name, tensor in candidates:
        layer = graph_model.get_layer(layer_name)
        outputs = layer.output if isinstance(layer.output, (list, tuple)) else [layer.output]
        probe = keras.Model(graph_model.inputs, outputs[0])
        want = np.asarray(probe([small[k] for k in small] if len(small) > 1 else
                                next(iter(small.values())), training=False), np.float32)
        value = got[tensor]
        # a tensor the converter moved to NCHW; when both layouts fit (C = H = W) the
        # closer one is taken
        forms = [v for v in (value, np.transpose(value, (0, 2, 3, 1)) if value.ndim == 4
                             else value) if v.shape == want.shape]  # fmt: skip
        if not forms:
            continue
        err = min(float(np.abs(v - want).max(initial=0.0)) for v in forms)
        limit = step if step is not None else rtol * max(1.0, float(np.abs(want).max(initial=0)))
        if err > limit + 1e-12:
            return f"{layer_name} (max |Δ| {err:.3g})"
    return None


# -- public entry points -------------------------------------------------------------------
def export_onnx(
    model: Any,
    path: PathLike | None = None,
    *,
    target: str = "float",
    opset: int = DEFAULT_OPSET,
    verify_data: Any = None,
    verify: bool = True,
    power2_symmetric: bool = False,
    channels_first: bool = False,
    max_error_steps: float = 1.0,
    min_top1: float = 0.995,
    rtol: float = 1e-4,
) -> OnnxExportResult:
    """Like :func:`to_onnx`, returning an :class:`OnnxExportResult` (file and report).
    A Keras 3 ``model`` is exported through its tf_keras twin (same weights and state)."""
    from kerasq._compat import is_keras3_model
    from kerasq.data import check_array, check_int, check_keras_model, check_output_path

    if is_keras3_model(model):
        from kerasq.keras3.api import tf_keras_for_export

        model = tf_keras_for_export(model)
    check_keras_model(model, "model")
    check_output_path(path, "path", ["onnx"])
    check_int(opset, "opset", minimum=7)
    check_array(verify_data, "verify_data", model=model, optional=True)
    if power2_symmetric and target != "int8":
        raise ExportError("power2_symmetric applies to target 'int8' only")
    proto, steps, graph_model = build_onnx(
        model,
        target=target,
        opset=opset,
        power2_symmetric=power2_symmetric,
        channels_first=channels_first,
    )
    content = proto.SerializeToString()
    report: Any = None
    if verify_data is not None and detection.detection_layer(model) is not None:
        report = verify_onnx_detections(content, model, verify_data)
        if verify and not report.ok:
            raise VerificationError(
                f"ONNX {target} detections disagree with the Keras model: {report.describe()}",
                file=path,
            )
    elif verify_data is not None:
        report = verify_onnx(content, model, verify_data, output_steps=steps)
        if not report.ok(max_steps=max_error_steps, min_top1=min_top1, rtol=rtol):
            try:
                report.first_divergence = first_divergence(
                    content, graph_model, verify_data, rtol=rtol
                )  # the file in float emulation computes each layer's tensor as Keras does
            except Exception as err:  # the search is a diagnosis aid; never hide the failure
                log.debug("first-divergence search failed: %s", err)
            if verify:
                raise VerificationError(
                    f"ONNX {target} output disagrees with the Keras model: {report.describe()}",
                    file=path,
                )
    elif verify:
        log.info("no verify_data: the ONNX file is checked (onnx.checker) but not run")
    if path is not None:
        write_bytes_atomic(path, content)
    return OnnxExportResult(content, target, report)


def to_onnx(
    model: Any,
    path: PathLike | None = None,
    *,
    target: str = "float",
    opset: int = DEFAULT_OPSET,
    verify_data: Any = None,
    verify: bool = True,
    power2_symmetric: bool = False,
    channels_first: bool = False,
) -> bytes:
    """Export ``model`` to ONNX (``target`` "float" or "int8" QDQ) and return the bytes.

    int8 quantized tensors keep kerasq's scales 2^-fl (zero point 0). With ``verify_data``
    the file is run in onnxruntime and compared with the Keras model; ``verify=True`` turns
    a mismatch (> 1 output step or < 99.5 % top-1 for int8, relative error > 1e-4 for float)
    into :class:`~kerasq.errors.VerificationError` naming the first diverging layer.
    ``channels_first=True`` gives 4-D inputs and outputs Caffe's NCHW layout (the Keras
    model and ``verify_data`` stay NHWC). The file
    at ``path`` is written atomically, only after verification passed.

    Example:
        >>> blob = to_onnx(qmodel, "m.onnx", target="int8", verify_data=x)  # doctest: +SKIP
    """
    return export_onnx(
        model,
        path,
        target=target,
        opset=opset,
        verify_data=verify_data,
        verify=verify,
        power2_symmetric=power2_symmetric,
        channels_first=channels_first,
    ).content


__all__ = [
    "DEFAULT_OPSET",
    "TARGETS",
    "OnnxExportResult",
    "OnnxReport",
    "OnnxRunner",
    "OutputComparison",
    "build_onnx",
    "export_onnx",
    "first_divergence",
    "is_quantized",
    "to_onnx",
    "verify_onnx",
    "verify_onnx_detections",
]
