"""Smoke test of benchmarks/ops.py --quick: every section runs and prints complete tables.

No timing assertions (shared machines): the test checks that each table has every row,
that each timing cell parses as a number, and that the stream counts match the kernels.
"""

from __future__ import annotations

import importlib.util
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location(
        "kerasq_bench_ops", os.path.join(ROOT, "benchmarks", "ops.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rows(text: str) -> list:
    return [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]


CELL = re.compile(r"^\d+\.\d\d \(\d+\.\d\d\)( ms)?$")


def test_quick_fake_quant_markdown_has_every_variant(bench):
    table = bench.bench_fake_quant([2**12], rounds=2)
    text = table.render(markdown=True)
    rows = _rows(text)
    names = list(bench.fake_quant_variants(64))
    assert [r.split(" | ")[0][2:] for r in rows[1:]] == names
    for row in rows[1:]:
        cells = [c.strip() for c in row.strip("| ").split(" | ")]
        assert CELL.match(cells[-1]), row
    bound = rows[1].split(" | ")
    assert bound[1] == "4" and bound[2] == "1.00"
    assert rows[2].split(" | ")[1] in ("4.06", "-")  # the clip-mask kernel


def test_interleaved_rotates_and_records_every_round(bench):
    order = []
    fns = {name: (lambda name=name: order.append(name)) for name in "abc"}
    t = bench.interleaved(fns, rounds=3, warmup=0)
    assert order == list("abc") + list("bca") + list("cab")
    assert all(len(t.times[n]) == 3 for n in "abc")
    assert t.min("a") <= t.median("a")


def test_quick_run_of_all_sections(bench, capsys):
    assert bench.main(["--quick", "--markdown"]) == 0
    out = capsys.readouterr().out
    assert "Fake quantization" in out and "Integer layers" in out and "QAT training step" in out
    assert "Whole nets" in out
    integer = [r for r in _rows(out) if r.startswith(("| conv2d", "| depthwise", "| matmul"))]
    assert len(integer) == 3
    for row in integer:
        assert all(CELL.match(c.strip()) for c in row.strip("| ").split(" | ")[1:]), row
