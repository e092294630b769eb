"""Every ```python and ```bash block of README.md and docs/*.md runs and does what it says.

Each Markdown file's blocks run in document order in one subprocess (one Python namespace,
one working directory prepared with the files the docs name: deploy.prototxt,
weights.caffemodel, x.npy, val.npz, test.prototxt, ... made from a digits CNN kerasq writes
as a Caffe net itself, plus ResNet-20 from ../shared when present). ``kerasq`` in a bash
block runs as ``python -m kerasq``. Promises are checked: literal results in comments,
exit status 0 and the output files of every command, and the per-file checks in
``doc_fixtures.check`` (pruning reaches its sparsity, integer execution is bit-identical).
A failure names the Markdown file and line.

Blocks and commands that cannot run here are listed in EXEMPT_BLOCKS / EXEMPT_COMMANDS
with the reason; an exemption that matches nothing any more fails, so the lists stay true.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))

import doc_blocks  # noqa: E402
import doc_fixtures  # noqa: E402

MARKDOWN = ["README.md"] + sorted(
    str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md"))

# whole blocks: (file, text in the block) -> reason
EXEMPT_BLOCKS = {
    ("docs/reliability.md", "MultiWorkerMirroredStrategy()"):
        "needs a multi-machine cluster; tests/reliability/test_distributed.py runs the same "
        "code with 2 worker processes on loopback",
    ("README.md", "JDetNet SSD: PriorBox and DetectionOutput"):
        "the real JDetNet SSD at 160x384 with its own settings takes minutes; "
        "tests/export/test_real_net_matrix.py runs these exact commands on it (slow)",
    ("docs/ops.md", "ops.dfp_conv2d("):
        "x, x_q, w_q, b_q stand for differently shaped tensors in each call; "
        "tests/ops checks every call against a numpy reference",
}
# single commands in bash blocks: text in the command -> reason
EXEMPT_COMMANDS = {
    "pip install": "installs the package; .ci/run does exactly this",
    "pytest": "the test suite itself",
    "bazel ": "Bazel cannot be fetched on CI; tools/lint_bazel.py checks BUILD/WORKSPACE",
    "python benchmarks/": "benchmarks take minutes; they regenerate the README's tables",
    "python tools/": "CI runs tools/lint_bazel.py itself",
    "python train_qat.py": "the user's multi-worker script (docs/reliability.md)",
    "export TF_CONFIG": "multi-machine setup (docs/reliability.md)",
    "kerasq demo": "about 30 s; tests/cli/test_demo.py runs the demo",
    "ssd.prototxt": "an SSD net with weights; the converter's SSD tests cover it",
}
# failures that other work in progress fixes: text in the failing command or error -> reason.
# They make the test xfail; once they pass, the test fails until removed.
KNOWN_BROKEN: dict[str, str] = {}
# several trainings, a bit-width search and int8 exports / 12 epochs of pruning: minutes
SLOW = {"README.md", "docs/sparsity.md"}


def _blocks(name):
    blocks = doc_blocks.extract(REPO / name, REPO)
    kept = []
    for block in blocks:
        if any(f == name and text in block.code for (f, text) in EXEMPT_BLOCKS):
            continue
        kept.append(block)
    return kept


@pytest.fixture(scope="session")
def fixture_dir(tmp_path_factory):
    from conftest import SHARED

    root = tmp_path_factory.mktemp("doc_fixtures")
    absent = doc_fixtures.build(root, SHARED)
    return root, absent


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in MARKDOWN])
def test_markdown_blocks_run_and_keep_their_promises(name, request, tmp_path):
    import shutil

    blocks = _blocks(name)
    if not blocks:
        pytest.skip(f"{name}: no runnable code block")
    base, absent = request.getfixturevalue("fixture_dir")
    workdir = tmp_path / "work"
    shutil.copytree(base, workdir, symlinks=True)
    exempt = dict(EXEMPT_COMMANDS)
    exempt.update(absent)
    spec = {"file": name, "workdir": str(workdir), "exempt_commands": exempt,
            "blocks": [vars(b) for b in blocks]}
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    proc = subprocess.run([sys.executable, str(HERE / "doc_blocks.py"), str(spec_path)],
                          capture_output=True, text=True, env=env, timeout=1800)
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 0 and lines, (
        f"{name}: the block runner failed:\n{proc.stderr[-3000:]}")
    failures = json.loads(lines[-1])
    expected = [f for f in failures if any(k in f["error"] for k in KNOWN_BROKEN)]
    unexpected = [f for f in failures if f not in expected]
    assert not unexpected, "\n".join(
        [f"{f['where']}: {f['error']}" for f in unexpected]
        + [f"(known broken) {f['where']}: {f['error']}" for f in expected])
    text = (REPO / name).read_text(encoding="utf-8")
    fixed = [k for k in KNOWN_BROKEN if k in text
             and not any(k in f["error"] for f in expected)]
    assert not fixed, f"{name}: works now, remove from KNOWN_BROKEN: {fixed}"
    if expected:
        pytest.xfail("known broken: " + "; ".join(f"{f['where']}: {f['error']}"
                                                   for f in expected))


def test_exemptions_still_match_the_docs():
    texts = {name: (REPO / name).read_text(encoding="utf-8") for name in MARKDOWN}
    stale = [f"{f}: {t!r}" for (f, t) in EXEMPT_BLOCKS if t not in texts.get(f, "")]
    stale += [t for t in EXEMPT_COMMANDS if not any(t in text for text in texts.values())]
    assert not stale, "exemptions that match no block any more: " + "; ".join(stale)


def test_extraction_names_file_and_line(tmp_path):
    md = tmp_path / "x.md"
    md.write_text("text\n```python\na = 1\n```\n\n```\noutput\n```\n```bash\n"
                  "kerasq convert a b \\\n  -o m.h5  # comment\n```\n")
    blocks = doc_blocks.extract(md, tmp_path)
    assert [(b.file, b.line, b.lang) for b in blocks] == [("x.md", 3, "python"),
                                                          ("x.md", 10, "bash")]
    assert doc_blocks.bash_commands(blocks[1]) == [(10, "kerasq convert a b -o m.h5  # comment")]
    assert doc_blocks.promised_value("array([3.1875, 0., 3.96875])") == (
        True, [3.1875, 0.0, 3.96875])
    assert doc_blocks.promised_value("5: range [-4, 3.96875], step 1/32") == (True, 5)
    assert doc_blocks.promised_value("True when the C++ library is used")[0] is False
