"""kerasq: Caffe import, Caffe-style quantization (DFP, minifloat, pow2), sparsity and
TFLite export for Keras models, built on tensorflow-model-optimization.

Importing kerasq is cheap: TensorFlow and the submodules are loaded on first use of
a name below, and the optional C++ ops are never loaded at import time.

Example:
    >>> import kerasq
    >>> kerasq.numerics.dfp_quantize([0.3, 1.7], bitwidth=4, frac_bits=2)  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import os
from typing import Any

# In a source checkout ``converters/`` sits beside ``kerasq/``; installs map it to
# ``kerasq.converters`` (setup.py package_dir). Mirror that mapping for checkouts.
_checkout_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if not os.path.isdir(os.path.join(__path__[0], "converters")) and os.path.isfile(
    os.path.join(_checkout_root, "converters", "__init__.py")
):
    __path__.append(_checkout_root)  # type: ignore[name-defined]

try:
    from importlib.metadata import version

    __version__ = version("kerasq")
except Exception:  # running from a source tree without installation
    __version__ = "0.1.0"

from kerasq.errors import (  # noqa: E402  (errors never import TensorFlow)
    ArgumentError,
    CaffeFormatError,
    DataError,
    ExportError,
    KerasqError,
    ModelFormatError,
    OutputError,
    QuantizationConfigError,
    UnsupportedLayerError,
    VerificationError,
)

# name -> module that defines it; resolved lazily by __getattr__.
_LAZY = {
    "numerics": "kerasq.numerics",
    "ops": "kerasq.ops",
    "schemes": "kerasq.schemes",
    "prune": "kerasq.prune",
    "export": "kerasq.export",
    "integer": "kerasq.integer",
    "converters": "kerasq.converters",
    "keras3": "kerasq.keras3",
    "dispatch": "kerasq.dispatch",
}
# public functions/classes re-exported from submodules: name -> the module defining it
# (not the package, whose attribute of the same name as a submodule would be rebound to
# that submodule when it is imported)
_LAZY_ATTRS = {
    "QuantizationConfig": "kerasq.schemes.config",
    "quantize_model": "kerasq.dispatch",  # tf_keras or Keras 3, by the model
    "calibrate": "kerasq.dispatch",
    "search_bitwidths": "kerasq.dispatch",
    "load_model": "kerasq.dispatch",
    "run_integer": "kerasq.dispatch",  # kerasq.integer.run, Keras 3 models too
    "prepare_integer": "kerasq.dispatch",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name])
        globals()[name] = module
        return module
    if name in _LAZY_ATTRS:
        value = getattr(importlib.import_module(_LAZY_ATTRS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'kerasq' has no attribute {name!r}")


def __dir__() -> list:
    return sorted(set(globals()) | set(_LAZY) | set(_LAZY_ATTRS))


__all__ = [
    "__version__",
    "KerasqError",
    "CaffeFormatError",
    "UnsupportedLayerError",
    "QuantizationConfigError",
    "ExportError",
    "VerificationError",
    "ModelFormatError",
    "ArgumentError",
    "DataError",
    "OutputError",
    *_LAZY,
    *_LAZY_ATTRS,
]
