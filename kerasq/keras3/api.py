"""The Keras 3 path of kerasq's public entry points.

``kerasq.quantize_model``, ``kerasq.calibrate``, ``kerasq.load_model`` and
``kerasq.export.to_tflite`` send a Keras 3 model here (:func:`kerasq._compat.is_keras3_model`
decides). The quantized Keras 3 model runs on
``keras.ops`` (TensorFlow or JAX backend, QAT with ``fit``); decisions, calibration's range
alignment and export are the tf_keras path's, run on the model's tf_keras twin
(:mod:`kerasq.keras3.twin`) with the state copied in and out.

Example:
    >>> import keras, kerasq
    >>> qmodel = kerasq.quantize_model(keras3_model)  # doctest: +SKIP
    >>> kerasq.calibrate(qmodel, x[:256])  # doctest: +SKIP
    >>> qmodel.compile("adam", "sparse_categorical_crossentropy"); qmodel.fit(x, y)  # doctest: +SKIP
    >>> blob = kerasq.export.to_tflite(qmodel, "q.tflite", verify_data=x[:64], verify=True)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import weakref
from typing import Any, Mapping, Optional, Union

import numpy as np

from kerasq._compat import keras3
from kerasq.errors import KerasqError, ModelFormatError, QuantizationConfigError
from kerasq.keras3 import twin as _twin
from kerasq.keras3.layers import InputQuantizer, QuantizedLayer
from kerasq.schemes.config import QuantizationConfig

keras = keras3()
logger = logging.getLogger("kerasq.keras3")

_TWINS: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()


def _as_config(config: Any) -> QuantizationConfig:
    if config is None:
        return QuantizationConfig()
    if isinstance(config, Mapping):
        return QuantizationConfig.from_dict(config)
    if isinstance(config, QuantizationConfig):
        return config
    raise QuantizationConfigError(
        f"config must be a QuantizationConfig or a dict, got {type(config).__name__}")


def is_quantized(model: Any) -> bool:
    """True if ``model`` is a Keras 3 model made by :func:`quantize_model`."""
    return any(isinstance(l, (QuantizedLayer, InputQuantizer)) for l in model.layers)


def quantize_model(model: Any, config: Optional[Union[QuantizationConfig, Mapping[str, Any]]]
                   = None, *, preserve_sparsity: Optional[bool] = None) -> Any:
    """A QAT-ready fake-quantized Keras 3 copy of a Sequential / functional Keras 3 model.

    Same rules, config and overrides as the tf_keras path (BatchNorm folded, producers
    merged into ReLU/BN consumers, inputs quantized): the model is rebuilt in tf_keras,
    quantized by :func:`kerasq.schemes.quantize_model`, and mirrored back into Keras 3
    layers (:class:`~kerasq.keras3.layers.QuantizedLayer`) running on ``keras.ops``.

    Example: ``qmodel = kerasq.quantize_model(keras3_model, QuantizationConfig(bitwidth_weights=4))``.
    """
    from kerasq.schemes.api import quantize_model as quantize_tf_keras

    config = _as_config(config)
    if not model.built:
        raise ModelFormatError("the model is not built; call model.build(input_shape) first",
                               layer=model.name)
    if is_quantized(model):
        raise ModelFormatError("the model is already quantized", layer=model.name)
    float_twin = _twin.to_tf_keras(model)
    if preserve_sparsity is None:  # the tf_keras path's rule: any kernel with exact zeros
        preserve_sparsity = any(
            np.any(np.asarray(w) == 0) for layer in model.layers for w in layer.get_weights()
            if np.asarray(w).ndim >= 2)
    tfq = quantize_tf_keras(float_twin, config, preserve_sparsity=preserve_sparsity)
    qmodel = _twin.from_tfmot(tfq, config.to_dict(), bool(preserve_sparsity))
    _TWINS[qmodel] = tfq
    logger.info("%s: Keras 3 model quantized (%s, backend %s)", model.name, config.precision,
                keras.backend.backend())
    return qmodel


def tf_keras_twin(qmodel: Any) -> Any:
    """The tfmot-quantized tf_keras twin of a Keras 3 quantized model, holding its current
    weights and quantizer state (built once per model, rebuilt after a reload)."""
    from kerasq.schemes.api import quantize_model as quantize_tf_keras

    if not is_quantized(qmodel):
        raise ModelFormatError("needs a Keras 3 model from kerasq.quantize_model",
                               layer=qmodel.name)
    tfq = _TWINS.get(qmodel)
    if tfq is None:
        float_model, config, sparsity = _twin.rebuild_float_tf_keras(qmodel)
        tfq = quantize_tf_keras(float_model, QuantizationConfig.from_dict(config),
                                preserve_sparsity=sparsity)
        _TWINS[qmodel] = tfq
    _twin.push(qmodel, tfq)
    return tfq


def _numpy_data(data: Any) -> Any:
    if isinstance(data, (list, tuple)) and data and not isinstance(data[0], (int, float)):
        return [_numpy_data(d) for d in data]
    if hasattr(data, "shape") and not isinstance(data, np.ndarray):
        return np.asarray(keras.ops.convert_to_numpy(data))
    return data


def calibrate(qmodel: Any, data: Any, steps: Optional[int] = None, *, batch_size: int = 32,
              reset: bool = True, verbose: int = 0) -> Any:
    """:func:`kerasq.calibrate` for a Keras 3 quantized model (any backend): the ranges are
    collected by the tf_keras twin (same estimators, same Add/Concatenate grid alignment
    and accumulator-bias linking) and stored in the Keras 3 model's variables."""
    from kerasq.schemes.calibration import calibrate as calibrate_tf_keras

    tfq = tf_keras_twin(qmodel)
    calibrate_tf_keras(tfq, _numpy_data(data), steps, batch_size=batch_size, reset=reset,
                       verbose=verbose)
    _twin.pull(tfq, qmodel)
    return qmodel


def align(qmodel: Any) -> Any:
    """Share one grid per Add/Concatenate group and link accumulator biases (the twin's
    ``align_for_int8``), after QAT; export does it too."""
    export_twin(qmodel)
    return qmodel


def export_twin(qmodel: Any) -> Any:
    """The twin to export: aligned for int8 (:func:`align`, as the tf_keras export does to its
    model) with the aligned state copied back, so the Keras 3 model computes what the file
    computes."""
    from kerasq.schemes.shared_grids import align_for_int8

    tfq = tf_keras_twin(qmodel)
    align_for_int8(tfq)
    _twin.pull(tfq, qmodel)
    return tfq


def tf_keras_for_export(model: Any) -> Any:
    """The tf_keras model an exporter runs for a Keras 3 model: the aligned twin of a
    quantized model (:func:`export_twin`), the float tf_keras copy of a float one
    (:func:`kerasq.keras3.twin.to_tf_keras`, same names and weights)."""
    if is_quantized(model):
        return export_twin(model)
    return _twin.to_tf_keras(model)


class SharedGridCallback(keras.callbacks.Callback):
    """Keras 3 ``SharedGridCallback``: aligns shared grids (see :func:`align`) at the end
    of every epoch and of training.

    Example: ``qmodel.fit(x, y, callbacks=[kerasq.keras3.SharedGridCallback()])``.
    """

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        align(self.model)

    def on_train_end(self, logs: Any = None) -> None:
        align(self.model)


def load_model(path: Union[str, "os.PathLike[str]"], *, compile: bool = True) -> Any:
    """Load a Keras 3 .keras file (safe mode on; kerasq's classes are registered).

    Example: ``qmodel = kerasq.load_model("q.keras")``.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ModelFormatError("no such file or directory", file=path)
    try:
        return keras.saving.load_model(path, compile=compile, safe_mode=True)
    except KerasqError as err:
        raise err.with_context(file=path) from None
    except (ValueError, OSError, KeyError, TypeError, AttributeError, IndexError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ModelFormatError(f"cannot load Keras 3 model: {reason}", file=path) from None


__all__ = ["quantize_model", "calibrate", "align", "tf_keras_twin", "export_twin", "tf_keras_for_export",
           "load_model",
           "is_quantized", "SharedGridCallback"]
