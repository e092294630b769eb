"""Every Caffe layer test that checks ``forward()`` against an independent reference (the
numpy Caffe transcription ``caffe_reference.py``, OpenCV's Caffe importer, the SSD loop
transcription), run again with ``forward(..., keras=3)``: the Keras 3 rebuild must meet
the same references at the same tolerance.

The tests are the tf_keras suite's own functions (collected here by name, not copied);
an autouse fixture makes ``kerasq.converters.caffe.forward`` (and ``load``, for the
load-based tests listed in LOAD_TESTS) build Keras 3 models and
checks that each test really ran a Keras 3 model.

The same tests run on Keras 3's JAX backend (``KERAS_BACKEND=jax``, in one subprocess
started by ``test_keras3_jax.py``); there the tests whose net ends in SSD's
DetectionOutput (TensorFlow only, see ``tensorflow_only_reason``) check its refusal
instead, and ``keras3_jax_checks.py`` compares the rest of those nets with OpenCV.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import pathlib
import sys

import pytest

from kerasq._compat import keras3 as _keras3

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

MODULES = (
    "test_layers_activations",
    "test_layers_basic",
    "test_layers_shape",
    "test_layers_norm_resize",
    "test_layers_variants",
    "test_layers_layout_chains",
    "test_layers_dynamic",  # its load()-based test is in LOAD_TESTS
    "test_ssd",
)
# tests of tf_keras specifics (the built layer types, .h5 files, the lowering's own
# errors) rather than of the computed numbers
NOT_NUMERIC = ("load(", "keras.", "raises(")
# load()-based tests that only call the model and compare numbers
LOAD_TESTS = {"test_layers_dynamic": {"test_spatially_dynamic_model_matches_reference_at_several_sizes"}}


def _forward_tests():
    found = {}
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except pytest.skip.Exception:  # e.g. OpenCV absent: that module's tests skip too
            continue
        for attr, fn in vars(module).items():
            if not attr.startswith("test_") or not inspect.isfunction(fn):
                continue
            params = set(inspect.signature(fn).parameters)
            for mark in getattr(fn, "pytestmark", []):
                if mark.name == "parametrize":
                    names = mark.args[0]
                    names = names.split(",") if isinstance(names, str) else names
                    params -= {n.strip() for n in names}
            if params - {"tmp_path"}:
                continue  # needs a fixture of its own module (e.g. a real net built once)
            source = inspect.getsource(fn)
            uses_forward = any(k in source for k in ("check_net(", "forward(", "_compare_net("))
            numeric = uses_forward and not any(k in source for k in NOT_NUMERIC)
            if numeric or attr in LOAD_TESTS.get(name, ()):
                found[f"{attr}__{name[len('test_'):]}"] = fn
    return found


FORWARD_TESTS = _forward_tests()
# the tests whose nets hold a TensorFlow-only converter layer (SSD's DetectionOutput)
TENSORFLOW_ONLY_TESTS = {
    "test_small_ssd_matches_opencv_on_every_top__ssd",
    "test_no_detection_gives_caffe_placeholder_rows__ssd",
    "test_yufacedetectnet_detections_match_opencv__ssd",
    "test_detection_output_matches_caffe_loop_reference__ssd",
}
ON_JAX = _keras3().backend.backend() == "jax"


def _refused_on_jax(fn):
    """On JAX: ``fn``'s net must be refused, naming DetectionOutput, the backend and why."""

    @functools.wraps(fn)
    def test(*args, **kwargs):
        from kerasq.errors import UnsupportedLayerError

        with pytest.raises(UnsupportedLayerError, match=r"CaffeDetectionOutput.*"
                           r"KERAS_BACKEND=jax.*data-dependent shape"):  # fmt: skip
            fn(*args, **kwargs)

    return test


globals().update({
    name.replace("test_", "test_keras3_", 1):
        _refused_on_jax(fn) if ON_JAX and name in TENSORFLOW_ONLY_TESTS else fn
    for name, fn in FORWARD_TESTS.items()
})  # fmt: skip


@pytest.fixture(autouse=True)
def keras3_forward(monkeypatch):
    """``forward`` and ``load`` convert with ``keras=3``; the test must have built a Keras 3
    model."""
    from kerasq.converters import caffe
    from kerasq.converters.caffe import api
    from kerasq.converters.caffe.keras3 import keras3

    built = []
    real = api._as_requested

    def as_requested(model, *args):
        try:
            result = real(model, *args)
        except Exception:
            built.append(ON_JAX)  # on JAX: the refusal _refused_on_jax checks
            raise
        built.append(isinstance(result, keras3().Model))
        return result

    def keras3_version_of(fn):
        def call(*args, **kwargs):
            kwargs.setdefault("keras", 3)
            return fn(*args, **kwargs)

        return call

    monkeypatch.setattr(api, "_as_requested", as_requested)
    monkeypatch.setattr(caffe, "forward", keras3_version_of(api.forward))
    monkeypatch.setattr(caffe, "load", keras3_version_of(api.load))
    yield
    assert built and all(built), "the test did not run a Keras 3 model"


def test_the_forward_tests_were_found(tmp_path):
    """The selection is not empty and covers the layer families (guards renames)."""
    import numpy as np
    from netbuilder import NetBuilder, check_net

    modules = {name.split("__")[1] for name in FORWARD_TESTS}
    assert modules >= {"layers_activations", "layers_shape", "layers_norm_resize", "ssd"}
    assert len(FORWARD_TESTS) >= 40, sorted(FORWARD_TESTS)
    assert TENSORFLOW_ONLY_TESTS <= set(FORWARD_TESTS)
    nb = NetBuilder("tiny")  # and one net through the fixture's Keras 3 check
    nb.add("AbsVal", [nb.input("data", (1, 2, 3, 3))])
    check_net(nb, tmp_path, {"data": -np.ones((1, 2, 3, 3), np.float32)})
