"""The accuracy claims of docs/quantization.md on real data (scikit-learn digits), run by
benchmarks/accuracy.py: PTQ DFP 8/8 loses <= 0.3 points, 16-bit DFP and minifloat E5M10
lose none, QAT brings 4-bit weights within 1 point of float. Slow (a few minutes)."""

from __future__ import annotations

import importlib.util
import pathlib

import pytest

BENCH = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "accuracy.py"


@pytest.mark.slow
def test_digits_accuracy_table():
    spec = importlib.util.spec_from_file_location("kerasq_bench_accuracy", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = {(r["scheme"], r["method"]): r for r in bench.run(epochs=30, qat_epochs=5)}
    float_acc = rows[("float32", "-")]["accuracy"]
    assert float_acc > 95.0
    assert rows[("DFP 8/8 (weights per channel, activations per tensor)", "PTQ")]["delta"] >= -0.3
    assert rows[("DFP 16/16", "PTQ")]["delta"] >= 0.0
    assert rows[("minifloat E5M10", "PTQ")]["delta"] >= 0.0
    assert rows[("DFP 4/8", "QAT (5 epochs)")]["delta"] >= -1.0
