"""kerasq.schemes.slots: the one view of a quantized model's quantizers, on real quantized
models (plain, pruned), checked against a numpy reference of the DFP formula; and the
rule that no other kerasq module reads tfmot's private wrapper attributes."""

from __future__ import annotations

import ast
import pathlib

import numpy as np

import kerasq
from kerasq._compat import keras
from kerasq.schemes import slots

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 2), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv1")(inp)
    x = keras.layers.ReLU(name="relu1")(x)
    y = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = keras.layers.Add(name="add")([x, y])
    x = keras.layers.Flatten(name="flat")(x)
    out = keras.layers.Dense(5, name="fc")(x)
    return keras.Model(inp, out)


def _data(n=16, seed=1):
    return np.random.RandomState(seed).rand(n, 8, 8, 2).astype(np.float32)


def _dfp_reference(w, fl, bits, axis_shape):
    """numpy: clip(round_half_even(w·2^fl), -2^(B-1), 2^(B-1)-1)·2^-fl per channel."""
    fl = np.asarray(fl, np.float64).reshape(axis_shape)
    q = np.clip(np.round(w.astype(np.float64) * 2.0**fl), -2 ** (bits - 1), 2 ** (bits - 1) - 1)
    return (q * 2.0**-fl).astype(np.float32)


def test_iter_slots_lists_every_quantizer_with_its_role():
    qmodel = kerasq.calibrate(kerasq.quantize_model(_model()), _data())
    found = [(s.layer.name, s.role, s.attr) for s in slots.iter_slots(qmodel)]
    assert ("image_quantize", "input", "input") in found
    assert ("conv1", "kernel", "kernel") in found and ("conv1", "bias", "bias") in found
    assert ("dw", "kernel", "depthwise_kernel") in found
    assert ("fc", "kernel", "kernel") in found and ("fc", "output", "output") in found
    assert ("add", "output", "output") in found
    # conv1 feeds only a ReLU, which quantizes the value: no output quantizer on conv1
    assert ("conv1", "output", "output") not in found
    for slot in slots.iter_slots(qmodel):
        assert slot.role in slots.ROLES
        assert (slot.weight is not None) == (slot.role in ("kernel", "bias", "weight"))


def test_weight_slots_reproduce_the_dfp_formula():
    qmodel = kerasq.calibrate(kerasq.quantize_model(_model()), _data())
    kernels = [s for s in slots.iter_slots(qmodel) if s.role == "kernel"]
    assert len(kernels) == 3
    for slot in kernels:
        quantizer, qvars = slot.base()
        w = slot.weight.numpy()
        fl = qvars["frac_bits"].numpy()
        shape = (1,) * (w.ndim - fl.ndim) + fl.shape
        expected = _dfp_reference(w, fl, quantizer.bitwidth, shape)
        np.testing.assert_array_equal(np.asarray(slot(slot.weight)), expected)


def test_accessors_agree_with_the_slots():
    qmodel = kerasq.quantize_model(_model())
    wrapper = next(l for l in qmodel.layers if slots.inner_layer(l).name == "dw")
    assert slots.is_quantize_wrapper(wrapper) and not slots.is_quantize_layer(wrapper)
    assert slots.quantize_config(wrapper) is not None
    assert slots.find_weight_slot(wrapper, "depthwise_kernel").weight is \
        slots.weight_variable(wrapper, "kernel")
    assert slots.weight_variable(wrapper, "bias") is slots.find_weight_slot(wrapper, "bias").weight
    assert slots.find_weight_slot(wrapper, "pointwise_kernel") is None
    assert slots.activation_function(wrapper) is not None
    assert slots.is_quantized_model(qmodel) is not None
    assert slots.is_quantized_model(_model()) is None


def test_replace_installs_and_undo_restores():
    qmodel = kerasq.calibrate(kerasq.quantize_model(_model()), _data())
    x = _data(4, seed=3)
    before = qmodel(x, training=False).numpy()
    seen = []

    class Spy:
        def __init__(self, inner):
            self.inner_q = inner

        def __call__(self, inputs, training, weights, **kwargs):
            seen.append(1)
            return self.inner_q(inputs, training, weights, **kwargs)

        def __getattr__(self, name):
            return getattr(self.inner_q, name)

    out = next(s for s in slots.iter_slots(qmodel) if s.role == "output")
    undo = out.replace(Spy(out.quantizer))
    try:
        np.testing.assert_array_equal(qmodel(x, training=False).numpy(), before)
    finally:
        undo()
    assert seen
    assert next(s for s in slots.iter_slots(qmodel) if s.role == "output").quantizer \
        is out.quantizer


def test_pruned_model_slots_unwrap_the_sparsity_quantizer():
    from kerasq.schemes.sparsity import SparsityPreservingQuantizer
    from kerasq.schemes.quantizers import DFPWeightQuantizer

    model = _model()
    conv = model.get_layer("conv1")
    kernel, bias = conv.get_weights()
    kernel[..., :2] = 0.0  # half the output channels pruned
    conv.set_weights([kernel, bias])
    qmodel = kerasq.calibrate(kerasq.quantize_model(model), _data())
    slot = next(s for s in slots.iter_slots(qmodel)
                if s.layer.name == "conv1" and s.role == "kernel")
    assert isinstance(slot.quantizer, SparsityPreservingQuantizer)
    base, base_vars = slot.base()
    assert isinstance(base, DFPWeightQuantizer) and "frac_bits" in base_vars
    assert "mask" in slot.variables
    quantized = np.asarray(slot(slot.weight))
    assert np.all(quantized[..., :2] == 0.0)
    # prune and report code see the same slot
    from kerasq.prune.masks import find_mask_slots

    masks = {(m.layer_name, m.weight_name) for m in find_mask_slots(qmodel)}
    assert ("conv1", "kernel") in masks


_PRIVATE = {"_weight_vars", "_output_quantizers", "_output_quantizer_vars",
            "_quantize_activations", "_pre_activation_vars", "_post_activation_vars",
            "_should_pre_quantize", "_should_post_quantize"}


def test_only_slots_reads_tfmot_private_attributes():
    """kerasq (the CLI included), converters, examples, tools and benchmarks read tfmot's
    wrapper internals through kerasq.schemes.slots only. Tests may read them directly, to
    check kerasq against tfmot's own structure."""
    offenders = []
    for base in ("kerasq", "converters", "examples", "tools", "benchmarks"):
        for path in sorted((ROOT / base).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel == "kerasq/schemes/slots.py":
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                name = None
                if isinstance(node, ast.Attribute):
                    name = node.attr
                elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                    name = node.value
                if name in _PRIVATE:
                    offenders.append(f"{rel}:{node.lineno}: {name}")
    assert not offenders, offenders
