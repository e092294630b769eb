"""``kerasq inspect --sparsity`` on a pruned float model and on a pruned quantized model;
reference: numpy counts of exact zeros in the kernels of the saved file."""

from __future__ import annotations

import h5py
import numpy as np

import kerasq
from kerasq.cli import main
from kerasq.prune import ConstantSparsity, prune_model, strip


def _kernel_zeros_in_h5(path):
    """(zeros, count) over every dataset named like a kernel in the .h5 weights."""
    zeros = total = 0
    with h5py.File(path, "r") as f:

        def visit(name, obj):
            nonlocal zeros, total
            leaf = name.split("/")[-1]
            if isinstance(obj, h5py.Dataset) and leaf.split(":")[0] in (
                "kernel",
                "depthwise_kernel",
                "pointwise_kernel",
            ):
                value = obj[()]
                zeros += int(np.count_nonzero(value == 0))
                total += int(value.size)

        f["model_weights"].visititems(visit)
    return zeros, total


def test_inspect_sparsity_float_and_quantized(helpers, tmp_path, capsys):
    sparse = strip(prune_model(helpers.small_model(), ConstantSparsity(0.6, 0)))
    float_path = str(tmp_path / "sparse.h5")
    sparse.save(float_path)
    qmodel = kerasq.quantize_model(sparse)
    q_path = str(tmp_path / "sparse_q.h5")
    qmodel.save(q_path)
    for path in (float_path, q_path):
        assert main(["inspect", path, "--sparsity"]) == 0
        out = capsys.readouterr().out
        zeros, total = _kernel_zeros_in_h5(path)
        assert f"Total Sparsity (zero_weights/count) =  ({zeros}/{total}) " in out
        assert "Num Params(4), Sparsity (zero_weights/count):" in out
    assert "quantized 0.6" in out  # the fake-quantized kernels keep the zeros
