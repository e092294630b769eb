"""The one place that decides which TensorFlow/Keras kerasq runs on.

tensorflow-model-optimization (tfmot) works only with Keras 2, so kerasq uses
``tf_keras`` and sets ``TF_USE_LEGACY_KERAS=1`` before TensorFlow is imported.
Every other kerasq module imports ``tf``, ``keras`` and ``tfmot`` from here and
never imports ``keras`` or ``tf.keras`` itself (a test enforces this).

TensorFlow's C++ start-up lines (CUDA probing, oneDNN notices) are written to
file descriptor 2 before Python logging exists; they are swallowed while TF is
imported and its devices initialised, unless ``KERASQ_VERBOSE_TF=1``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from typing import Any, Iterator

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# oneDNN reorders float sums; kerasq's bit-exactness checks want TF's own kernels.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Hide what native code (TF, TFLite) prints on fd 2 inside the block, unless
    ``KERASQ_VERBOSE_TF=1``; the captured text is replayed if the block raises.

    Example:
        >>> with quiet_native_stderr():
        ...     pass
    """
    if os.environ.get("KERASQ_VERBOSE_TF") == "1":
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (e.g. embedded interpreters)
        yield
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode("utf-8", "replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


with contextlib.nullcontext() if "tensorflow" in sys.modules else quiet_native_stderr():
    import tensorflow as tf  # noqa: E402

    tf.config.list_physical_devices()  # CUDA probing logs here, once.
    import tf_keras as keras  # noqa: E402

tf.get_logger().setLevel("ERROR")


def tfmot():
    """Return the ``tensorflow_model_optimization`` module (imported on first use)."""
    limit = sys.getrecursionlimit()
    import tensorflow_model_optimization as _tfmot

    # Its import pulls in keras 3 -> IPython -> jedi, which sets the interpreter's recursion
    # limit to 3000: keep the caller's (the CLI raises it for deep nets).
    sys.setrecursionlimit(max(limit, sys.getrecursionlimit()))
    return _tfmot


def keras3() -> Any:
    """Return Keras 3 (the ``keras`` package), imported on first use.

    ``TF_USE_LEGACY_KERAS`` only redirects ``tf.keras``: ``import keras`` is Keras 3 in the
    same process as ``tf_keras``. Its backend comes from ``KERAS_BACKEND`` (default
    ``tensorflow``); kerasq's Keras 3 path (``kerasq.keras3``) runs on TensorFlow and JAX.
    """
    limit = sys.getrecursionlimit()
    import keras as _keras3

    # its import pulls in IPython -> jedi, which lowers the recursion limit to 3000: keep the
    # caller's (the CLI raises it for deep nets)
    sys.setrecursionlimit(max(limit, sys.getrecursionlimit()))
    return _keras3


def is_keras3_model(obj: Any) -> bool:
    """True for a Keras 3 ``Model`` (tf_keras models and anything else: False).

    The one test that chooses between the tf_keras path and the Keras 3 path; it never
    imports Keras 3 unless Keras 3 is already loaded.
    """
    module = type(obj).__module__ or ""
    if not (module == "keras" or module.startswith("keras.")) and not any(
            (c.__module__ or "").startswith("keras.src.") for c in type(obj).__mro__):
        return False
    if "keras" not in sys.modules:
        return False
    return isinstance(obj, sys.modules["keras"].Model)


__all__ = ["tf", "keras", "tfmot", "quiet_native_stderr", "keras3", "is_keras3_model"]
