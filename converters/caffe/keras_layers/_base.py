"""The registration decorator and config base shared by the converter's Keras layers."""

from __future__ import annotations

from typing import Any, Dict, Sequence

from kerasq._compat import keras

# Registered as "kerasq>ClassName": the name saved in .h5/.keras/SavedModel files.
register = keras.utils.register_keras_serializable(package="kerasq")

# the values a layer class may give ``quantization_role`` (read by kerasq.schemes.registry)
ROLES = ("weighted", "output", "passthrough", "float")


class Configured(keras.layers.Layer):
    """Base: every constructor argument named in ``_fields`` is stored and returned by
    ``get_config``."""

    _fields: Sequence[str] = ()

    def __init__(self, **kwargs: Any) -> None:
        own = {f: kwargs.pop(f) for f in self._fields if f in kwargs}
        super().__init__(**kwargs)
        for f, v in own.items():
            setattr(self, f, v)

    def get_config(self) -> Dict[str, Any]:
        config = super().get_config()
        config.update({f: getattr(self, f) for f in self._fields})
        return config


__all__ = ["register", "Configured", "ROLES"]
