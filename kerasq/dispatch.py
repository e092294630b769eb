"""The one place where kerasq's public entry points choose the tf_keras or the Keras 3 path.

``kerasq.quantize_model``, ``kerasq.calibrate``, ``kerasq.load_model``,
``kerasq.search_bitwidths``, ``kerasq.run_integer`` and ``kerasq.prepare_integer`` are these
functions: a Keras 3 model (:func:`kerasq._compat.is_keras3_model`) or a .keras file written
by Keras 3 goes to :mod:`kerasq.keras3` (for search, reports and the integer runner: to the
model's tf_keras twin, :mod:`kerasq.keras3.twin`, which holds the same weights and state),
anything else to the tf_keras path (:mod:`kerasq.schemes`, :mod:`kerasq.integer`). Keras 3
is imported only when a Keras 3 model or file is seen.

This module sits above ``kerasq.export`` and ``kerasq.keras3`` in the layer order (the
import contract in pyproject.toml): it may use every lower layer, and no lower layer names
it. (``kerasq.export.to_tflite`` and ``kerasq.prune.prune_model`` make the same test on
their argument with what their own layer holds.)

Example:
    >>> qmodel = kerasq.quantize_model(model)  # tf_keras or Keras 3  # doctest: +SKIP
    >>> y = kerasq.run_integer(qmodel, x)  # Keras 3: run on its tf_keras twin  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import zipfile
from typing import Any, Mapping, Optional, Union

from kerasq._compat import is_keras3_model


def is_keras3_file(path: Union[str, "os.PathLike[str]"]) -> bool:
    """True for a .keras zip written by Keras 3 (``metadata.json``: keras_version 3.x)."""
    if not isinstance(path, (str, os.PathLike)):
        return False  # not a path: the tf_keras loader's argument check names it
    path = os.fspath(path)
    if not isinstance(path, str) or not path.endswith(".keras"):
        return False
    if not os.path.isfile(path) or not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            meta = json.loads(archive.read("metadata.json"))
    except (KeyError, ValueError, OSError):
        return False
    return str(meta.get("keras_version", "")).startswith("3.")


def quantize_model(model: Any, config: Optional[Union[Any, Mapping[str, Any]]] = None, *,
                   preserve_sparsity: Optional[bool] = None) -> Any:
    """:func:`kerasq.schemes.api.quantize_model` (tf_keras) or
    :func:`kerasq.keras3.api.quantize_model` (Keras 3), by the model's class."""
    if is_keras3_model(model):
        from kerasq.keras3.api import quantize_model as quantize_keras3

        return quantize_keras3(model, config, preserve_sparsity=preserve_sparsity)
    from kerasq.schemes.api import quantize_model as quantize_tf_keras

    return quantize_tf_keras(model, config, preserve_sparsity=preserve_sparsity)


def calibrate(qmodel: Any, data: Any, steps: Optional[int] = None, *, batch_size: int = 32,
              reset: bool = True, verbose: int = 0) -> Any:
    """:func:`kerasq.schemes.calibration.calibrate` or its Keras 3 form, by the model's class."""
    if is_keras3_model(qmodel):
        from kerasq.keras3.api import calibrate as calibrate_keras3

        return calibrate_keras3(qmodel, data, steps, batch_size=batch_size, reset=reset,
                                verbose=verbose)
    from kerasq.schemes.calibration import calibrate as calibrate_tf_keras

    return calibrate_tf_keras(qmodel, data, steps, batch_size=batch_size, reset=reset,
                              verbose=verbose)


def load_model(path: Union[str, "os.PathLike[str]"], *, compile: bool = True) -> Any:
    """Load a kerasq model file: a Keras 3 .keras file as a Keras 3 model, anything else
    (.h5, tf_keras .keras, SavedModel) with :func:`kerasq.serialization.load_model`."""
    from kerasq.data import check_model_file

    if is_keras3_file(path):
        from kerasq.keras3.api import load_model as load_keras3

        check_model_file(os.fspath(path))  # sizes, members, config modules first
        return load_keras3(path, compile=compile)
    from kerasq.serialization import load_model as load_tf_keras

    return load_tf_keras(path, compile=compile)


def as_tf_keras(model: Any) -> Any:
    """The tf_keras model that holds what ``model`` computes: ``model`` itself on the tf_keras
    path; for a Keras 3 quantized model its tfmot twin with the current weights and quantizer
    state (:func:`kerasq.keras3.api.tf_keras_twin`), for a float Keras 3 model its float
    tf_keras copy (:func:`kerasq.keras3.twin.to_tf_keras`, same names and weights).

    Example: ``kerasq.schemes.report(as_tf_keras(qmodel), x)``.
    """
    if not is_keras3_model(model):
        return model
    from kerasq.keras3.api import is_quantized, tf_keras_twin
    from kerasq.keras3.twin import to_tf_keras

    return tf_keras_twin(model) if is_quantized(model) else to_tf_keras(model)


def _search(search: Any, model: Any, eval_fn: Any, data: Any, error_margin: float,
            **kwargs: Any) -> Any:
    if not is_keras3_model(model) or kwargs.get("make_candidate") is not None:
        return search(model, eval_fn, data, error_margin, **kwargs)
    from kerasq.keras3.api import _numpy_data
    from kerasq.keras3.api import calibrate as calibrate_keras3
    from kerasq.keras3.api import quantize_model as quantize_keras3
    from kerasq.keras3.twin import to_tf_keras

    float_twin = to_tf_keras(model)  # checks, layer types and statistics of the search
    data = _numpy_data(data)
    steps, batch_size = kwargs.get("steps"), kwargs.get("batch_size", 32)

    def make_candidate(config: Any) -> Any:
        return calibrate_keras3(quantize_keras3(model, config), data, steps,
                                batch_size=batch_size)

    def score(candidate: Any) -> float:
        return eval_fn(model if candidate is float_twin else candidate)

    return search(float_twin, score, data, error_margin, make_candidate=make_candidate,
                  **kwargs)


def search_bitwidths(model: Any, eval_fn: Any, data: Any, error_margin: float = 1.0,
                     **kwargs: Any) -> Any:
    """:func:`kerasq.schemes.search.search_bitwidths` on a tf_keras or a Keras 3 float model
    (same keywords). On Keras 3 ``eval_fn`` gets the Keras 3 model (the float baseline) and
    calibrated Keras 3 candidates (``kerasq.quantize_model`` + ``kerasq.calibrate``); the
    part types and checks come from the model's float tf_keras copy, so the result is the
    tf_keras search's for the same weights and scores.

    Example: ``kerasq.search_bitwidths(keras3_model, accuracy, x_cal).bitwidths``.
    """
    from kerasq.schemes.search import search_bitwidths as search

    return _search(search, model, eval_fn, data, error_margin, **kwargs)


def search_minifloat(model: Any, eval_fn: Any, data: Any, error_margin: float = 1.0,
                     **kwargs: Any) -> Any:
    """:func:`kerasq.schemes.search.search_minifloat` on a tf_keras or a Keras 3 float model,
    as :func:`search_bitwidths`.

    Example: ``search_minifloat(keras3_model, accuracy, x_cal).config``.
    """
    from kerasq.schemes.search import search_minifloat as search

    return _search(search, model, eval_fn, data, error_margin, **kwargs)


def quantization_report(qmodel: Any, data: Any = None, **kwargs: Any) -> Any:
    """:func:`kerasq.schemes.report.report` of a tf_keras or a Keras 3 quantized model (the
    Keras 3 one's rows are its twin's: the same weights, state and outputs).

    Example: ``print(format_report(quantization_report(qmodel, x[:256])))``.
    """
    from kerasq.schemes.report import report

    if is_keras3_model(qmodel):
        from kerasq.keras3.api import _numpy_data

        data = _numpy_data(data)
    return report(as_tf_keras(qmodel), data, **kwargs)


def _integer_model(qmodel: Any) -> Any:
    if not is_keras3_model(qmodel):
        return qmodel
    from kerasq.errors import ModelFormatError
    from kerasq.keras3.api import is_quantized, tf_keras_twin

    if not is_quantized(qmodel):
        raise ModelFormatError(f"{qmodel.name} is a float model; give the model returned by "
                               "kerasq.quantize_model", layer="qmodel")
    return tf_keras_twin(qmodel)


def prepare_integer(qmodel: Any) -> Any:
    """:func:`kerasq.integer.prepare` of a tf_keras or a Keras 3 quantized model (Keras 3:
    of its tf_keras twin, holding the model's weights and state at this call).

    Example: ``program = kerasq.prepare_integer(qmodel); y = program(x)``.
    """
    from kerasq.integer import prepare

    return prepare(_integer_model(qmodel))


def run_integer(qmodel: Any, x: Any, *, return_integers: bool = False) -> Any:
    """:func:`kerasq.integer.run` of a tf_keras or a Keras 3 quantized model: the model
    executed in integers, equal to ``qmodel(x, training=False)`` under the conditions of
    :mod:`kerasq.integer` (Keras 3: run on its tf_keras twin, whose outputs are the
    model's).

    Example: ``y = kerasq.run_integer(qmodel, x)``.
    """
    from kerasq.integer import run

    if is_keras3_model(qmodel):
        from kerasq.keras3.api import _numpy_data

        x = _numpy_data(x)
    return run(_integer_model(qmodel), x, return_integers=return_integers)


def save_keras3(model: Any, path: Union[str, "os.PathLike[str]"]) -> bool:
    """Save a Keras 3 model as a .keras file, atomically (the CLI's writer); False, with
    nothing written, for a tf_keras model (the caller saves it)."""
    from kerasq.errors import OutputError

    if not is_keras3_model(model):
        return False
    path = os.fspath(path)
    if not path.lower().endswith(".keras"):
        raise OutputError("a Keras 3 model is saved as .keras", file=path)
    from kerasq._io import atomic_output

    with atomic_output(path, kind="keras") as tmp:
        model.save(tmp)
    return True


__all__ = ["quantize_model", "calibrate", "load_model", "is_keras3_file", "save_keras3",
           "as_tf_keras", "search_bitwidths", "search_minifloat", "quantization_report",
           "prepare_integer", "run_integer"]
