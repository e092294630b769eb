"""Package hygiene: Keras choice lives in _compat, import is cheap, converters mapping."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent


def _sources():
    for top in ("kerasq", "converters"):
        yield from (REPO / top).rglob("*.py")


def test_only_compat_chooses_keras():
    pattern = re.compile(r"^\s*(import keras\b|from keras\b|import tf_keras|from tf_keras|.*\btf\.keras\b)")
    offenders = []
    for path in _sources():
        if path.name == "_compat.py" or "caffe_pb2" in path.name:
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if pattern.match(line) and "noqa: compat" not in line:
                offenders.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert not offenders, "import Keras through kerasq._compat only:\n" + "\n".join(offenders)


def test_import_does_not_load_tensorflow_or_custom_ops():
    code = (
        "import sys, kerasq; "
        "assert 'tensorflow' not in sys.modules, 'tensorflow imported'; "
        "assert not any(m.startswith('kerasq.ops') for m in sys.modules); print('ok')"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr


def test_converters_is_a_kerasq_subpackage():
    import kerasq.converters as conv

    assert conv.__name__ == "kerasq.converters"
    # what an installed kerasq puts on sys.path: no PYTHONPATH pointing at the checkout,
    # whose root folder is (by design) named converters/
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def run(code: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=60, cwd="/", env=env)

    if run("import kerasq.converters").returncode != 0:
        pytest.skip("kerasq is not installed (tests run from the source tree via PYTHONPATH)")
    assert run("import converters").returncode != 0, \
        "a top-level 'converters' package must not be installed"


def test_compat_sets_legacy_keras_before_tensorflow():
    code = (
        "import os; from kerasq import _compat as c; "
        "assert os.environ['TF_USE_LEGACY_KERAS'] == '1'; "
        "assert c.keras.__version__.startswith('2.'), c.keras.__version__; print('ok')"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr
    assert "cuda" not in proc.stderr.lower(), "TF start-up lines must be quiet: " + proc.stderr


def test_top_level_functions_stay_functions_after_their_submodules_are_imported():
    """Importing a submodule binds the package attribute of its name to the module: a lazily
    exported function must not share a submodule's name, or ``from kerasq.schemes import f``
    would return the module once something imported it (``kerasq.schemes.report`` is a
    callable module on purpose)."""
    code = (
        "import importlib, pkgutil, kerasq, kerasq.schemes as s; "
        "[importlib.import_module('kerasq.schemes.' + m.name) "
        " for m in pkgutil.iter_modules(s.__path__)]; "
        "from kerasq.dispatch import calibrate; "
        "assert kerasq.calibrate is calibrate, kerasq.calibrate; "
        "bad = [n for n in s._LAZY_ATTRS if not callable(getattr(s, n))]; "
        "assert not bad, bad; "
        "from kerasq.schemes import calibrate as c; "
        "from kerasq.schemes.calibration import calibrate as c2; assert c is c2; "
        "assert all(callable(getattr(kerasq, n)) for n in "
        "('calibrate', 'quantize_model', 'search_bitwidths', 'load_model', "
        "'QuantizationConfig')); print('ok')"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-2000:]
