"""The examples in the docstrings of kerasq's public modules run and print what they claim.

The numerics modules must have examples; the other public modules are collected from
their packages (examples marked ``# doctest: +SKIP`` need a model or files and are skipped).
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

NUMERICS = ["__init__", "rounding", "dfp", "minifloat", "pow2", "grid"]
PACKAGES = ["kerasq.numerics", "kerasq.ops", "kerasq.schemes", "kerasq.prune", "kerasq.export"]
LEAVES = ["kerasq._compat", "kerasq.errors", "kerasq.serialization", "kerasq._io",
          "kerasq.integer"]
FLAGS = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS


def _public_modules() -> list:
    names = list(LEAVES)
    for package in PACKAGES:
        names.append(package)
        path = importlib.import_module(package).__path__
        names += [f"{package}.{m.name}" for m in pkgutil.iter_modules(path)
                  if not m.name.startswith("_")]
    return names


@pytest.mark.parametrize("name", NUMERICS)
def test_numerics_docstring_examples(name):
    module = importlib.import_module("kerasq.numerics" + ("" if name == "__init__" else f".{name}"))
    result = doctest.testmod(module, optionflags=FLAGS)
    assert result.attempted > 0 and result.failed == 0, result


@pytest.mark.parametrize("name", _public_modules())
def test_public_module_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=FLAGS)
    assert result.failed == 0, result
