"""Fixtures for the ops tests: every op test runs on both the C++ and the pure-TF path."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["custom", "fallback"])
def ops_path(request, monkeypatch):
    """Run the test body with the C++ kernels ("custom") and with the pure-TF fallback.

    The custom variant is skipped, with the loader's reason, when the library is not
    built or not loadable (e.g. a wheel built without a compiler).
    """
    import kerasq.ops

    if request.param == "fallback":
        monkeypatch.setenv("KERASQ_PY_OPS", "1")
        assert not kerasq.ops.custom_kernels_loaded()
    else:
        monkeypatch.delenv("KERASQ_PY_OPS", raising=False)
        if not kerasq.ops.custom_kernels_loaded():
            pytest.skip(f"C++ ops not available: {kerasq.ops.fallback_reason()}")
    return request.param
