"""Shared fixtures: the location of ../shared reference data and skip helpers."""

from __future__ import annotations

import os
import pathlib

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED = pathlib.Path(os.environ.get("KERASQ_SHARED", REPO_ROOT.parent / "shared"))


def shared_path(*parts: str) -> pathlib.Path:
    """Path under ../shared; skips the calling test with a clear reason if it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"reference data not found: {path} (CI keeps ../shared beside the checkout)")
    return path


@pytest.fixture
def shared() -> pathlib.Path:
    """The ../shared folder (skip if absent)."""
    return shared_path()
