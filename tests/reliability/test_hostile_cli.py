"""Hostile inputs through the ``kerasq`` command line: nothing lost, nothing crashes.

For every case of ``hostile_cases.all_cases()`` (outputs that would destroy something,
NaN/Inf data, bad array files, bad Caffe files, bad options, bad model files): exit
status 2, exactly one stderr line starting ``kerasq: error:``, no traceback, no new file,
every existing file byte-identical, no hang. Most cases run in this process through
``kerasq.cli.main`` (one converted tiny model shared by all); the exit status, signals
and process-level behaviour (FIFOs, deep nets) run in subprocesses of ``python -m kerasq``.
The full sweep (more positions and commands) is ``-m slow``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from reliability import hostile_cases as hc

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
CASES = hc.all_cases()
FAST = [c for c in CASES if not c.slow]
SLOW = [c for c in CASES if c.slow]


def _env() -> dict:
    env = dict(os.environ, PYTHONPATH=REPO)
    env.pop("KERASQ_VERBOSE_TF", None)
    return env


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    from kerasq.cli import main

    folder = str(tmp_path_factory.mktemp("hostile_assets"))
    hc.make_assets(folder)
    assert main(["convert", f"{folder}/net.prototxt", f"{folder}/net.caffemodel",
                 "-o", f"{folder}/model.h5"]) == 0
    assert main(["quantize", f"{folder}/model.h5", "--calibration", f"{folder}/cal.npy",
                 "-o", f"{folder}/q.h5"]) == 0
    os.environ["KERASQ_HOSTILE_ASSETS"] = folder
    return folder


def _restore_permissions(folder: str) -> None:
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            try:
                os.chmod(os.path.join(root, name), 0o755)
            except OSError:
                pass


def run_in_process(case: hc.Case, assets: str, work: str, capfd) -> None:
    """Run one case through kerasq.cli.main and assert the invariant."""
    from kerasq.cli import main

    if IS_ROOT and not case.root_ok:
        pytest.skip("permission bits do not apply to root")
    os.makedirs(work, exist_ok=True)
    if case.setup is not None:
        case.setup(work)
    before = (hc.snapshot(assets), hc.snapshot(work))
    capfd.readouterr()
    hung = []

    def watchdog(signum, frame):
        hung.append(True)
        raise TimeoutError(f"{case.name} hung")

    old = signal.signal(signal.SIGALRM, watchdog)
    signal.alarm(90)
    cwd = os.getcwd()
    os.chdir(work)
    try:
        try:
            status = main(case.args(assets, work))
        except SystemExit as exc:
            status = exc.code
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
        os.chdir(cwd)
    captured = capfd.readouterr()
    after = (hc.snapshot(assets), hc.snapshot(work))
    _restore_permissions(work)
    lines = [line for line in captured.err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("kerasq: error:")]
    assert not hung, f"{case.name}: hang"
    assert status == 2, f"{case.name}: exit {status}: {captured.err[-2000:]}"
    assert len(errors) == 1, f"{case.name}: stderr {captured.err[-2000:]!r}"
    assert "Traceback" not in captured.err, captured.err[-2000:]
    assert set(after[1]) == set(before[1]), (
        f"{case.name}: files changed: {sorted(set(after[1]) ^ set(before[1]))}")
    for label, old_snap, new_snap in (("asset", before[0], after[0]),
                                      ("work", before[1], after[1])):
        changed = [k for k in old_snap if old_snap[k] != new_snap.get(k)]
        assert not changed, f"{case.name}: {label} files modified: {changed}"
        assert set(new_snap) == set(old_snap), f"{case.name}: new {label} files"


@pytest.mark.parametrize("case", FAST, ids=[c.name for c in FAST])
def test_hostile_input_is_refused_cleanly(case, assets, tmp_path, capfd):
    run_in_process(case, assets, str(tmp_path / "w"), capfd)


@pytest.mark.slow
@pytest.mark.parametrize("case", SLOW, ids=[c.name for c in SLOW])
def test_hostile_input_sweep(case, assets, tmp_path, capfd):
    run_in_process(case, assets, str(tmp_path / "w"), capfd)


def test_there_are_a_few_hundred_cases_in_every_category():
    categories = {c.category for c in CASES}
    assert {"output", "non-finite", "array-file", "caffe", "options", "model-file",
            "labels", "layout"} <= categories
    assert len(CASES) >= 300 and len(FAST) >= 150


# ------------------------------------------------------------------ subprocesses
SUBPROCESS_CASES = ["model-file-fifo-as-caffemodel", "quantize-model-keras-module-this",
                    "quantize-calibration-inf-0",
                    pytest.param("convert-output-fifo", marks=pytest.mark.slow),
                    pytest.param("prototxt-nested-5000", marks=pytest.mark.slow),
                    pytest.param("options-json-nested", marks=pytest.mark.slow)]


def _subprocess_case(name: str, work: str, assets: str):
    by_name = {c.name: c for c in CASES}
    if name == "model-file-fifo-as-caffemodel":
        case = hc.Case("caffe", name, ["convert", "{A}/net.prototxt", "{W}/p.caffemodel", "-o",
                                       "{W}/m.h5"], hc.fifo("p.caffemodel"))
    elif name == "options-json-nested":
        case = by_name["config-json-nested"]
    else:
        case = by_name[name]
    os.makedirs(work, exist_ok=True)
    if case.setup is not None:
        case.setup(work)
    return case


@pytest.mark.parametrize("name", SUBPROCESS_CASES)
def test_process_exit_status_and_one_line(name, assets, tmp_path):
    work = str(tmp_path / "w")
    case = _subprocess_case(name, work, assets)
    before = hc.snapshot(work)
    proc = subprocess.run([sys.executable, "-m", "kerasq", *case.args(assets, work)],
                          capture_output=True, text=True, timeout=180, env=_env(), cwd=work)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert [line for line in lines if line.startswith("kerasq: error:")] == lines[-1:]
    assert len([line for line in lines if line.startswith("kerasq: error:")]) == 1
    assert "Traceback" not in proc.stderr
    assert hc.snapshot(work) == before


def test_debug_keeps_the_traceback(assets, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "kerasq", "--debug", "convert", "/dev/zero",
                           "-o", str(tmp_path / "m.h5")], capture_output=True, text=True,
                          timeout=180, env=_env())
    assert proc.returncode != 0 and "Traceback" in proc.stderr
    assert not (tmp_path / "m.h5").exists()


# A child that writes through atomic_output and waits to be killed mid-write.
_WRITER = r"""
import os, sys, time
from kerasq import _io
_io.install_signal_handlers()
target = sys.argv[1]
with _io.atomic_output(target) as tmp:
    with open(tmp, "wb") as f:
        f.write(b"partial" * 1000)
        f.flush()
    print("writing", flush=True)
    time.sleep(60)
"""


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP", "SIGINT"])
def test_signal_mid_write_leaves_no_temporary_and_the_old_file(sig, tmp_path):
    target = tmp_path / "m.h5"
    target.write_bytes(b"old model")
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(target)], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        assert any(p.name.startswith(".kerasq-tmp-") for p in tmp_path.iterdir())
        proc.send_signal(getattr(signal, sig))
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.h5"]
    assert target.read_bytes() == b"old model"


def test_cli_sigterm_mid_conversion_leaves_nothing(tmp_path):
    """A real `kerasq convert` of a 1200-layer chain killed while it works."""
    proto = tmp_path / "chain.prototxt"
    proto.write_text(_chain(1200))
    out = tmp_path / "chain.h5"
    proc = subprocess.Popen([sys.executable, "-m", "kerasq", "convert", str(proto), "-o",
                             str(out)], env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    deadline = time.time() + 120
    try:
        while time.time() < deadline and proc.poll() is None:
            if any(p.name.startswith(".kerasq-tmp-") for p in tmp_path.iterdir()):
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names in (["chain.prototxt"], ["chain.h5", "chain.prototxt"]), names


def test_leftover_of_a_killed_run_is_removed_by_the_next_run(tmp_path):
    from kerasq import _io

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale_file = tmp_path / f".kerasq-tmp-m.tflite-{dead}-abcd1234.tflite"
    stale_dir = tmp_path / f".kerasq-tmp-m.tflite-{dead}-old"
    stale_file.write_bytes(b"x" * 100)
    stale_dir.mkdir()
    other = tmp_path / f".kerasq-tmp-other.h5-{dead}-abcd1234.h5"  # another output's
    other.write_bytes(b"y")
    _io.write_bytes_atomic(tmp_path / "m.tflite", b"1234TFL3")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["m.tflite", other.name])


def _chain(n: int) -> str:
    lines = ['name: "chain"', 'input: "data"', "input_shape { dim: 1 dim: 2 dim: 4 dim: 4 }"]
    prev = "data"
    for i in range(n):
        lines.append(f'layer {{ name: "r{i}" type: "ReLU" bottom: "{prev}" top: "t{i}" }}')
        prev = f"t{i}"
    return "\n".join(lines) + "\n"


def test_a_1200_layer_chain_converts(tmp_path):
    """tf_keras builds functional graphs recursively: the CLI gives it a deep stack."""
    from kerasq.converters import caffe

    proto = tmp_path / "chain.prototxt"
    proto.write_text(_chain(1200))
    out = tmp_path / "chain.h5"
    proc = subprocess.run([sys.executable, "-m", "kerasq", "convert", str(proto), "-o",
                           str(out)], capture_output=True, text=True, timeout=300, env=_env())
    assert proc.returncode == 0, proc.stderr[-2000:]
    x = np.random.RandomState(0).randn(3, 2, 4, 4).astype("f4")
    ref = caffe.forward(str(proto), None, {"data": x})["t1199"]  # numpy Caffe semantics
    np.testing.assert_array_equal(ref, np.maximum(x, 0))


@pytest.mark.slow
def test_a_5000_layer_chain_converts_quantizes_and_exports(tmp_path):
    """Convert to .keras, and convert -> quantize -> int8 TFLite in one command (a
    5000-layer model config is over HDF5's 64 KiB attribute limit, so no .h5)."""
    proto = tmp_path / "chain.prototxt"
    proto.write_text(_chain(5000))
    cal = tmp_path / "cal.npy"
    x = np.abs(np.random.RandomState(0).randn(8, 2, 4, 4)).astype("f4")
    np.save(cal, x)  # NCHW: recognised from the shape
    config = tmp_path / "dfp.json"
    config.write_text('{"precision": "dfp"}')
    steps = [["convert", str(proto), "-o", str(tmp_path / "chain.keras")],
             ["convert", str(proto), "--quantize-config", str(config), "--calibration",
              str(cal), "--tflite", str(tmp_path / "q.tflite"), "--verify"]]
    for argv in steps:
        proc = subprocess.run([sys.executable, "-m", "kerasq", *argv], capture_output=True,
                              text=True, timeout=3000, env=_env())
        assert proc.returncode == 0, (argv, proc.stderr[-3000:])
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(tmp_path / "q.tflite"))
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    nhwc = np.ascontiguousarray(x[:1].transpose(0, 2, 3, 1))
    if inp["dtype"] == np.int8:
        scale, zero = inp["quantization"]
        nhwc = np.clip(np.round(nhwc / scale) + zero, -128, 127).astype(np.int8)
    interp.set_tensor(inp["index"], nhwc)
    interp.invoke()
    got = interp.get_tensor(out["index"]).astype("f4")
    if out["dtype"] == np.int8:
        scale, zero = out["quantization"]
        got = (got - zero) * scale
    # ReLU of non-negative data is the identity: equal to the input within one DFP step
    step = float(out["quantization"][0] or 2.0 ** -5)
    assert got.shape == (1, 4, 4, 2)
    np.testing.assert_allclose(got, np.minimum(x[:1].transpose(0, 2, 3, 1), got.max()),
                               atol=step)


def test_nchw_and_nhwc_data_give_the_same_quantized_model(assets, tmp_path):
    """Caffe-layout (NCHW) calibration data is recognised from the shape: the saved
    model equals the one calibrated on the same data in NHWC (compared in the HDF5 files)."""
    import h5py

    from kerasq.cli import main

    out = str(tmp_path / "q_nchw.h5")
    assert main(["quantize", f"{assets}/model.h5", "--calibration", f"{assets}/cal_nchw.npy",
                 "-o", out]) == 0

    def values(path):
        found = {}
        with h5py.File(path, "r") as f:
            f["model_weights"].visititems(
                lambda n, o: found.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None)
        return found

    ref, got = values(f"{assets}/q.h5"), values(out)
    assert ref.keys() == got.keys() and len(ref) > 4
    for name in ref:
        np.testing.assert_array_equal(got[name], ref[name], err_msg=name)
    tfl = str(tmp_path / "m.tflite")
    assert main(["export", f"{assets}/q.h5", "--target", "float", "--data",
                 f"{assets}/cal_nchw.npy", "--verify", "-o", tfl]) == 0
    assert os.path.getsize(tfl) > 0


# ------------------------------------------------------------------ write errors
def _mount_tmpfs(path: str, options: str) -> None:
    os.makedirs(path, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", path],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or 'mount failed'}): "
                    "the read-only / full-disk cases need mount (root with CAP_SYS_ADMIN)")


def _fill(folder: str) -> None:
    """Fill the file system of ``folder`` to the last byte."""
    with open(os.path.join(folder, "filler"), "wb", buffering=0) as f:
        chunk = b"\0" * 4096
        try:
            while True:
                f.write(chunk)
        except OSError:
            pass
        try:
            while True:
                f.write(b"\0")
        except OSError:
            pass


def _limit_file_size() -> None:
    import resource

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (512, 512))


WRITE_COMMANDS = {
    "convert": (["convert", "{A}/net.prototxt", "{A}/net.caffemodel", "-o"], "m.h5"),
    "convert-keras": (["convert", "{A}/net.prototxt", "{A}/net.caffemodel", "-o"], "m.keras"),
    "quantize": (["quantize", "{A}/model.h5", "--calibration", "{A}/cal.npy", "-o"], "q.h5"),
    "export": (["export", "{A}/q.h5", "--data", "{A}/cal.npy", "-o"], "m.tflite"),
    "export-onnx": (["export", "{A}/model.h5", "-o"], "m.onnx"),
}
WRITE_CASES = [(cmd, how) for how in ("read-only", "full-disk", "file-size-limit")
               for cmd in WRITE_COMMANDS]
DEFAULT_WRITE_CASES = {("convert", "read-only"), ("quantize", "full-disk"),
                       ("export", "file-size-limit"), ("convert", "file-size-limit")}


@pytest.mark.parametrize("cmd,how", [
    pytest.param(c, h, marks=() if (c, h) in DEFAULT_WRITE_CASES else pytest.mark.slow)
    for c, h in WRITE_CASES], ids=[f"{c}-{h}" for c, h in WRITE_CASES])
def test_write_error_is_one_line_and_leaves_nothing(cmd, how, assets, tmp_path):
    """A read-only file system, a full disk (a tiny tmpfs filled to the last byte) and a
    file-size limit (RLIMIT_FSIZE with SIGXFSZ ignored: writes fail with EFBIG): exit 2,
    one ``kerasq: error:`` line, no partial output, no temporary left behind."""
    out_dir = str(tmp_path / "out")
    preexec = None
    mounted = False
    if how == "read-only":
        _mount_tmpfs(out_dir, "ro,size=1m")
        mounted = True
    elif how == "full-disk":
        _mount_tmpfs(out_dir, "size=64k")
        mounted = True
        _fill(out_dir)
    else:
        os.makedirs(out_dir)
        preexec = _limit_file_size
    try:
        before = hc.snapshot(out_dir)
        argv, name = WRITE_COMMANDS[cmd]
        args = [a.replace("{A}", assets) for a in argv] + [os.path.join(out_dir, name)]
        env = dict(_env(), PYTHONDONTWRITEBYTECODE="1")
        proc = subprocess.run([sys.executable, "-m", "kerasq", *args], capture_output=True,
                              text=True, timeout=300, env=env, cwd=str(tmp_path),
                              preexec_fn=preexec)
        after = hc.snapshot(out_dir)
    finally:
        if mounted:
            subprocess.run(["umount", "-l", out_dir], capture_output=True)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("kerasq: error:")]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(errors) == 1 and errors == lines[-1:], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert name in errors[0], errors[0]
    assert after == before, sorted(set(after) ^ set(before))
