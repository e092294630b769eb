"""Round trips: converted and quantized models through .h5, SavedModel and .keras give
identical outputs; seeded stochastic rounding is reproducible across runs and threads.

References: the converted net is first checked against real BVLC Caffe outputs (the
golden corpus); the reloaded models must then reproduce the in-memory model bit for bit.
Stochastic rounding is checked against its definition (floor or ceil of x·2^fl, unbiased)
and for identical bits in separate processes with different TF thread settings.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from conftest import shared_path

WORKER = pathlib.Path(__file__).with_name("seeded_worker.py")
CONVERTED_CASES = [
    "cifar10_quick",
    "lrn_across",
    pytest.param("resnet_block", marks=pytest.mark.slow),
]


def _golden(case: str):
    root = shared_path("caffe-golden", case)
    x = np.load(root / "input.npy", allow_pickle=False)
    return root, x


def _nhwc(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if x.ndim == 4 else x


def _outputs(model, x: np.ndarray):
    out = model(x, training=False)
    out = out if isinstance(out, (list, tuple)) else [out]
    return [np.asarray(o) for o in out]


def _save_all(model, tmp: pathlib.Path, formats=("h5", "savedmodel", "keras")):
    paths = {}
    if "h5" in formats:
        paths["h5"] = tmp / "model.h5"
        model.save(paths["h5"], save_format="h5")
    if "savedmodel" in formats:
        paths["savedmodel"] = tmp / "savedmodel"
        model.save(paths["savedmodel"], save_format="tf")
    if "keras" in formats:
        paths["keras"] = tmp / "model.keras"
        model.save(paths["keras"])
    return paths


@pytest.mark.parametrize("case", CONVERTED_CASES)
def test_converted_model_round_trips_bit_exact(tmp_path, case):
    from kerasq.converters import caffe

    import kerasq
    from kerasq._compat import keras

    root, x = _golden(case)
    model = caffe.load(root / "deploy.prototxt", root / "model.caffemodel")
    before = _outputs(model, _nhwc(x))
    # The converted model itself against real Caffe (independent reference).
    top = model.output_names[0]
    want = np.load(root / "blobs" / f"{top}.npy", allow_pickle=False)
    np.testing.assert_allclose(before[0], _nhwc(want), rtol=1e-4, atol=1e-5)

    paths = _save_all(model, tmp_path)
    reloaded = {
        "h5": kerasq.load_model(paths["h5"]),
        "savedmodel": kerasq.load_model(paths["savedmodel"]),
        # .keras with Keras' safe mode ON (the default): kerasq layers need no unsafe code.
        "keras": keras.models.load_model(
            paths["keras"], custom_objects=caffe.custom_objects(), safe_mode=True
        ),
    }
    for fmt, again in reloaded.items():
        assert [type(layer).__name__ for layer in again.layers] == [
            type(layer).__name__ for layer in model.layers
        ], fmt
        for a, b in zip(before, _outputs(again, _nhwc(x))):
            np.testing.assert_array_equal(b, a, err_msg=f"{case} via {fmt}")


def test_quantized_model_round_trips_bit_exact(tmp_path):
    """A converted + calibrated DFP model (tfmot wrappers): .h5 and SavedModel reload with
    identical outputs and identical quantizer state. (tfmot QAT models do not reload from
    .keras, see docs/reliability.md.)"""
    from kerasq.converters import caffe

    import kerasq

    root, x = _golden("cifar10_quick")
    model = caffe.load(root / "deploy.prototxt", root / "model.caffemodel")
    qmodel = kerasq.quantize_model(model, kerasq.QuantizationConfig(bitwidth_weights=6))
    kerasq.calibrate(qmodel, _nhwc(x), batch_size=2)
    before = _outputs(qmodel, _nhwc(x))
    assert not np.allclose(before[0], _outputs(model, _nhwc(x))[0], atol=1e-7), \
        "quantization must change the outputs (else the round trip proves little)"
    state = {v.name: v.numpy() for v in qmodel.variables}
    paths = _save_all(qmodel, tmp_path, formats=("h5", "savedmodel"))
    for fmt, path in paths.items():
        again = kerasq.load_model(path)
        for a, b in zip(before, _outputs(again, _nhwc(x))):
            np.testing.assert_array_equal(b, a, err_msg=fmt)
        reloaded_state = {v.name: v.numpy() for v in again.variables}
        for name, value in state.items():
            if name in reloaded_state:
                np.testing.assert_array_equal(reloaded_state[name], value, err_msg=name)
        frac_bits = [k for k in reloaded_state if "frac_bits" in k]
        assert frac_bits, "quantizer state must be saved"


def test_stochastic_rounding_matches_its_definition():
    """Each value rounds to floor or ceil of x·2^fl, unbiased on average (spec, numpy)."""
    from kerasq import numerics
    from kerasq._compat import tf

    x = np.random.default_rng(3).uniform(-3, 3, 100_000).astype(np.float32)
    fl = 5
    y = np.asarray(numerics.dfp_quantize(tf.constant(x), 8, fl, rounding="stochastic", seed=11))
    scaled = x.astype(np.float64) * 2**fl
    q = y.astype(np.float64) * 2**fl
    assert np.all((q == np.floor(scaled)) | (q == np.ceil(scaled)))
    frac = scaled - np.floor(scaled)
    up = q == np.ceil(scaled)
    # P(up) = frac: compare the mean with the expectation (5 sigma bound).
    sigma = np.sqrt(np.sum(frac * (1 - frac))) / len(x)
    assert abs(up.mean() - frac.mean()) < 5 * sigma + 1e-12


def _run_seeded(tmp: pathlib.Path, intra: int, inter: int) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(tmp / f"seeded_{intra}_{inter}.npz"), str(intra),
         str(inter)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def test_seeded_stochastic_rounding_reproducible_across_runs_and_threads(tmp_path):
    configs = [(1, 1), (2, 2)]
    procs = [_run_seeded(tmp_path, *c) for c in configs]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
    results = []
    for intra, inter in configs:
        with np.load(tmp_path / f"seeded_{intra}_{inter}.npz", allow_pickle=False) as data:
            results.append({k: data[k] for k in data.files})
    first, second = results
    assert sorted(first) == sorted(second)
    assert {"tf", "numpy"} <= set(first) and any(k.startswith("qat/") for k in first)
    for key in first:
        np.testing.assert_array_equal(second[key], first[key], err_msg=key)
    # Stochastic, not nearest: some values round away from the nearest grid point.
    x = np.random.default_rng(7).standard_normal(200_000).astype(np.float32)
    nearest = np.clip(np.round(x * 32), -128, 127) / 32
    assert np.mean(first["tf"] != nearest) > 0.1


def test_quantized_model_from_keras_format_is_a_clean_error(tmp_path):
    """tfmot wrappers save to .keras but do not restore from it (their quantizer variables
    are not rebuilt before loading): kerasq.load_model reports that as one line naming the
    file instead of a traceback. Use .h5 or SavedModel for quantized models."""
    import kerasq
    from kerasq._compat import keras
    from kerasq.errors import ModelFormatError

    inp = keras.Input((4,))
    qmodel = kerasq.quantize_model(keras.Model(inp, keras.layers.Dense(3)(inp)))
    kerasq.calibrate(qmodel, np.random.default_rng(0).random((8, 4), dtype=np.float32))
    path = tmp_path / "q.keras"
    qmodel.save(path)
    try:
        again = kerasq.load_model(path)
    except ModelFormatError as err:
        assert str(path) in str(err) and "\n" not in str(err)
    else:  # a future tfmot restoring .keras: then it must be exact
        x = np.random.default_rng(1).random((2, 4), dtype=np.float32)
        np.testing.assert_array_equal(again(x).numpy(), qmodel(x).numpy())
