"""QAT and calibration under tf.distribute equal single-device results.

Each run is a fresh process (tests/reliability/dist_worker.py): logical CPU devices and
TF_CONFIG must be set before TensorFlow starts. Reference: the same script on one device
(default strategy) over the same global batches. Compared: every variable of the quantized
model after calibration (activation ranges, fractional lengths, counters) and after two
epochs of QAT (weights and quantizer state), and the predictions.

- MirroredStrategy: two logical CPU devices in one process (one global batch split in two).
- MultiWorkerMirroredStrategy: two local worker processes on 127.0.0.1 (free ports, TF_CONFIG),
  each calibrating on its own half of the data: the ranges must be the min/max over both.
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
from typing import Dict, List, Optional

import numpy as np
import pytest

WORKER = pathlib.Path(__file__).with_name("dist_worker.py")
TIMEOUT = 400  # seconds per run; the runs take ~30-60 s on a loaded 2-core machine
RTOL, ATOL = 1e-5, 1e-6


def _env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    env.update(extra or {})
    return env


def _start(mode: str, out: pathlib.Path, env: Optional[Dict[str, str]] = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(WORKER), mode, str(out)],
        env=_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(procs: List[subprocess.Popen]) -> None:
    try:
        results = [p.communicate(timeout=TIMEOUT) for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
            p.communicate()
        pytest.fail(f"distributed run did not finish within {TIMEOUT} s")
    for p, (out, err) in zip(procs, results):
        assert p.returncode == 0, err[-4000:]


def _free_ports(n: int) -> List[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Dict[str, Dict[str, np.ndarray]]:
    """single, mirrored (concurrently), then the two multi-worker processes."""
    tmp = tmp_path_factory.mktemp("dist")
    _finish([_start("single", tmp / "single.npz"), _start("mirrored", tmp / "mirrored.npz")])
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    workers = [
        _start(
            "multiworker",
            tmp / f"multiworker{i}.npz",
            {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})},
        )
        for i in range(2)
    ]
    _finish(workers)
    loaded = {}
    for name, file in (
        ("single", "single.npz"), ("mirrored", "mirrored.npz"), ("multiworker", "multiworker0.npz")
    ):
        with np.load(tmp / file, allow_pickle=False) as data:
            loaded[name] = {k: data[k] for k in data.files}
    return loaded


def _assert_same(ref: Dict[str, np.ndarray], got: Dict[str, np.ndarray], prefix: str) -> int:
    keys = [k for k in ref if k.startswith(prefix)]
    assert keys and sorted(keys) == sorted(k for k in got if k.startswith(prefix))
    for key in keys:
        np.testing.assert_allclose(got[key], ref[key], rtol=RTOL, atol=ATOL, err_msg=key)
    return len(keys)


def test_reference_run_is_not_trivial(runs):
    single = runs["single"]
    assert int(single["replicas"]) == 1
    fls = [v for k, v in single.items() if k.startswith("calibrated/") and "output_frac_bits" in k]
    assert len(fls) >= 3 and all(np.all(v == np.round(v)) for v in fls)
    maxima = [v for k, v in single.items() if k.startswith("calibrated/") and "output_max" in k]
    assert all(float(v) > 0 for v in maxima)
    kernels = [k for k in single if k.startswith("trained/") and k.endswith("kernel:0")]
    changed = [
        not np.allclose(single[k], single[k.replace("trained/", "calibrated/", 1)])
        for k in kernels
    ]
    assert kernels and all(changed), "QAT must have changed the weights"


@pytest.mark.parametrize("mode", ["mirrored", "multiworker"])
def test_calibrated_ranges_agree_across_replicas(runs, mode):
    assert int(runs[mode]["replicas"]) == 2
    assert _assert_same(runs["single"], runs[mode], "calibrated/") > 10


@pytest.mark.parametrize("mode", ["mirrored", "multiworker"])
def test_qat_equals_single_device(runs, mode):
    assert _assert_same(runs["single"], runs[mode], "trained/") > 10
    np.testing.assert_allclose(
        runs[mode]["predictions"], runs["single"]["predictions"], rtol=RTOL, atol=ATOL
    )
