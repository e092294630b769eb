"""Saving and loading kerasq models: every custom object in one place.

:func:`custom_objects` is what any kerasq model may contain (tfmot's wrappers and
quantizers, kerasq's quantizers and QuantizeConfigs, pruning wrappers, the Caffe
converter's layers, export layers); :func:`quantize_scope` puts them in scope and
:func:`load_model` loads a .h5 / .keras / SavedModel file with them, in Keras safe mode.
:func:`tag_layers` gives layers an attribute (the converter's ``caffe_type``) that is saved
in the model config and restored by :func:`load_model`.

This is a leaf module: it imports no other kerasq package at import time. The modules
that register custom Keras objects are imported by name on first use
(:data:`REGISTERING_MODULES`), so every package can depend on this one.

Example:
    >>> import kerasq.serialization as ks
    >>> "QuantizeWrapperV2" in ks.custom_objects()  # doctest: +SKIP
    True
    >>> qmodel = ks.load_model("q.h5")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import zipfile
from typing import Any, Dict, Iterator, Mapping, Optional, Union

from kerasq.errors import KerasqError, ModelFormatError

#: Modules that register kerasq custom Keras objects (``register_keras_serializable``);
#: imported, if present in this build, before :func:`custom_objects` collects them.
REGISTERING_MODULES = (
    "kerasq.schemes.quantizers",
    "kerasq.schemes.quantize_configs",
    "kerasq.schemes.sparsity",
    "kerasq.prune.wrapper",
    "kerasq.converters.caffe.keras_layers",
    "kerasq.export.layers",
)


def custom_objects() -> Dict[str, Any]:
    """Every custom object a kerasq model may contain, by registered and by bare class name.

    h5 loading deserializes nested objects in legacy mode, which looks up the bare class
    name (e.g. ``"SparsityPreservingQuantizer"``), not the registered ``"kerasq>..."`` name,
    so both are listed.
    """
    from kerasq._compat import keras
    from tensorflow_model_optimization.python.core.quantization.keras import (
        quantize,
        quantize_layer,
    )

    objects: Dict[str, Any] = {}
    for mapping in quantize.quantize_scope().custom_objects:  # tfmot's wrappers, quantizers
        objects.update(mapping)
    for name in REGISTERING_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:  # module not present in this build
            continue
    objects.update(keras.utils.get_custom_objects())
    for key, obj in list(objects.items()):
        if key.startswith("kerasq>"):
            bare = key.split(">", 1)[1]
            if getattr(obj, "__module__", "").startswith("kerasq.schemes."):
                objects[bare] = obj  # kerasq's quantizers and configs win over tfmot names
            else:
                objects.setdefault(bare, obj)
    objects["QuantizeLayer"] = quantize_layer.QuantizeLayer
    return objects


@contextlib.contextmanager
def quantize_scope() -> Iterator[None]:
    """``custom_object_scope`` with :func:`custom_objects` (for ``keras.models.load_model``)."""
    from kerasq._compat import keras

    with keras.utils.custom_object_scope(custom_objects()):
        yield


def safe_mode() -> Any:
    """Keras safe mode (no Python bytecode of Lambda layers) for .h5 and SavedModel too:
    tf_keras applies it to .keras files only, and would run a .h5's marshalled lambdas."""
    from kerasq._compat import keras

    lib = getattr(getattr(getattr(keras, "src", None), "saving", None), "serialization_lib", None)
    scope = getattr(lib, "SafeModeScope", None)
    return scope(True) if scope is not None else contextlib.nullcontext()


def deserialize(config: Any) -> Any:
    """A Keras object (quantizer, layer...) from its serialized config; None stays None."""
    if config is None:
        return None
    from kerasq._compat import keras

    return keras.utils.deserialize_keras_object(config, custom_objects=custom_objects())


#: Key of a model's config holding layer tags, ``{attribute: {layer name: value}}``; Keras
#: ignores unknown top-level keys when it rebuilds a functional model, so a tagged model
#: still loads with plain ``keras.models.load_model`` (without the tags).
LAYER_TAGS_KEY = "kerasq_layer_tags"
#: The tag attributes :func:`load_model` restores (a file never sets any other attribute).
RESTORED_TAGS = ("caffe_type", "caffe_name", "caffe_folded")


def tag_layers(model: Any, attr: str, tags: Mapping[str, str]) -> None:
    """Set ``layer.<attr> = tags[layer.name]`` and keep the tags in ``model.get_config()``.

    A .h5 or .keras file saved from ``model`` then carries them under
    :data:`LAYER_TAGS_KEY`, and :func:`load_model` sets the attributes again (SavedModel
    directories do not keep them). Keras layer configs have no room for extra fields, so the
    tags live in the model's config, keyed by layer name (names survive save and load).

    Example: ``tag_layers(model, "caffe_type", {"conv1": "Convolution"})``.
    """
    by_attr = getattr(model.get_config, "layer_tags", None)
    if by_attr is None:
        by_attr = {}
        plain_get_config = model.get_config

        def get_config() -> Dict[str, Any]:
            config = plain_get_config()
            config[LAYER_TAGS_KEY] = {a: dict(t) for a, t in by_attr.items()}
            return config

        get_config.layer_tags = by_attr  # type: ignore[attr-defined]
        model.get_config = get_config
    by_attr.setdefault(attr, {}).update(tags)
    for layer in model.layers:
        if layer.name in tags:
            setattr(layer, attr, tags[layer.name])


def _saved_layer_tags(path: str) -> Optional[Mapping[str, Any]]:
    """The :data:`LAYER_TAGS_KEY` entry of a .h5 / .keras model config, if any."""
    text: Any = None
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            if "config.json" in zf.namelist():
                text = zf.read("config.json")
    elif os.path.isfile(path):
        import h5py

        with h5py.File(path, "r") as f:
            text = f.attrs.get("model_config")
    if text is None:
        return None
    config = json.loads(text).get("config", {})
    tags = config.get(LAYER_TAGS_KEY) if isinstance(config, dict) else None
    return tags if isinstance(tags, dict) else None


def load_model(path: Union[str, "os.PathLike[str]"], *, compile: bool = True) -> Any:
    """Load a (quantized, pruned, converted) Keras model from .h5, .keras or a SavedModel.

    Every kerasq custom object is registered; the caller lists none.
    Example: ``qmodel = kerasq.load_model("lenet_q.h5")``.
    """
    from kerasq._compat import keras

    from kerasq.data import check_bool, check_model_file, check_path

    path = check_path(path, "path")
    check_bool(compile, "compile")
    if not os.path.exists(path):
        raise ModelFormatError("no such file or directory", file=path)
    check_model_file(path)  # sizes, zip members and config modules, before Keras reads it
    with quantize_scope(), safe_mode():
        try:
            model = keras.models.load_model(path, compile=compile)
            saved = _saved_layer_tags(path)
        except KerasqError as err:
            raise err.with_context(file=path) from None
        except (ValueError, OSError, KeyError, TypeError, AttributeError, IndexError,
                ImportError) as err:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ModelFormatError(f"cannot load Keras model: {reason}", file=path) from None
    for attr, tags in (saved or {}).items():
        if attr in RESTORED_TAGS and isinstance(tags, dict):
            tag_layers(model, attr, {str(k): str(v) for k, v in tags.items()})
    return model


__all__ = ["custom_objects", "quantize_scope", "load_model", "safe_mode", "deserialize",
           "tag_layers", "LAYER_TAGS_KEY", "RESTORED_TAGS", "REGISTERING_MODULES"]
