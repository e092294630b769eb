"""Build (setup.py build_ext, Bazel files) and lazy loading of the ops library."""

from __future__ import annotations

import json
import logging
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from conftest import REPO_ROOT
from kerasq.ops import _loader

LINT = REPO_ROOT / "tools" / "lint_bazel.py"


def _run_py(code: str, env_extra=None, timeout=300):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=str(REPO_ROOT.parent))


def test_bazel_files_lint_clean():
    proc = subprocess.run([sys.executable, str(LINT), str(REPO_ROOT)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _lint_copy(tmp_path: pathlib.Path) -> pathlib.Path:
    root = tmp_path / "repo"
    for rel in ["WORKSPACE", "BUILD", ".bazelversion", "tf_configure.bzl", "kerasq_ops.bzl",
                "kerasq/ops/BUILD", "kerasq/ops/_build_ext.py"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO_ROOT / rel, root / rel)
    shutil.copytree(REPO_ROOT / "kerasq" / "ops" / "cc", root / "kerasq" / "ops" / "cc")
    return root


def test_lint_catches_drift_between_bazel_and_setup(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("lint_bazel", LINT)
    lint = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lint)
    root = _lint_copy(tmp_path)
    assert lint.lint(str(root)) == []
    build = root / "kerasq" / "ops" / "BUILD"
    build.write_text(build.read_text().replace('        "cc/int_gemm.cc",\n', ""))
    problems = lint.lint(str(root))
    assert any("srcs" in p and "SOURCES" in p for p in problems), problems
    macro = root / "kerasq_ops.bzl"
    macro.write_text(macro.read_text().replace('"-O3",', '"-O2",'))
    assert any("KERASQ_COPTS" in p for p in lint.lint(str(root)))
    (root / "BUILD").write_text("import os\n")
    assert any("Import is not Starlark" in p for p in lint.lint(str(root)))
    (root / "kerasq" / "ops" / "cc" / "rounding.h").unlink()
    assert any("rounding.h does not exist" in p for p in lint.lint(str(root)))


def test_build_ext_without_compiler_succeeds_and_writes_nothing(tmp_path):
    # A missing compiler must leave a working (pure-Python) install: exit 0, no .so.
    proc = subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--build-lib", str(tmp_path),
         "--build-temp", str(tmp_path / "tmp")],
        cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=300,
        env=dict(os.environ, CXX="kerasq-no-such-compiler"),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "C++ ops not built" in proc.stderr
    assert not list(tmp_path.rglob("*.so")) and not list(tmp_path.rglob("*.tmp"))


def test_library_build_info_matches_running_tensorflow():
    if not os.path.exists(_loader.LIBRARY_PATH):
        pytest.skip("C++ ops not built (python setup.py build_ext --inplace)")
    from kerasq._compat import tf

    info = json.loads(pathlib.Path(_loader.BUILD_INFO_PATH).read_text())
    assert info["tf_version"] == tf.__version__
    from kerasq.ops import _build_ext

    assert info["sources"] == _build_ext.SOURCES


def test_import_does_not_load_library_or_tensorflow():
    code = ("import sys, kerasq, kerasq.ops; "
            "maps = open('/proc/self/maps').read(); "
            "print('tf' if 'tensorflow' in sys.modules else '-', "
            "'so' if '_kerasq_ops' in maps else '-')")
    proc = _run_py(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["-", "-"]


@pytest.fixture
def fresh_loader(monkeypatch):
    monkeypatch.delenv("KERASQ_PY_OPS", raising=False)
    monkeypatch.setattr(_loader, "_state",
                        {"tried": False, "module": None, "reason": None, "warned": False})
    return _loader


def test_missing_library_warns_once_and_falls_back(fresh_loader, monkeypatch, caplog, tmp_path):
    monkeypatch.setattr(fresh_loader, "LIBRARY_PATH", str(tmp_path / "_kerasq_ops.so"))
    with caplog.at_level(logging.WARNING, logger="kerasq.ops"):
        assert fresh_loader.library() is None
        assert fresh_loader.library() is None
        assert not fresh_loader.custom_kernels_loaded()
    warnings = [r for r in caplog.records if "pure-TF fallback" in r.getMessage()]
    assert len(warnings) == 1
    assert "not built" in fresh_loader.fallback_reason()


def test_tensorflow_version_mismatch_is_refused(fresh_loader, monkeypatch, tmp_path):
    lib = tmp_path / "_kerasq_ops.so"
    lib.write_bytes(b"not really a library")
    info = tmp_path / "_kerasq_ops.json"
    info.write_text(json.dumps({"tf_version": "2.0.0", "isa_flags": []}))
    monkeypatch.setattr(fresh_loader, "LIBRARY_PATH", str(lib))
    monkeypatch.setattr(fresh_loader, "BUILD_INFO_PATH", str(info))
    assert fresh_loader.library() is None
    assert "built for TensorFlow 2.0.0" in fresh_loader.fallback_reason()


def test_env_var_forces_fallback(monkeypatch):
    monkeypatch.setenv("KERASQ_PY_OPS", "1")
    assert not _loader.custom_kernels_loaded()
    assert "KERASQ_PY_OPS" in _loader.fallback_reason()


_THREADS_SCRIPT = """
import hashlib, sys
from kerasq._compat import tf
tf.config.threading.set_intra_op_parallelism_threads(int(sys.argv[1]))
tf.config.threading.set_inter_op_parallelism_threads(1)
import kerasq.ops as ops
assert ops.custom_kernels_loaded() == (sys.argv[2] == "custom")
x = tf.random.stateless_uniform([1 << 20], [1, 2], -8, 8)
h = hashlib.sha256()
h.update(ops.fake_quant_dfp(x, 8, 4, rounding="stochastic", seed=77).numpy().tobytes())
h.update(ops.fake_quant_minifloat(x, 4, 3, rounding="stochastic", seed=78).numpy().tobytes())
xi = tf.cast(tf.random.stateless_uniform([4096, 64], [3, 4], -128, 128, tf.int32), tf.int8)
wi = tf.cast(tf.random.stateless_uniform([64, 40], [5, 6], -128, 128, tf.int32), tf.int8)
h.update(ops.dfp_matmul(xi, wi, x_frac=4, w_frac=4, out_frac=1, rounding="stochastic",
                        seed=79).numpy().tobytes())
print(h.hexdigest())
"""


def test_stochastic_results_do_not_depend_on_thread_count(ops_path):
    env = {"KERASQ_PY_OPS": "1" if ops_path == "fallback" else "0"}
    digests = set()
    for threads in (1, 2, 4):
        proc = subprocess.run([sys.executable, "-c", _THREADS_SCRIPT, str(threads), ops_path],
                              capture_output=True, text=True, timeout=300,
                              env=dict(os.environ, **env), cwd=str(REPO_ROOT.parent))
        assert proc.returncode == 0, proc.stderr[-2000:]
        digests.add(proc.stdout.strip().splitlines()[-1])
    assert len(digests) == 1
