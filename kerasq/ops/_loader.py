"""Lazy loading of the optional C++ ops library ``_kerasq_ops.so``.

Importing kerasq (or ``kerasq.ops``) never loads the library; the first op call does,
through :func:`library`. The library is refused, with a warning logged once, and every
op then runs its pure-TF fallback, when:

* ``KERASQ_PY_OPS=1`` is set (forces the fallback; no warning),
* the library was not built (no compiler at install time),
* it was built for another TensorFlow version than the one running (the C++ ABI of TF
  custom ops is only stable within one release), or for CPU features this CPU lacks,
* ``tf.load_op_library`` fails.

Example:
    >>> from kerasq.ops import custom_kernels_loaded
    >>> custom_kernels_loaded() in (True, False)
    True
"""

from __future__ import annotations

import json
import logging
import os
import threading
from typing import Any, Optional

log = logging.getLogger("kerasq.ops")

LIBRARY_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_kerasq_ops.so")
BUILD_INFO_PATH = os.path.join(os.path.dirname(LIBRARY_PATH), "_kerasq_ops.json")

_lock = threading.Lock()
_state: dict = {"tried": False, "module": None, "reason": None, "warned": False}


def use_python_ops() -> bool:
    """True when ``KERASQ_PY_OPS=1`` forces the pure-TF fallback."""
    return os.environ.get("KERASQ_PY_OPS", "0") == "1"


def _cpu_flags() -> set:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _check_build_info(tf_version: str) -> Optional[str]:
    """Reason the library must not be loaded, or None."""
    try:
        with open(BUILD_INFO_PATH, encoding="utf-8") as f:
            info = json.load(f)
    except (OSError, ValueError) as exc:
        return f"cannot read {BUILD_INFO_PATH} ({exc})"
    built_for = info.get("tf_version")
    if built_for != tf_version:
        return f"it was built for TensorFlow {built_for}, but TensorFlow {tf_version} is running"
    needed = {f.removeprefix("-m").replace("-", "_") for f in info.get("isa_flags", [])
              if "=" not in f}
    have = _cpu_flags()
    if needed and have and not needed <= have:
        return f"it needs CPU features {sorted(needed - have)} this CPU lacks"
    return None


def _load() -> None:
    from kerasq._compat import tf

    if not os.path.exists(LIBRARY_PATH):
        _state["reason"] = f"{LIBRARY_PATH} is not built (see docs/ops.md, 'Building the ops')"
        return
    reason = _check_build_info(tf.__version__)
    if reason is not None:
        _state["reason"] = f"{LIBRARY_PATH}: {reason}"
        return
    try:
        _state["module"] = tf.load_op_library(LIBRARY_PATH)
    except Exception as exc:  # noqa: BLE001 - any load failure means: use the fallback
        _state["reason"] = f"{LIBRARY_PATH} failed to load: {exc}"


def library() -> Optional[Any]:
    """The loaded op module, or None when the pure-TF fallback must be used."""
    if use_python_ops():
        return None
    if not _state["tried"]:
        with _lock:
            if not _state["tried"]:
                _load()
                _state["tried"] = True
    if _state["module"] is None and not _state["warned"]:
        _state["warned"] = True
        log.warning("kerasq C++ ops unavailable, using the pure-TF fallback: %s", _state["reason"])
    return _state["module"]


def custom_kernels_loaded() -> bool:
    """True if the C++ kernels are loaded and used (loads them on first call).

    Example:
        >>> import kerasq.ops
        >>> isinstance(kerasq.ops.custom_kernels_loaded(), bool)
        True
    """
    return library() is not None


def fallback_reason() -> Optional[str]:
    """Why the C++ kernels are not used (None if they are)."""
    if use_python_ops():
        return "KERASQ_PY_OPS=1 forces the pure-TF fallback"
    return None if library() is not None else _state["reason"]
