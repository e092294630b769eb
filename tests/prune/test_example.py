"""Smoke test of examples/prune_qat_digits.py (slow: trains four stages on the digits)."""

from __future__ import annotations

import importlib.util
import pathlib

import pytest

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "prune_qat_digits.py"


@pytest.mark.slow
def test_example_quick_run_prints_the_table(capsys, tmp_path):
    spec = importlib.util.spec_from_file_location("prune_qat_digits", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out_file = tmp_path / "digits.tflite"
    assert module.main(["--quick", "--output", str(out_file)]) == 0
    table = capsys.readouterr().out
    rows = [line for line in table.splitlines() if line.startswith("| ") and "%" in line]
    assert [r.split("|")[1].strip() for r in rows] == [
        "float dense",
        "pruned (float)",
        "pruned + 8-bit QAT",
        "TFLite",
    ]
    sparsity = [float(r.split("|")[3].strip().rstrip(" %")) for r in rows]
    assert sparsity[0] == 0.0 and sparsity[1] >= 69.9 and sparsity[2] >= 79.9
    assert sparsity[3] >= sparsity[2] - 0.1  # the file's weights keep the zeros
    assert out_file.stat().st_size > 0
