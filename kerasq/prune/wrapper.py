"""``PruneWrapper``: a saved pruning mask for a float (not quantized) Keras layer.

The wrapper adds ``<weight>_mask`` (0/1) and ``<weight>_mask_ready`` for every prunable
weight of the wrapped layer (see :func:`prunable_weight_names`) and attaches a variable
constraint ``w <- w * mask``, which tf_keras optimizers apply after every update. The forward
pass is the wrapped layer's own: the stored kernel is kept masked (by the constraint, by
:func:`kerasq.prune.apply_masks` and by :class:`kerasq.prune.PruningCallback` when it changes
a mask), so no per-step masking op is needed and :func:`kerasq.prune.strip` just unwraps.

Example:
    >>> from kerasq._compat import keras
    >>> layer = PruneWrapper(keras.layers.Dense(4))  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

from kerasq._compat import keras, tf
from kerasq.schemes.sparsity import MASK_SUFFIX, READY_SUFFIX, _short_name, attach_mask_constraint

PRUNABLE_WEIGHT_NAMES = ("kernel", "depthwise_kernel", "pointwise_kernel")


def prunable_weight_names(layer: Any) -> List[str]:
    """Short names of the weights of ``layer`` that pruning may zero.

    Kernels only (``kernel``, ``depthwise_kernel``, ``pointwise_kernel``): Conv1D/2D/3D,
    Conv2DTranspose, DepthwiseConv2D, SeparableConv2D, Dense and any BN-folded conv that names
    its weight ``kernel``. Biases, BatchNorm and recurrent kernels are never pruned.
    """
    names = []
    for weight in getattr(layer, "trainable_weights", []):
        short = _short_name(weight.name)
        if short in PRUNABLE_WEIGHT_NAMES and short not in names:
            names.append(short)
    return names


def _weight_by_name(layer: Any, name: str) -> tf.Variable:
    for weight in layer.weights:
        if _short_name(weight.name) == name:
            return weight
    raise KeyError(name)


@keras.utils.register_keras_serializable(package="kerasq")
class PruneWrapper(keras.layers.Wrapper):
    """Keras ``Wrapper`` holding one saved mask per prunable weight of ``layer``.

    Args:
        layer: the layer to wrap (must have at least one kernel once built).
        **kwargs: ``Layer`` arguments (name, ...).
    """

    def __init__(self, layer: Any, **kwargs: Any) -> None:
        kwargs.setdefault("name", f"prune_{layer.name}")
        super().__init__(layer, **kwargs)
        self.mask_slots: List[Tuple[str, tf.Variable, tf.Variable, tf.Variable]] = []

    def build(self, input_shape: Any) -> None:
        if not self.layer.built:
            self.layer.build(input_shape)
            self.layer.built = True
        self.mask_slots = []
        for name in prunable_weight_names(self.layer):
            weight = _weight_by_name(self.layer, name)
            mask = self.add_weight(
                name + MASK_SUFFIX,
                shape=weight.shape,
                initializer=keras.initializers.Ones(),
                trainable=False,
            )
            ready = self.add_weight(
                name + READY_SUFFIX,
                shape=(),
                initializer=keras.initializers.Zeros(),
                dtype=tf.int32,
                trainable=False,
            )
            attach_mask_constraint(weight, mask)
            self.mask_slots.append((name, weight, mask, ready))
        super().build(input_shape)

    def call(self, inputs: Any, training: Any = None, **kwargs: Any) -> Any:
        if "training" in self.layer._call_spec.arg_names:
            return self.layer(inputs, training=training, **kwargs)
        return self.layer(inputs, **kwargs)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return self.layer.compute_output_shape(input_shape)

    def get_config(self) -> Dict[str, Any]:
        return super().get_config()

    @classmethod
    def from_config(cls, config: Dict[str, Any], custom_objects: Any = None) -> "PruneWrapper":
        config = dict(config)
        layer = keras.layers.deserialize(config.pop("layer"), custom_objects=custom_objects)
        return cls(layer, **config)


__all__ = ["PruneWrapper", "prunable_weight_names", "PRUNABLE_WEIGHT_NAMES"]
