"""Build of the optional C++ ops (``kerasq/ops/_kerasq_ops.so``) for setup.py.

setup.py loads this file by path and takes :data:`cmdclass` and :data:`ext_modules`.
The extension is compiled with plain g++ and TensorFlow's own flags, exactly like
tensorflow/custom-op's Makefile::

    g++ -std=c++17 -O3 -fPIC -shared <SOURCES> $(tf.sysconfig compile flags) \
        -o kerasq/ops/_kerasq_ops.so $(tf.sysconfig link flags)

plus ``-mavx2 -mfma`` when the build machine has AVX2 (recorded in
``_kerasq_ops.json`` beside the library; the loader refuses the library on a CPU
without those features). Any failure (no compiler, no TensorFlow, a compile error)
is logged as a warning and the install continues without the ops: kerasq then uses
its pure-TF fallback. ``KERASQ_BUILD_OPS=0`` skips the build, ``KERASQ_OPS_PORTABLE=1``
drops the ISA flags, ``CXX`` picks the compiler.

Dev build in place (the editable install picks it up)::

    python setup.py build_ext --inplace

The same :data:`SOURCES` and :data:`CXXFLAGS` are used by the Bazel ``BUILD`` file
(``tools/lint_bazel.py`` checks that they agree).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from typing import List

from setuptools import Extension
from setuptools.command.build_ext import build_ext

log = logging.getLogger("kerasq.ops.build")

HERE = os.path.dirname(os.path.abspath(__file__))
EXT_NAME = "kerasq.ops._kerasq_ops"
LIBRARY = "_kerasq_ops.so"
BUILD_INFO = "_kerasq_ops.json"

# Paths relative to kerasq/ops/. Keep in step with BUILD (checked by tools/lint_bazel.py).
SOURCES = [
    "cc/clip_mask.cc",
    "cc/fake_quant_dfp.cc",
    "cc/fake_quant_minifloat.cc",
    "cc/int_depthwise.cc",
    "cc/int_gemm.cc",
    "cc/integer_ops.cc",
    "cc/range_minmax.cc",
    "cc/variable_snapshot.cc",
]
HEADERS = [
    "cc/clip_mask.h",
    "cc/counter_rng.h",
    "cc/float_bits.h",
    "cc/int_depthwise.h",
    "cc/int_gemm.h",
    "cc/lru_slot.h",
    "cc/requantize.h",
    "cc/rounding.h",
]
# -fno-trapping-math lets the compiler if-convert (vectorize) the element loops; it changes
# no value (unlike -ffast-math). -ffp-contract=off: no FMA contraction, results stay exact.
CXXFLAGS = ["-std=c++17", "-O3", "-fPIC", "-ffp-contract=off", "-fno-trapping-math",
            "-Wno-deprecated-declarations"]
ISA_FLAGS = ["-mavx2", "-mfma"]  # only when the build CPU has them (see _isa_flags)
# ... and, when it also has AVX-512, 512-bit element loops (the loader refuses the library
# on a CPU without these features; KERASQ_OPS_PORTABLE=1 builds without any of them).
AVX512_FLAGS = ["-mavx512f", "-mavx512dq", "-mavx512bw", "-mavx512vl",
                "-mprefer-vector-width=512"]
LDFLAGS = ["-shared"]


def _cpu_flags() -> set:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _isa_flags() -> List[str]:
    if os.environ.get("KERASQ_OPS_PORTABLE") == "1":
        return []
    import platform

    if platform.machine() not in ("x86_64", "AMD64"):
        return []
    flags = _cpu_flags()
    if not {"avx2", "fma"} <= flags:
        return []
    if {"avx512f", "avx512dq", "avx512bw", "avx512vl"} <= flags:
        return list(ISA_FLAGS) + list(AVX512_FLAGS)
    return list(ISA_FLAGS)


def _tf_flags() -> tuple:
    """(compile flags, link flags, version) of the TensorFlow importable in a subprocess."""
    code = (
        "import json, tensorflow as tf; print(json.dumps([tf.sysconfig.get_compile_flags(),"
        " tf.sysconfig.get_link_flags(), tf.__version__]))"
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env
    ).stdout
    cflags, lflags, version = json.loads(out.strip().splitlines()[-1])
    return cflags, lflags, version


def compile_library(out_dir: str, source_dir: str = HERE) -> str:
    """Compile :data:`SOURCES` into ``out_dir/_kerasq_ops.so``; returns its path.

    Raises ``RuntimeError`` (with the compiler output) or ``OSError`` on failure.
    The library and its build-info JSON are written to temporaries and renamed, so
    a failed build never leaves a partial file.
    """
    cxx = os.environ.get("CXX", "g++")
    if shutil.which(cxx) is None:
        raise RuntimeError(f"C++ compiler {cxx!r} not found")
    cflags, lflags, tf_version = _tf_flags()
    isa = _isa_flags()
    os.makedirs(out_dir, exist_ok=True)
    target = os.path.join(out_dir, LIBRARY)
    tmp = target + ".tmp"
    cmd = (
        [cxx]
        + CXXFLAGS
        + isa
        + [os.path.join(source_dir, s) for s in SOURCES]
        + ["-I" + os.path.join(source_dir, "cc")]
        + cflags
        + LDFLAGS
        + ["-o", tmp]
        + lflags
    )
    log.info("compiling kerasq ops: %s", " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise RuntimeError(f"{cxx} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    info = {"tf_version": tf_version, "isa_flags": isa, "cxxflags": CXXFLAGS, "sources": SOURCES}
    with open(os.path.join(out_dir, BUILD_INFO + ".tmp"), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=1)
    os.replace(tmp, target)
    os.replace(os.path.join(out_dir, BUILD_INFO + ".tmp"), os.path.join(out_dir, BUILD_INFO))
    return target


class BuildKerasqOps(build_ext):
    """``build_ext`` that compiles the TF custom ops with g++ and never fails the install."""

    def get_ext_filename(self, fullname: str) -> str:
        if fullname == EXT_NAME:
            return os.path.join("kerasq", "ops", LIBRARY)
        return super().get_ext_filename(fullname)

    def get_outputs(self) -> List[str]:
        # Only what was really built: a skipped build must not break install/bdist_wheel.
        outputs = []
        for path in super().get_outputs():
            if os.path.exists(path):
                outputs.append(path)
                info = os.path.join(os.path.dirname(path), BUILD_INFO)
                if os.path.basename(path) == LIBRARY and os.path.exists(info):
                    outputs.append(info)
        return outputs

    def copy_extensions_to_source(self) -> None:
        # --inplace copies the library only; its build record must travel with it (the
        # loader checks the ISA flags in it).
        super().copy_extensions_to_source()
        info = os.path.join(self.build_lib, "kerasq", "ops", BUILD_INFO)
        if os.path.exists(info):
            shutil.copyfile(info, os.path.join(HERE, BUILD_INFO))

    def build_extension(self, ext: Extension) -> None:
        if ext.name != EXT_NAME:
            return super().build_extension(ext)
        if os.environ.get("KERASQ_BUILD_OPS") == "0":
            log.warning("KERASQ_BUILD_OPS=0: skipping the kerasq C++ ops (pure-TF fallback)")
            return None
        out_dir = os.path.dirname(self.get_ext_fullpath(ext.name))
        try:
            path = compile_library(out_dir)
            print(f"kerasq: built {path}", file=sys.stderr)
        except Exception as exc:  # noqa: BLE001 - the install must succeed without the ops
            msg = f"kerasq: WARNING: C++ ops not built, the pure-TF fallback will be used: {exc}"
            log.warning(msg)
            print(msg, file=sys.stderr)
        return None


ext_modules = [
    Extension(
        EXT_NAME,
        sources=[os.path.join("kerasq", "ops", s) for s in SOURCES],
        depends=[os.path.join("kerasq", "ops", h) for h in HEADERS],
    )
]
cmdclass = {"build_ext": BuildKerasqOps}

if __name__ == "__main__":  # python kerasq/ops/_build_ext.py  -> build in place
    logging.basicConfig(level=logging.INFO)
    print(compile_library(HERE))
