"""Benchmark: convert big synthetic VGG-style caffemodels; report time and peak memory.

For each size a streaming generator (tools/make_large_caffemodel.py) writes the net into a
temporary directory; a fresh process imports TensorFlow + kerasq, records its peak
resident memory so far (the baseline), converts with ``kerasq.converters.caffe.load`` (progress callback
counted, progress logged), runs one inference and reports its peak RSS (VmHWM). The
figure of merit is (peak - baseline) / file size: memory the conversion itself needed.

Usage:
    python benchmarks/large_caffemodel.py --size-mb 150 1024 2200 [--keep DIR]

Example output row:
    | 1024 MiB | 26.1 s | 1.95 GiB | 1.95x | baseline 0.55 GiB |
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _generator():
    spec = importlib.util.spec_from_file_location(
        "make_large_caffemodel", ROOT / "tools" / "make_large_caffemodel.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _peak_rss_kib() -> int:
    """Peak RSS of this process image in KiB: Linux VmHWM (reset by exec; ``ru_maxrss``
    is not: it keeps the RSS the parent had when it forked us), else ``ru_maxrss``."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def probe(prototxt: str, caffemodel: str, output: Optional[str]) -> Dict[str, Any]:
    """Runs INSIDE the measured process: convert, infer once, report memory (KiB)."""
    import logging

    import numpy as np
    from kerasq.converters import caffe

    from kerasq._compat import keras, tf  # noqa: F401  (baseline includes TensorFlow)

    logging.basicConfig(level=logging.WARNING)
    baseline = _peak_rss_kib()
    calls: List[int] = []

    def progress(index: int, total: int, name: str) -> None:
        calls.append(index)
        print(f"[{index}/{total}] {name}", file=sys.stderr, flush=True)

    start = time.perf_counter()
    model = caffe.load(prototxt, caffemodel, progress=progress)
    seconds = time.perf_counter() - start
    converted_peak = _peak_rss_kib()
    x = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype(np.float32)
    y = np.asarray(model(x, training=False))
    if output:
        np.save(output, y)
    return {
        "baseline_kib": baseline,
        "peak_kib": converted_peak,
        "seconds": seconds,
        "progress_calls": len(calls),
        "layers": len(model.layers),
        "params": int(model.count_params()),
    }


def measure(prototxt: str, caffemodel: str, output: Optional[str] = None,
            timeout: float = 1800) -> Dict[str, Any]:
    """Run :func:`probe` in a fresh process; returns its report plus the file size."""
    cmd = [sys.executable, str(pathlib.Path(__file__).resolve()), "--probe", prototxt,
           caffemodel, output or ""]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=os.pathsep.join([str(ROOT)] + sys.path))
    proc = subprocess.run(
        cmd, check=False, capture_output=True, text=True, timeout=timeout, env=env
    )
    if proc.returncode != 0:
        raise RuntimeError(f"conversion failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    report["file_bytes"] = os.path.getsize(caffemodel)
    report["stderr"] = proc.stderr
    report["ratio"] = (report["peak_kib"] - report["baseline_kib"]) * 1024 / report["file_bytes"]
    return report


def run(sizes_mb: Sequence[float], keep: Optional[str] = None) -> List[Dict[str, Any]]:
    gen = _generator()
    rows = []
    for size in sizes_mb:
        work = keep or tempfile.mkdtemp(prefix="kerasq_large_")
        try:
            need = 1.2 * size * 2**20
            if shutil.disk_usage(work).free < need:
                print(f"skip {size} MiB: not enough free disk in {work}")
                continue
            paths = gen.write_vgg_caffemodel(os.path.join(work, f"vgg_{int(size)}"),
                                             int(size * 2**20))
            report = measure(paths["prototxt"], paths["caffemodel"])
            rows.append(report)
            print(f"| {report['file_bytes'] / 2**20:.0f} MiB | {report['seconds']:.1f} s "
                  f"| {(report['peak_kib'] - report['baseline_kib']) / 2**20:.2f} GiB "
                  f"| {report['ratio']:.2f}x | baseline {report['baseline_kib'] / 2**20:.2f} GiB |",
                  flush=True)
        finally:
            if keep is None:
                shutil.rmtree(work, ignore_errors=True)
    return rows


def main(argv: Sequence[str]) -> int:
    if argv and argv[0] == "--probe":
        print(json.dumps(probe(argv[1], argv[2], argv[3] or None)))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=float, nargs="+", default=[150.0, 1024.0])
    parser.add_argument("--keep", help="directory to keep the generated files in")
    args = parser.parse_args(argv)
    print("| caffemodel | convert time | peak RSS over baseline | ratio to file size | |")
    print("|---|---|---|---|---|")
    run(args.size_mb, args.keep)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
