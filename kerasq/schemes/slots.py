"""The one view of a quantized model's quantizers: tfmot internals are read only here.

tfmot's ``QuantizeWrapper`` keeps what it quantizes in private attributes
(``_weight_vars``, ``_output_quantizers``, ``_output_quantizer_vars``,
``_quantize_activations`` with ``_pre_activation_vars`` / ``_post_activation_vars``) and
``QuantizeLayer`` in ``quantizer`` / ``quantizer_vars``. Every other kerasq module goes
through the functions below, so a tfmot upgrade is a change to this file only.

A *slot* is one place where a quantizer acts: a model input (``QuantizeLayer``), a weight
of a wrapped layer, the wrapped layer's activation (before / after it) or its output.

=====================================================  ===========================================
tfmot internal                                         accessor
=====================================================  ===========================================
``wrapper._weight_vars`` (weight, quantizer, vars)     :func:`weight_slots` (role kernel/bias/weight)
``wrapper._output_quantizers[0]`` + ``_vars``          :func:`output_slot` (role ``"output"``)
``wrapper._quantize_activations`` pre/post vars        :func:`activation_slots` (``"pre"``/``"post"``)
``qa.activation``                                      :func:`activation_function`
``QuantizeLayer.quantizer`` / ``quantizer_vars``       :func:`input_slot` (role ``"input"``)
``wrapper.layer`` / ``wrapper.quantize_config``        :func:`inner_layer`, :func:`quantize_config`
isinstance QuantizeWrapper / QuantizeLayer             :func:`is_quantize_wrapper`, :func:`is_quantize_layer`
sparsity wrapper ``quantizer.inner`` / ``vars["inner"]``  :func:`unwrap`, ``Slot.base()``
replace a quantizer temporarily                        ``Slot.replace(obj) -> undo``
=====================================================  ===========================================

No other module reads these internals; ``tests/schemes/test_slots.py`` scans the package
for them.

Example:
    >>> for slot in iter_slots(qmodel):  # doctest: +SKIP
    ...     print(slot.layer.name, slot.role, slot.attr, type(slot.quantizer).__name__)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator, List, Optional, Tuple

#: Slot roles, in the order :func:`layer_slots` yields them.
ROLES = ("input", "kernel", "bias", "weight", "pre", "post", "output")
#: Weight attribute names that are kernels (the rest but ``bias`` are role ``"weight"``).
KERNEL_ATTRS = frozenset({"kernel", "depthwise_kernel", "pointwise_kernel"})


def quantize_layer_class() -> type:
    """tfmot's ``QuantizeLayer`` (quantizes a model input)."""
    from tensorflow_model_optimization.python.core.quantization.keras import quantize_layer

    return quantize_layer.QuantizeLayer


def quantize_wrapper_class() -> type:
    """tfmot's ``QuantizeWrapper`` (a layer with its weight / output quantizers)."""
    from tensorflow_model_optimization.python.core.quantization.keras import quantize_wrapper

    return quantize_wrapper.QuantizeWrapper


def is_quantize_wrapper(layer: Any) -> bool:
    """True for tfmot's ``QuantizeWrapper`` (and ``QuantizeWrapperV2``)."""
    return any(c.__name__.startswith("QuantizeWrapper") for c in type(layer).__mro__)


def is_quantize_layer(layer: Any) -> bool:
    """True for tfmot's ``QuantizeLayer`` (the input quantizer of a model)."""
    return type(layer).__name__ == "QuantizeLayer" and hasattr(layer, "quantizer")


def inner_layer(layer: Any) -> Any:
    """The layer a ``QuantizeWrapper`` wraps; any other layer itself."""
    return layer.layer if is_quantize_wrapper(layer) else layer


def quantize_config(wrapper: Any) -> Any:
    """The ``QuantizeConfig`` of a ``QuantizeWrapper`` (None for other layers)."""
    return getattr(wrapper, "quantize_config", None) if is_quantize_wrapper(wrapper) else None


def unwrap(quantizer: Any, variables: Any) -> Tuple[Any, Any]:
    """The quantizer that does the rounding and its variables.

    Sparsity wrappers (``kerasq.prune.SparsityPreservingQuantizer``) delegate to
    ``quantizer.inner`` and keep the inner variables under ``variables["inner"]``.
    """
    while hasattr(quantizer, "inner") and isinstance(variables, dict) and "inner" in variables:
        quantizer, variables = quantizer.inner, variables["inner"]
    return quantizer, variables


def weight_attr(weight: Any) -> str:
    """``conv1/kernel:0`` -> ``kernel`` (the layer attribute a weight variable belongs to)."""
    return weight.name.split(":")[0].split("/")[-1]


def _weight_role(attr: str) -> str:
    if attr in KERNEL_ATTRS:
        return "kernel"
    return "bias" if attr == "bias" else "weight"


@dataclasses.dataclass
class Slot:
    """One quantizer of a quantized model.

    ``layer`` is the user-visible layer (the wrapped layer, or the ``QuantizeLayer``),
    ``owner`` the Keras layer of the model that holds the quantizer (the wrapper),
    ``role`` one of :data:`ROLES`, ``attr`` the weight attribute (``"kernel"``,
    ``"depthwise_kernel"``, ``"bias"``...) or the role for activations, ``quantizer`` and
    ``variables`` as stored (a sparsity wrapper stays wrapped: see :meth:`base`),
    ``weight`` the float variable of a weight slot (None otherwise).
    """

    layer: Any
    owner: Any
    role: str
    attr: str
    quantizer: Any
    variables: Any
    weight: Any = None
    _replace: Optional[Callable[[Any], Callable[[], None]]] = dataclasses.field(
        default=None, repr=False, compare=False)

    def base(self) -> Tuple[Any, Any]:
        """(quantizer, variables) with sparsity wrappers removed (see :func:`unwrap`)."""
        return unwrap(self.quantizer, self.variables)

    def replace(self, quantizer: Any) -> Callable[[], None]:
        """Install ``quantizer`` in this slot; returns a function that undoes it."""
        assert self._replace is not None
        return self._replace(quantizer)

    def __call__(self, x: Any, training: bool = False) -> Any:
        """Run the slot's quantizer on ``x`` (e.g. the float weight) with its variables."""
        return self.quantizer(x, training, weights=self.variables)


def weight_slots(wrapper: Any) -> List[Slot]:
    """The weight slots of a ``QuantizeWrapper`` (in tfmot's order); [] for other layers."""
    if not is_quantize_wrapper(wrapper):
        return []
    entries = getattr(wrapper, "_weight_vars", None) or []
    inner = wrapper.layer
    found = []
    for index, (weight, quantizer, qvars) in enumerate(entries):
        attr = weight_attr(weight)

        def replace(obj: Any, index: int = index) -> Callable[[], None]:
            entry = wrapper._weight_vars[index]
            wrapper._weight_vars[index] = (entry[0], obj, entry[2])
            return lambda: wrapper._weight_vars.__setitem__(index, entry)

        found.append(Slot(inner, wrapper, _weight_role(attr), attr, quantizer, qvars, weight,
                          replace))
    return found


def find_weight_slot(wrapper: Any, attr: str) -> Optional[Slot]:
    """The weight slot of ``wrapper`` for attribute ``attr`` (e.g. ``"bias"``), or None."""
    return next((s for s in weight_slots(wrapper) if s.attr == attr), None)


def weight_variable(wrapper: Any, role: str) -> Any:
    """The wrapped layer's float variable for ``role`` ("kernel" or "bias"; a depthwise
    kernel counts as "kernel"). tfmot replaces the layer's ``kernel`` attribute by the
    quantized tensor and the layer stops tracking the variable, so both the wrapper's
    weight list and the layer's remaining weights are searched."""
    candidates = [s.weight for s in weight_slots(wrapper)]
    for weight in candidates + list(inner_layer(wrapper).weights):
        base = weight_attr(weight)
        if base == role or base == f"depthwise_{role}":
            return weight
    return None


def output_slot(layer: Any) -> Optional[Slot]:
    """The output quantizer of a ``QuantizeWrapper`` (the first; tfmot uses one), or None."""
    outs = list(getattr(layer, "_output_quantizers", None) or []) if is_quantize_wrapper(
        layer) else []
    if not outs:
        return None

    def replace(obj: Any) -> Callable[[], None]:
        original = layer._output_quantizers
        layer._output_quantizers = [obj] + list(original[1:])
        return lambda: setattr(layer, "_output_quantizers", original)

    return Slot(layer.layer, layer, "output", "output", outs[0],
                getattr(layer, "_output_quantizer_vars", {}), None, replace)


def input_slot(layer: Any) -> Optional[Slot]:
    """The quantizer of a ``QuantizeLayer`` (a model input), or None."""
    if not is_quantize_layer(layer) or layer.quantizer is None:
        return None

    def replace(obj: Any) -> Callable[[], None]:
        original = layer.quantizer
        layer.quantizer = obj
        return lambda: setattr(layer, "quantizer", original)

    return Slot(layer, layer, "input", "input", layer.quantizer,
                getattr(layer, "quantizer_vars", {}), None, replace)


def activation_slots(wrapper: Any) -> List[Slot]:
    """The quantizers around a wrapped layer's activation (role ``"pre"`` / ``"post"``),
    from tfmot's ``QuantizeAwareActivation``; [] when the config quantizes none."""
    if not is_quantize_wrapper(wrapper):
        return []
    found = []
    for qa in getattr(wrapper, "_quantize_activations", None) or []:
        for role, attr, should in (("pre", "_pre_activation_vars", "_should_pre_quantize"),
                                   ("post", "_post_activation_vars", "_should_post_quantize")):
            check = getattr(qa, should, None)
            if not hasattr(qa, attr) or (callable(check) and not check()):
                continue

            def replace(obj: Any, qa: Any = qa) -> Callable[[], None]:
                original = qa.quantizer
                qa.quantizer = obj
                return lambda: setattr(qa, "quantizer", original)

            found.append(Slot(wrapper.layer, wrapper, role, role, qa.quantizer,
                              getattr(qa, attr), None, replace))
    return found


def activation_function(wrapper: Any) -> Any:
    """The activation a wrapped layer applies (tfmot moves it into its
    ``QuantizeAwareActivation``); the layer's own ``activation`` otherwise."""
    qas = (getattr(wrapper, "_quantize_activations", None) or []) if is_quantize_wrapper(
        wrapper) else []
    if qas:
        return qas[0].activation
    return getattr(inner_layer(wrapper), "activation", None)


def layer_slots(layer: Any) -> List[Slot]:
    """Every slot of one model layer: input, weights, activation, output (in that order)."""
    found: List[Slot] = []
    slot = input_slot(layer)
    if slot is not None:
        found.append(slot)
    found.extend(weight_slots(layer))
    found.extend(activation_slots(layer))
    slot = output_slot(layer)
    if slot is not None:
        found.append(slot)
    return found


def flat_layers(model: Any) -> Iterator[Any]:
    """The layers of ``model`` with nested models expanded (each layer once)."""
    from kerasq._compat import keras

    seen = set()
    stack = list(reversed(getattr(model, "layers", [])))
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if isinstance(layer, keras.Model):
            stack.extend(reversed(layer.layers))
        else:
            yield layer


def iter_slots(model: Any) -> Iterator[Slot]:
    """Every quantizer slot of a quantized model (nested models included), in layer order.

    Example:
        >>> kernels = [s for s in iter_slots(qmodel) if s.role == "kernel"]  # doctest: +SKIP
    """
    for layer in flat_layers(model):
        yield from layer_slots(layer)


def refresh_weight_state(qmodel: Any) -> None:
    """Recompute the stored fl/min/max of every weight quantizer from the current weights."""
    for slot in iter_slots(qmodel):
        if slot.weight is None:
            continue
        quantizer, qvars = slot.base()
        if hasattr(quantizer, "update_state"):
            quantizer.update_state(slot.weight, qvars)


def is_quantized_model(model: Any) -> Optional[str]:
    """The name of the first tfmot wrapper / input quantizer of ``model``, or None."""
    for layer in flat_layers(model):
        if is_quantize_wrapper(layer) or type(layer).__name__ == "QuantizeLayer":
            return layer.name
    return None


__all__ = ["Slot", "ROLES", "KERNEL_ATTRS", "iter_slots", "layer_slots", "weight_slots",
           "find_weight_slot", "weight_variable", "output_slot", "input_slot",
           "activation_slots", "activation_function", "inner_layer", "quantize_config",
           "unwrap", "weight_attr", "is_quantize_wrapper", "is_quantize_layer",
           "quantize_layer_class", "quantize_wrapper_class", "flat_layers",
           "refresh_weight_state", "is_quantized_model"]
