"""Caffe to Keras 3: converted nets as Keras 3 models (``load(..., keras=3)``).

:func:`to_keras3` rebuilds a converted tf_keras model in Keras 3 (same graph, layer names,
configs and weights); :mod:`.layers` holds the Keras 3 twins of the converter's custom
layers, made from the same classes and registered as ``kerasq>ClassName``, whose ``call``
is written in ``keras.ops`` (:mod:`.neutral`): they run on every Keras 3 backend, but for
those in :data:`TENSORFLOW_ONLY` (``tensorflow_only_reason``). Importing this package
imports Keras 3 (``import keras``) beside tf_keras.

Example:
    >>> from kerasq.converters import caffe
    >>> model = caffe.load("deploy.prototxt", "w.caffemodel", keras=3)   # doctest: +SKIP
    >>> model.save("net.keras")                                          # doctest: +SKIP
"""

from __future__ import annotations

from kerasq.converters.caffe.keras3.layers import (
    KERAS3_LAYERS,
    custom_objects,
    keras3,
    require_tensorflow_backend,
    twin,
)
from kerasq.converters.caffe.keras3.neutral import NEUTRAL_CALLS, TENSORFLOW_ONLY
from kerasq.converters.caffe.keras3.translate import CONFIG_RENAMES, keras3_class, to_keras3

__all__ = [
    "to_keras3",
    "keras3_class",
    "custom_objects",
    "twin",
    "keras3",
    "require_tensorflow_backend",
    "KERAS3_LAYERS",
    "CONFIG_RENAMES",
    "NEUTRAL_CALLS",
    "TENSORFLOW_ONLY",
]
