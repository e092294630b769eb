"""Caffe to Keras 3 on the JAX backend: one subprocess with ``KERAS_BACKEND=jax`` runs

* test_keras3_golden.py: the 43 real-Caffe golden cases through ``forward(..., keras=3)``,
  every dumped top at the tf_keras tolerance (atol 1e-5·max(1, max|ref|) + rtol 1e-4);
* test_keras3_layers.py: the layer tests against OpenCV, the numpy Caffe transcription and
  the SSD loop reference, at their own tolerances (the DetectionOutput nets: the refusal);
* test_keras3_nets.py: LeNet, MTCNN det1 (fixed and free input size), ResNet-20 and a
  JacintoNet against their tf_keras conversion (itself checked against OpenCV);
* keras3_jax_checks.py: safe-mode ``.keras`` reloads, jit-compiled ``predict``, the SSD nets
  up to DetectionOutput against OpenCV, the CLI's one-line refusal.

The cases run in one process (one Keras/JAX start-up); its JUnit report is read here.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import xml.etree.ElementTree as ElementTree

import pytest

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent.parent.parent
sys.path.insert(0, str(HERE))
from test_golden import CASES  # noqa: E402

FILES = ("test_keras3_golden.py", "test_keras3_layers.py", "test_keras3_nets.py",
         "keras3_jax_checks.py")


@pytest.fixture(scope="module")
def jax_report(tmp_path_factory):
    pytest.importorskip("jax")
    out = tmp_path_factory.mktemp("jax")
    report = out / "report.xml"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update(KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", KERASQ_JAX_OUT=str(out),
               PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]))
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
            f"--junitxml={report}", "-k", "not recursion_limit",
            *(str(HERE / name) for name in FILES)]  # fmt: skip
    proc = subprocess.run(args, cwd=str(REPO), env=env, capture_output=True, text=True,
                          timeout=3000)  # fmt: skip
    assert report.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, proc.stdout[-6000:]
    outcomes = {}
    for case in ElementTree.parse(report).getroot().iter("testcase"):
        tags = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        outcomes[f"{case.get('classname')}::{case.get('name')}"] = tags[0] if tags else "passed"
    return outcomes, out


def _passed(report, module: str, prefix: str = "test_"):
    return [n for n, o in report.items() if module in n and n.split("::")[-1].startswith(prefix)
            and o == "passed"]  # fmt: skip


def test_no_case_fails_on_jax(jax_report):
    jax_report, _ = jax_report
    bad = {name: outcome for name, outcome in jax_report.items()
           if outcome in ("failure", "error")}  # fmt: skip
    assert not bad, bad


def test_every_golden_case_runs_on_jax(jax_report):
    jax_report, _ = jax_report
    if not CASES:
        pytest.skip("shared/caffe-golden is absent")
    passed = _passed(jax_report, "test_keras3_golden", "test_golden_case_keras3[")
    assert len(passed) == len(CASES) == 43, sorted(set(CASES) - {p.split("[")[-1][:-1]
                                                             for p in passed})  # fmt: skip


def test_the_layer_tests_run_on_jax(jax_report):
    jax_report, _ = jax_report
    passed = _passed(jax_report, "test_keras3_layers")
    assert len(passed) >= 200, len(passed)
    assert any("opencv" in name for name in passed)
    assert any("detection_output_matches_caffe_loop_reference" in name for name in passed)


def test_the_real_nets_run_on_jax(jax_report):
    jax_report, _ = jax_report
    passed = _passed(jax_report, "test_keras3_nets")
    assert any("det1" in name for name in passed) and len(passed) >= 5, passed


def test_the_jax_checks_ran(jax_report):
    jax_report, _ = jax_report
    passed = _passed(jax_report, "keras3_jax_checks")
    assert any("the_backend_is_jax" in n for n in passed)
    assert any("saves_reloads_and_jit_compiles" in n for n in passed)
    assert len(passed) >= 9, passed


def test_a_file_saved_on_jax_reloads_on_tensorflow_and_matches_caffe(jax_report):
    """The JAX run's ``.keras`` (a net with EdgePadding2D), reloaded here on Keras 3's
    TensorFlow backend in safe mode, gives Caffe's top."""
    import numpy as np

    from conftest import shared_path
    from kerasq.converters.caffe.keras3 import keras3
    from test_golden import assert_caffe_close

    _, out = jax_report
    folder = shared_path("caffe-golden", "pool_max_k3s2p1")
    assert keras3().backend.backend() == "tensorflow"
    model = keras3().saving.load_model(str(out / "pool.keras"), safe_mode=True, compile=False)
    x = np.load(folder / "input.npy").transpose(0, 2, 3, 1)
    got = np.asarray(model(x)).transpose(0, 3, 1, 2)
    assert_caffe_close(got, np.load(folder / "blobs" / "pool.npy"), "pool")
