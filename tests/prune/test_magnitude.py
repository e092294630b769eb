"""Magnitude masks against independent references: tfmot's own pruning wrapper (per-tensor
top-k) and a literal float32 loop transcription of caffe-jacinto's channel-wise threshold
search (quant-schemes.md §6.2, ``Net::FindAndApplyChannelThresholdNet``)."""

from __future__ import annotations

import numpy as np
import pytest

from kerasq._compat import keras, tfmot
from kerasq.prune.magnitude import (
    CHANNELS_DEPTHWISE,
    CHANNELS_LAST,
    CHANNELS_TRANSPOSED,
    channel_matrix,
    from_channel_matrix,
    jacinto_channel_mask,
    jacinto_channel_threshold,
    magnitude_mask,
)


@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.8])
def test_magnitude_mask_equals_tfmot_prune_low_magnitude(sparsity):
    sparsity_api = tfmot().sparsity.keras
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            sparsity_api.prune_low_magnitude(
                keras.layers.Dense(24, input_shape=(20,)),
                pruning_schedule=sparsity_api.ConstantSparsity(sparsity, 0, frequency=1),
            )
        ]
    )
    kernel_before = model.layers[0].layer.kernel.numpy().copy()
    model.compile(keras.optimizers.SGD(0.0), "mse")
    x = np.ones((4, 20), np.float32)
    model.fit(
        x,
        np.zeros((4, 24), np.float32),
        epochs=1,
        verbose=0,
        callbacks=[sparsity_api.UpdatePruningStep()],
    )
    tfmot_mask = [w for w in model.layers[0].weights if "mask" in w.name][0].numpy()
    ours = magnitude_mask(kernel_before, sparsity)
    np.testing.assert_array_equal(ours, tfmot_mask)
    assert abs((ours == 0).mean() - sparsity) < 1.0 / kernel_before.size + 1e-9


def test_magnitude_mask_keeps_ties_and_at_least_one():
    w = np.array([0.5, -0.5, 0.1, 0.5, 0.2], np.float32)
    np.testing.assert_array_equal(magnitude_mask(w, 0.6), [1, 1, 0, 1, 0])  # k=2, tie -> 3 kept
    np.testing.assert_array_equal(magnitude_mask(w, 1.0), [1, 1, 0, 1, 0])  # keep >= 1 (ties)


def reference_channel_threshold(row, fraction, maxratio, value_max, step_factor):
    """Literal transcription of the per-channel loop, all scalars float32 as in the C++."""
    f = np.float32
    row = row.astype(np.float32)
    count = row.size
    max_abs_value = max(abs(f(row.max())), abs(f(row.min())))
    step_size = f(max_abs_value * f(step_factor))
    max_threshold_value = min(min(f(value_max), f(max_abs_value * f(maxratio))), max_abs_value)
    selected = f(0)
    granularity = f(1000)
    search_iter = 0
    while granularity >= 1:
        step_x = f(step_size * granularity)
        range_x = f(f(step_x * f(10)) * f(2))
        start = selected
        min_step = max(f(start - range_x), f(0)) if search_iter > 0 else f(0)
        max_step = f(start + range_x) if search_iter > 0 else max_threshold_value
        step = f(min_step)
        while step < max_step and step < max_threshold_value:
            zcount = f(np.count_nonzero(np.abs(row) <= step))
            if f(zcount / f(count)) <= f(fraction):
                selected = step
            else:
                break
            step = f(step + step_x)
        granularity = f(granularity / f(10))
        search_iter += 1
    return float(selected)


@pytest.mark.parametrize(
    "fraction,maxratio,value_max,step_factor",
    [
        (0.6, 0.2, 0.2, 1e-7),  # caffe-jacinto solver defaults
        (0.3, 1.0, 1.0, 1e-6),
        (0.8, 0.5, 0.05, 1e-6),
        (0.95, 1.0, 10.0, 1e-5),
    ],
)
def test_jacinto_channel_threshold_matches_loop_reference(
    fraction, maxratio, value_max, step_factor
):
    rng = np.random.default_rng(7)
    for n in (9, 27, 144):
        for scale in (0.01, 0.3, 2.0):
            row = (rng.standard_normal(n) * scale).astype(np.float32)
            row[rng.random(n) < 0.2] = 0.0
            expected = reference_channel_threshold(row, fraction, maxratio, value_max, step_factor)
            got = jacinto_channel_threshold(
                row, fraction, maxratio=maxratio, value_max=value_max, step_factor=step_factor
            )
            assert got == expected, (n, scale)
            if got > 0:  # the defining property: fraction of |w| <= t within the target
                assert np.mean(np.abs(row) <= got) <= fraction + 1e-7


def test_jacinto_channel_threshold_all_zero_channel():
    assert jacinto_channel_threshold(np.zeros(27, np.float32), 0.8) == 0.0


@pytest.mark.parametrize(
    "shape,layout",
    [
        ((3, 3, 4, 6), CHANNELS_LAST),
        ((5, 7), CHANNELS_LAST),
        ((3, 3, 6, 4), CHANNELS_TRANSPOSED),
        ((3, 3, 4, 2), CHANNELS_DEPTHWISE),
    ],
)
def test_channel_matrix_rows_are_output_channels(shape, layout):
    w = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    rows = channel_matrix(w, layout)
    if layout == CHANNELS_LAST:
        expected = [w[..., c].reshape(-1) for c in range(shape[-1])]
    elif layout == CHANNELS_TRANSPOSED:
        expected = [w[..., c, :].reshape(-1) for c in range(shape[-2])]
    else:  # Keras depthwise output channel index = in * multiplier + m
        expected = [w[:, :, i, m].reshape(-1) for i in range(shape[-2]) for m in range(shape[-1])]
    for c, row in enumerate(expected):
        np.testing.assert_array_equal(np.sort(rows[c]), np.sort(row))
    np.testing.assert_array_equal(from_channel_matrix(rows, shape, layout), w)


def test_jacinto_channel_mask_thresholds_each_output_channel_independently():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((3, 3, 16, 4)).astype(np.float32)
    w[..., 2] *= 100.0  # a large channel must not dominate the others' thresholds
    mask = jacinto_channel_mask(w, 0.5, maxratio=1.0, value_max=1e9, step_factor=1e-6)
    for c in range(4):
        row = w[..., c].reshape(-1)
        t = reference_channel_threshold(row, 0.5, 1.0, 1e9, 1e-6)
        np.testing.assert_array_equal(
            mask[..., c].reshape(-1), (np.abs(row) > t).astype(np.float32)
        )
        assert 0.4 < (mask[..., c] == 0).mean() <= 0.5
