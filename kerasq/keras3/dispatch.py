"""The one place where kerasq's public entry points choose the tf_keras or the Keras 3 path.

``kerasq.quantize_model``, ``kerasq.calibrate`` and ``kerasq.load_model`` are these
functions: a Keras 3 model (:func:`kerasq._compat.is_keras3_model`) or a .keras file written
by Keras 3 goes to :mod:`kerasq.keras3.api`, anything else to the tf_keras path
(:mod:`kerasq.schemes`). Keras 3 is imported only when a Keras 3 model or file is seen.
(``kerasq.export.to_tflite`` makes the same test on its argument.)

Example:
    >>> qmodel = kerasq.quantize_model(model)  # tf_keras or Keras 3  # doctest: +SKIP
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


def prune_model(model: Any, schedule: Any = None, *, layers: Any = None) -> Any:
    """``kerasq.prune.prune_model``: :func:`kerasq.prune.api.prune_model` (tf_keras: a model
    with saved masks) or :func:`kerasq.keras3.prune.prune_with_schedule` (Keras 3: the
    kernels pruned in place to the schedule's final sparsity), by the model's class."""
    if is_keras3_model(model):
        from kerasq.keras3.prune import prune_with_schedule

        return prune_with_schedule(model, schedule, layers=layers)
    from kerasq.prune.api import prune_model as prune_tf_keras

    return prune_tf_keras(model, schedule, layers=layers)


def _pruning_callback_class() -> Any:
    from kerasq.prune.callbacks import PruningCallback as TfKerasPruningCallback

    class PruningCallback(TfKerasPruningCallback):  # type: ignore[misc, valid-type]
        """``kerasq.prune.PruningCallback(schedule)``: the tf_keras callback, and on a
        Keras 3 model (fit of Keras 3 calls it too) the same tfmot schedule applied to the
        quantized model's masks (:class:`kerasq.keras3.prune.ScheduledPruning`)."""

        _keras3: Any = None

        def on_train_begin(self, logs: Any = None) -> None:
            if not is_keras3_model(self.model):
                self._keras3 = None
                return super().on_train_begin(logs)
            from kerasq.keras3.prune import ScheduledPruning

            self._keras3 = ScheduledPruning(self.schedule)
            self._keras3.begin(self.model)

        def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
            if self._keras3 is not None:
                self._keras3.step(self.model)
            else:
                super().on_train_batch_begin(batch, logs)

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            if self._keras3 is None:
                super().on_train_batch_end(batch, logs)

    PruningCallback.__module__ = __name__
    return PruningCallback


def __getattr__(name: str) -> Any:
    if name == "PruningCallback":  # built on first use: it subclasses the tf_keras callback
        value = _pruning_callback_class()
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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


def check_cli_options(model: Any, path: str, *, search: bool = False,
                      report: bool = False) -> None:
    """Refuse the ``kerasq quantize`` options the Keras 3 path does not have yet."""
    from kerasq.errors import KerasqError

    if not is_keras3_model(model):
        return
    for option, given in (("--search", search), ("--report", report)):
        if given:
            raise KerasqError(f"{option} is not available for Keras 3 models yet", file=path,
                              layer=option)


__all__ = ["quantize_model", "calibrate", "load_model", "is_keras3_file", "save_keras3",
           "check_cli_options", "prune_model", "PruningCallback"]  # noqa: F822
