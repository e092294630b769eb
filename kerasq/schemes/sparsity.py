"""Sparsity-preserving weight quantization: a saved mask around any weight quantizer.

:class:`SparsityPreservingQuantizer` wraps a tfmot weight ``Quantizer`` (kerasq's DFP,
minifloat, pow2 or any tfmot quantizer). For a kernel ``w`` with mask ``m`` (1 = kept,
0 = pruned) it computes::

    w_m = w * m                      # before the inner quantizer
    q   = inner(w_m)
    q   = q * [w_m != 0]             # only if the inner quantizer may map 0 to non-0

Why the second mask is conditional: symmetric quantizers (kerasq DFP without offset, every
``tf.quantization.fake_quant_*`` op, which nudges zero onto the integer grid) map 0 to exactly
0, so re-masking is a no-op there and is skipped (for tfmot's quantizers this also keeps the
``const -> FakeQuant -> Conv`` pattern the TFLite converter turns into int8 weights; kerasq's
own quantizers go through kerasq's export rebuild). Quantizers with a
non-integer offset (caffe-jacinto ``apply_offset_weights``) and Ristretto power-of-two
weights turn 0 into a small non-zero value (quant-schemes.md §6.1); for them the output is
re-masked. The inner quantizer states which case holds through a ``preserves_zero`` attribute;
tfmot's own quantizers are known to preserve zero; any other quantizer is re-masked (safe).

The mask is a saved, non-trainable weight of the wrapping layer (``<weight>_mask``) plus a
flag ``<weight>_mask_ready``. It is initialised from ``w != 0``:

* explicitly by :func:`init_quantizer_masks` (``quantize_model`` calls it) or
  :func:`kerasq.prune.init_masks`, or
* lazily by the first *training* call (the flag makes this happen once, inside the graph),
  which covers flows where tfmot builds the quantizer before the weights are loaded.

At inference the uninitialised mask is all ones and ``[w_m != 0]`` still keeps exact zeros,
so inference is correct before initialisation too.

The stored float (shadow) kernel is kept exactly zero at pruned positions by a variable
constraint ``w <- w * m`` attached to the kernel variable: every tf_keras optimizer applies
variable constraints right after each update (inside the compiled train step, under
``tf.distribute`` too), so momentum or decoupled weight decay cannot revive a pruned weight.
The gradient of masked positions is already zero because the forward pass uses ``w * m``.

Example:
    >>> from kerasq._compat import tfmot
    >>> inner = tfmot().quantization.keras.quantizers.LastValueQuantizer(
    ...     num_bits=8, per_axis=False, symmetric=True, narrow_range=True)
    >>> q = SparsityPreservingQuantizer(inner)  # use as a weight quantizer in a QuantizeConfig
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Optional

from kerasq._compat import keras, tf, tfmot
from kerasq.schemes import slots

logger = logging.getLogger("kerasq.schemes.sparsity")

_Quantizer = tfmot().quantization.keras.quantizers.Quantizer

MASK_SUFFIX = "_mask"
READY_SUFFIX = "_mask_ready"


def _short_name(name: str) -> str:
    """'conv2d/kernel:0' -> 'kernel' (tfmot's weight naming)."""
    return name.split(":")[0].split("/")[-1]


class MaskConstraint:
    """Variable constraint ``w -> previous(w) * mask`` (not serialized: re-attached on build).

    Args:
        mask: the mask variable (same shape as the weight).
        previous: a constraint that was already on the variable, applied first.
    """

    def __init__(self, mask: tf.Variable, previous: Optional[Callable] = None) -> None:
        self.mask = mask
        self.previous = previous

    def __call__(self, w: tf.Tensor) -> tf.Tensor:
        if self.previous is not None:
            w = self.previous(w)
        return w * tf.cast(self.mask, w.dtype)


def attach_mask_constraint(weight: tf.Variable, mask: tf.Variable) -> bool:
    """Make optimizers re-apply ``mask`` to ``weight`` after every update. Idempotent.

    Returns False when ``weight`` is not a variable that carries constraints.
    """
    target = getattr(weight, "_variable", weight)  # AutoCastVariable -> its variable
    # tf.distribute variables read `constraint` from their component variables.
    if isinstance(target, tf.distribute.DistributedValues):
        components = [getattr(v, "_variable", v) for v in target.values]
    else:
        components = [target]
    if not all(hasattr(v, "_constraint") for v in components):
        return False
    for variable in components:
        current = variable._constraint
        if isinstance(current, MaskConstraint) and current.mask is mask:
            continue
        if isinstance(current, MaskConstraint):  # a stale mask from an earlier build
            current = current.previous
        variable._constraint = MaskConstraint(mask, current)
    return True


def _find_layer_weight(layer: Any, name: str) -> Optional[tf.Variable]:
    """The variable of the wrapped layer that tfmot calls ``name`` (e.g. 'kernel')."""
    inner = getattr(layer, "layer", layer)
    for weight in getattr(inner, "weights", []):
        if _short_name(weight.name) == name:
            return weight
    candidate = getattr(inner, name, None)
    return candidate if isinstance(candidate, tf.Variable) else None


def _inner_preserves_zero(inner: Any) -> bool:
    flag = getattr(inner, "preserves_zero", None)
    if flag is not None:
        return bool(flag() if callable(flag) else flag)
    # tfmot's quantizers all go through tf.quantization.fake_quant_*, whose nudged range
    # always contains 0 as a grid point, so 0 -> 0 exactly.
    if type(inner).__module__.startswith("tensorflow_model_optimization"):
        return True
    # kerasq.schemes quantizers (duck-typed: prune does not import schemes): symmetric DFP
    # and minifloat keep 0; an offset or Ristretto power-of-two weights do not (§6.1).
    name = type(inner).__name__
    if name == "DFPWeightQuantizer":
        return not bool(getattr(inner, "apply_offset", True))
    return name == "MinifloatQuantizer"


def _quantizer_objects() -> Dict[str, Any]:
    quantizers = tfmot().quantization.keras.quantizers
    return {
        name: getattr(quantizers, name)
        for name in dir(quantizers)
        if isinstance(getattr(quantizers, name), type)
    }


@keras.utils.register_keras_serializable(package="kerasq")
class SparsityPreservingQuantizer(_Quantizer):
    """tfmot weight ``Quantizer`` that keeps a saved pruning mask around an inner quantizer.

    Args:
        inner: the weight quantizer to wrap (a tfmot ``Quantizer``) or its serialized form.
        remask_output: re-apply the mask after ``inner``. ``None`` (default) = only when
            ``inner`` may map 0 to a non-zero value (see module docstring).

    Math: ``q = inner(w * m) [* (w * m != 0)]`` with ``m`` the saved mask.
    """

    def __init__(self, inner: Any, remask_output: Optional[bool] = None) -> None:
        if isinstance(inner, dict):
            inner = keras.utils.deserialize_keras_object(
                inner, module_objects=_quantizer_objects(), printable_module_name="quantizer"
            )
        if not isinstance(inner, _Quantizer):
            raise TypeError(
                f"SparsityPreservingQuantizer: inner must be a tfmot Quantizer, got {inner!r}"
            )
        self.inner = inner
        self.remask_output = remask_output

    @property
    def reapplies_mask(self) -> bool:
        """Whether the mask is applied again after the inner quantizer."""
        if self.remask_output is not None:
            return bool(self.remask_output)
        return not _inner_preserves_zero(self.inner)

    @property
    def preserves_zero(self) -> bool:
        return True

    def export_spec(self, quantizer_vars: Dict[str, Any]) -> Any:
        """The inner quantizer's export spec (masking does not change the grid), or None.

        The inner quantizer is reached only through this method (with its own variables,
        ``quantizer_vars["inner"]``); exporters must not call it with the outer variables.
        """
        method = getattr(self.inner, "export_spec", None)
        if not callable(method):
            return None
        inner_vars = quantizer_vars.get("inner", quantizer_vars) if quantizer_vars else {}
        return method(inner_vars)

    def build(self, tensor_shape: Any, name: str, layer: Any) -> Dict[str, Any]:
        mask = layer.add_weight(
            name + MASK_SUFFIX,
            shape=tensor_shape,
            initializer=keras.initializers.Ones(),
            trainable=False,
        )
        ready = layer.add_weight(
            name + READY_SUFFIX,
            shape=(),
            initializer=keras.initializers.Zeros(),
            dtype=tf.int32,
            trainable=False,
        )
        weight = _find_layer_weight(layer, name)
        if weight is not None:
            attach_mask_constraint(weight, mask)
        inner_vars = self.inner.build(tensor_shape, name, layer) or {}
        return {"mask": mask, "mask_ready": ready, "inner": inner_vars}

    def __call__(self, inputs: Any, training: Any, weights: Dict[str, Any], **kwargs: Any):
        mask, ready = weights["mask"], weights["mask_ready"]
        if isinstance(inputs, tf.Variable):
            attach_mask_constraint(inputs, mask)  # for flows where build could not find it
        w = tf.convert_to_tensor(inputs)
        if tf.is_tensor(training):  # tfmot passes Python bools; keep tensors working too
            needs_init = tf.logical_and(tf.cast(training, tf.bool), ready <= 0)
        elif training:
            needs_init = ready <= 0
        else:
            needs_init = None
        if needs_init is None:
            m = tf.identity(mask)
        else:
            m = tf.cond(
                needs_init,
                lambda: _initialise_mask(mask, ready, w),
                lambda: tf.identity(mask),
            )
        w_masked = w * tf.stop_gradient(tf.cast(m, w.dtype))
        q = self.inner(w_masked, training, weights=weights["inner"], **kwargs)
        if self.reapplies_mask:
            keep = tf.stop_gradient(tf.cast(tf.not_equal(w_masked, 0), q.dtype))
            q = q * keep
        return q

    def get_config(self) -> Dict[str, Any]:
        return {
            "inner": keras.utils.serialize_keras_object(self.inner),
            "remask_output": self.remask_output,
        }

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "SparsityPreservingQuantizer":
        return cls(**config)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, SparsityPreservingQuantizer)
            and self.get_config() == other.get_config()
        )

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __repr__(self) -> str:
        return f"SparsityPreservingQuantizer({self.inner!r}, remask_output={self.remask_output})"


def _initialise_mask(mask: tf.Variable, ready: tf.Variable, w: tf.Tensor) -> tf.Tensor:
    """Graph-side one-time initialisation ``mask <- (w != 0)``; returns the new mask."""
    new_mask = tf.cast(tf.not_equal(w, 0), mask.dtype)
    with tf.control_dependencies([mask.assign(new_mask), ready.assign(1)]):
        return tf.identity(new_mask)


__all__ = [
    "SparsityPreservingQuantizer",
    "MaskConstraint",
    "attach_mask_constraint",
    "MASK_SUFFIX",
    "READY_SUFFIX",
]


def init_mask(weight: tf.Variable, mask: tf.Variable, ready: tf.Variable, *,
              force: bool = False) -> bool:
    """Attach the ``w <- w * m`` constraint and set ``mask <- (w != 0)`` unless the mask is
    initialised already (always if ``force``). Returns True when the mask was set."""
    attach_mask_constraint(weight, mask)
    if not force and int(ready.numpy()) != 0:
        return False
    mask.assign(tf.cast(tf.not_equal(weight, 0), mask.dtype))
    ready.assign(1)
    return True


def init_quantizer_masks(qmodel: Any, *, force: bool = False) -> int:
    """:func:`init_mask` for every :class:`SparsityPreservingQuantizer` of a quantized model;
    returns how many masks were set. ``quantize_model`` calls it; for pruning wrappers too,
    use :func:`kerasq.prune.init_masks`.

    Example: ``init_quantizer_masks(kerasq.quantize_model(pruned_model))``.
    """
    count = 0
    for slot in slots.iter_slots(qmodel):
        if isinstance(slot.quantizer, SparsityPreservingQuantizer) and slot.weight is not None:
            count += init_mask(slot.weight, slot.variables["mask"], slot.variables["mask_ready"],
                               force=force)
    return count
