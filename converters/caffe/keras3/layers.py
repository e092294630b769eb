"""Keras 3 twins of the converter's custom layers, made from the tf_keras classes' own code.

For every class in :data:`kerasq.converters.caffe.keras_layers.ALL_LAYERS`, :func:`twin`
builds a class of the same name whose base is Keras 3's ``keras.layers.Layer`` and whose
methods (``__init__``, ``build``, ``get_config``, properties...) are the tf_keras class's
functions, re-bound so that ``super()`` resolves in the new class. Its ``call`` is the
backend-neutral ``keras.ops`` form of the same formula (:mod:`.neutral`), so the twins run
on every Keras 3 backend (TensorFlow, JAX). The classes in
:data:`.neutral.TENSORFLOW_ONLY` keep the tf_keras ``call`` (TensorFlow ops); their
``tensorflow_only_reason`` says why, and on another backend their ``call`` raises
(:func:`require_tensorflow_backend`) naming the layer, its type and that reason.

The twins are registered with Keras 3 as ``kerasq>ClassName`` (the same names as the
tf_keras classes), keep the same config keys and the same weight order, so a tf_keras
layer's config and weights build its twin exactly, and a converted model saves to
``.keras`` and reloads with ``safe_mode=True``.

Example:
    >>> from kerasq.converters.caffe.keras3.layers import KERAS3_LAYERS
    >>> cls = KERAS3_LAYERS["EdgePadding2D"]
    >>> y = cls(((1, 1), (0, 2)))(keras3().Input((4, 4, 3)))   # doctest: +SKIP
    >>> tuple(y.shape)                                          # doctest: +SKIP
    (None, 6, 6, 3)
"""

from __future__ import annotations

import functools
import types
from typing import Any, Callable, Dict

from kerasq._compat import keras as tf_keras
from kerasq._compat import tf
from kerasq._compat import keras3 as _compat_keras3
from kerasq.converters.caffe.keras_layers import ALL_LAYERS
from kerasq.converters.caffe.keras3.neutral import NEUTRAL_CALLS, TENSORFLOW_ONLY
from kerasq.converters.caffe.keras_layers._base import Configured
from kerasq.errors import UnsupportedLayerError


def keras3() -> Any:
    """The Keras 3 package (:func:`kerasq._compat.keras3`, the one place it is imported)."""
    return _compat_keras3()


def require_tensorflow_backend(what: str, reason: str = "") -> None:
    """Raise :class:`UnsupportedLayerError` unless Keras 3 runs on TensorFlow.

    For the twins without a backend-neutral form (``tensorflow_only_reason`` set): they
    compute with TensorFlow ops; ``reason`` says why no ``keras.ops`` form exists.
    """
    backend = keras3().backend.backend()
    if backend != "tensorflow":
        why = f": {reason}" if reason else ""
        raise UnsupportedLayerError(
            f"{what} computes with TensorFlow ops and needs the TensorFlow backend of Keras 3 "
            f"(KERAS_BACKEND={backend}; set KERAS_BACKEND=tensorflow){why}"
        )


def _rebound(fn: Callable, owner: type) -> Callable:
    """``fn`` with its ``__class__`` cell (what zero-argument ``super()`` reads) set to
    ``owner``; other closure cells and globals are shared."""
    code = fn.__code__
    if "__class__" not in code.co_freevars:
        return fn
    cells = tuple(
        types.CellType(owner) if name == "__class__" else cell
        for name, cell in zip(code.co_freevars, fn.__closure__ or ())
    )
    new = types.FunctionType(code, fn.__globals__, fn.__name__, fn.__defaults__, cells)
    new.__kwdefaults__ = fn.__kwdefaults__
    new.__dict__.update(fn.__dict__)
    new.__doc__, new.__qualname__ = fn.__doc__, f"{owner.__name__}.{fn.__name__}"
    new.__annotations__ = fn.__annotations__
    return new


def _rebind_member(value: Any, owner: type) -> Any:
    if isinstance(value, types.FunctionType):
        return _rebound(value, owner)
    if isinstance(value, (staticmethod, classmethod)):
        return type(value)(_rebind_member(value.__func__, owner))
    if isinstance(value, property):
        fget, fset, fdel = (
            None if f is None else _rebind_member(f, owner)
            for f in (value.fget, value.fset, value.fdel)
        )
        return property(fget, fset, fdel, value.__doc__)
    return value


def _plain_shape(shape: Any) -> Any:
    """tf.TensorShape (possibly nested in lists) -> tuples, the shape type Keras 3 expects."""
    if isinstance(shape, tf.TensorShape):
        return tuple(shape.as_list()) if shape.rank is not None else None
    if isinstance(shape, list) and shape and not all(
        d is None or isinstance(d, int) for d in shape
    ):
        return [_plain_shape(s) for s in shape]
    if isinstance(shape, list):
        return tuple(shape)
    return shape


def _shape_tuples(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def compute_output_shape(self: Any, input_shape: Any) -> Any:
        return _plain_shape(fn(self, input_shape))

    return compute_output_shape


def _guarded_call(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        require_tensorflow_backend(
            f"layer {self.name!r} ({type(self).__name__})", self.tensorflow_only_reason
        )
        return fn(self, *args, **kwargs)

    return call


_TWINS: Dict[type, type] = {}
_SKIPPED = ("__dict__", "__weakref__")


def twin(cls: type) -> type:
    """The Keras 3 class of the tf_keras layer class ``cls`` (built once, then cached).

    Its bases are the twins of ``cls``'s bases (tf_keras ``Layer`` -> Keras 3 ``Layer``);
    its members are ``cls``'s own, re-bound; ``compute_output_shape`` returns tuples;
    ``call`` is the ``keras.ops`` one of :data:`.neutral.NEUTRAL_CALLS` (any backend), or,
    for the classes of :data:`.neutral.TENSORFLOW_ONLY`, ``cls``'s own behind a backend
    check. ``tf_keras_class`` points back to ``cls``; ``tensorflow_only_reason`` is None
    (every backend) or why only TensorFlow runs it.
    """
    if cls in _TWINS:
        return _TWINS[cls]
    k3 = keras3()
    if cls is tf_keras.layers.Layer:
        return k3.layers.Layer
    if not cls.__module__.startswith(("kerasq.", "converters.")):
        raise TypeError(f"{cls.__name__}: only kerasq's own layer classes have Keras 3 twins")
    bases = tuple(twin(base) for base in cls.__bases__)
    namespace = {k: v for k, v in vars(cls).items() if k not in _SKIPPED}
    namespace["__module__"] = __name__
    namespace["tf_keras_class"] = cls
    made: Any = type(cls.__name__, bases, namespace)
    for key, value in namespace.items():
        if key not in ("tf_keras_class", "__module__"):
            setattr(made, key, _rebind_member(value, made))
    if "compute_output_shape" in namespace:
        made.compute_output_shape = _shape_tuples(made.compute_output_shape)
    made.tensorflow_only_reason = None
    if cls.__name__ in NEUTRAL_CALLS:
        made.call = NEUTRAL_CALLS[cls.__name__]
    elif "call" in namespace:
        made.tensorflow_only_reason = TENSORFLOW_ONLY.get(
            cls.__name__, "no keras.ops form is written for it"
        )
        made.call = _guarded_call(made.call)
    if cls is not Configured:  # the base is abstract: only concrete layers are registered
        made = k3.saving.register_keras_serializable(package="kerasq")(made)
    _TWINS[cls] = made
    return made


KERAS3_LAYERS: Dict[str, type] = {cls.__name__: twin(cls) for cls in ALL_LAYERS}


def custom_objects() -> Dict[str, type]:
    """The Keras 3 twins by class name and registered name (``kerasq>Name``), for
    ``keras.saving.load_model(..., custom_objects=...)``; importing this module registers
    them already.

    Example:
        >>> import keras                                                  # doctest: +SKIP
        >>> keras.saving.load_model("net.keras", custom_objects=custom_objects())  # doctest: +SKIP
    """
    objects: Dict[str, type] = {}
    for name, cls in KERAS3_LAYERS.items():
        objects[name] = cls
        objects["kerasq>" + name] = cls
    return objects


__all__ = ["KERAS3_LAYERS", "twin", "custom_objects", "keras3", "require_tensorflow_backend"]
