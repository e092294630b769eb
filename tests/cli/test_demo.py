"""`kerasq demo` runs end to end (reduced epochs) and prints its table."""

from __future__ import annotations

import os
import subprocess
import sys


def test_demo_runs_and_prints_the_table(tmp_path):
    env = dict(os.environ, KERASQ_DEMO_EPOCHS="3", KERASQ_DEMO_QAT_EPOCHS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "kerasq", "demo", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    for row in ("float (Caffe import)", "PTQ DFP-8", "QAT DFP-8 + 50% pruning", "int8 TFLite"):
        assert row in out
    # the demo net ends in logits: verified in steps (top-1 is judged for Softmax outputs)
    assert "0 output steps" in out and "100.00% identical" in out
    assert (tmp_path / "digits.prototxt").exists() and (tmp_path / "digits_int8.tflite").exists()
