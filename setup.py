"""Packaging for kerasq.

``converters/`` is installed as ``kerasq.converters`` through ``package_dir`` (never as
a top-level ``converters`` package). The optional C++ ops are compiled by the
``build_ext`` command in ``kerasq/ops/_build_ext.py`` (see the README, "Building the ops").
"""

import importlib.util
import os

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))
_BUILD_HELPER = os.path.join(HERE, "kerasq", "ops", "_build_ext.py")

cmdclass, ext_modules = {}, []
if os.path.exists(_BUILD_HELPER):  # optional: no compiler or no TF leaves a pure-Python install
    _spec = importlib.util.spec_from_file_location("_kerasq_build_ext", _BUILD_HELPER)
    _build = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_build)
    cmdclass, ext_modules = _build.cmdclass, _build.ext_modules

INSTALL_REQUIRES = [
    "tensorflow==2.21.0",
    "tf-keras==2.21.0",
    "tensorflow-model-optimization==0.8.1",
    "numpy==2.4.6",
    "protobuf>=7.35,<8",
    "absl-py>=1.2,<2",
    "scikit-learn==1.9.1",  # ships the real handwritten digits used by `kerasq demo`
    "ai-edge-litert==2.3.0",  # the TFLite interpreter that verifies every export
]

TEST_REQUIRES = [
    "pytest>=8",
    "opencv-python-headless==4.14.0.94",
    "grpcio-tools==1.85.1",
    "hypothesis>=6.100",
    # lint steps of .ci/run (layering contract, pyflakes rules, types of numerics/ops/errors)
    "import-linter==2.17",
    "ruff==0.17.6",
    "mypy==2.4.1",
    "onnx==1.23.2",
    "onnxruntime==1.32.0",
    "tf2onnx==1.17.0",
    "jax==0.10.2",  # tests/keras3 runs the Keras 3 path on the JAX backend too
]
REPORT_REQUIRES = ["matplotlib==3.11.2"]  # plots of `kerasq inspect --report report.html`

# ONNX export (kerasq.export.to_onnx, `-o model.onnx`): optional, `pip install .[onnx]`
ONNX_REQUIRES = ["tf2onnx==1.17.0", "onnx>=1.14", "onnxruntime>=1.17"]  # runtime: verification

kerasq_packages = [p for p in find_packages(include=["kerasq", "kerasq.*"])]
converter_packages = [
    "kerasq." + p for p in find_packages(include=["converters", "converters.*"])
]

with open(os.path.join(HERE, "README.md"), encoding="utf-8") as f:
    long_description = f.read()

setup(
    name="kerasq",
    version="0.1.0",
    description=(
        "Caffe import, Caffe-style quantization (dynamic fixed point, minifloat, pow2), "
        "sparsity and TFLite export for Keras"
    ),
    long_description=long_description,
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=kerasq_packages + converter_packages,
    package_dir={"kerasq": "kerasq", "kerasq.converters": "converters"},
    package_data={
        "kerasq": ["py.typed", "ops/cc/**/*", "data/*"],
        "kerasq.converters.caffe": ["proto/*.proto"],
    },
    include_package_data=False,
    install_requires=INSTALL_REQUIRES,
    extras_require={"report": REPORT_REQUIRES, "onnx": ONNX_REQUIRES,
                    "test": TEST_REQUIRES + REPORT_REQUIRES},
    entry_points={"console_scripts": ["kerasq=kerasq.cli:entry_point"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    zip_safe=False,
)
