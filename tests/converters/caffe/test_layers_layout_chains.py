"""Random chains of layout-changing and axis-addressing layers (seeded, deterministic).

Each chain applies Permute (axis 0 kept first, so only the tracked layout changes), Slice,
Tile, Crop, Softmax, Concat, Reshape, Flatten, ShuffleChannel and Reduction along random Caffe
axes; every intermediate top must match the numpy reference. This stresses the per-tensor
layout tracking across handlers far beyond the hand-written cases.
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from netbuilder import NetBuilder, check_net  # noqa: E402


def _chain(seed: int) -> NetBuilder:
    rng = np.random.RandomState(seed)
    nb = NetBuilder(f"chain{seed}", seed=seed)
    shape = [2, int(rng.choice([4, 6])), int(rng.randint(3, 6)), int(rng.randint(3, 6))]
    top = nb.input("data", shape)
    for step in range(6):
        rank = len(shape)
        op = rng.choice(
            [
                "Permute",
                "Slice",
                "Tile",
                "Softmax",
                "Concat",
                "Reshape",
                "Crop",
                "ShuffleChannel",
                "Flatten",
            ]
        )
        name = f"l{step}"
        axis = int(rng.randint(1, rank))
        if op == "Permute":
            rest = list(rng.permutation(np.arange(1, rank)))
            order = [0] + [int(a) for a in rest]
            txt = " ".join(f"order: {o}" for o in order)
            top = nb.add("Permute", [top], name=name, param=f"permute_param {{ {txt} }}")
            shape = [shape[o] for o in order]
        elif op == "Slice" and shape[axis] > 1:
            point = int(rng.randint(1, shape[axis]))
            tops = nb.add(
                "Slice",
                [top],
                tops=[f"{name}a", f"{name}b"],
                name=name,
                param=f"slice_param {{ axis: {axis} slice_point: {point} }}",
            )
            pick = int(rng.randint(2))
            top = tops[pick]
            shape[axis] = point if pick == 0 else shape[axis] - point
        elif op == "Tile" and int(np.prod(shape)) < 2000:
            top = nb.add("Tile", [top], name=name, param=f"tile_param {{ axis: {axis} tiles: 2 }}")
            shape[axis] *= 2
        elif op == "Softmax":
            top = nb.add("Softmax", [top], name=name, param=f"softmax_param {{ axis: {axis} }}")
        elif op == "Concat":
            other = nb.add("TanH", [top], name=f"{name}t")
            top = nb.add(
                "Concat", [top, other], name=name, param=f"concat_param {{ axis: {axis} }}"
            )
            shape[axis] *= 2
        elif op == "Reshape" and rank == 4:
            top = nb.add(
                "Reshape",
                [top],
                name=name,
                param="reshape_param { shape { dim: 0 dim: 0 dim: -1 } }",
            )
            shape = shape[:2] + [shape[2] * shape[3]]
        elif op == "Crop" and shape[axis] > 1:
            ref_shape = list(shape)
            ref_shape[axis] -= 1
            ref = nb.add(
                "Slice",
                [top],
                tops=[f"{name}r", f"{name}x"],
                name=f"{name}s",
                param=f"slice_param {{ axis: {axis} slice_point: {ref_shape[axis]} }}",
            )[0]
            offsets = " ".join(f"offset: {int(i == axis)}" for i in range(axis, rank))
            top = nb.add(
                "Crop", [top, ref], name=name, param=f"crop_param {{ axis: {axis} {offsets} }}"
            )
            shape = ref_shape
        elif op == "ShuffleChannel" and shape[1] % 2 == 0 and rank == 4:
            top = nb.add(
                "ShuffleChannel", [top], name=name, param="shuffle_channel_param { group: 2 }"
            )
        elif op == "Flatten" and rank > 2:
            top = nb.add("Flatten", [top], name=name, param=f"flatten_param {{ axis: {axis} }}")
            shape = shape[:axis] + [int(np.prod(shape[axis:]))]
    nb.add("Reduction", [top], name="sum", param="reduction_param { operation: SUMSQ axis: 1 }")
    return nb


@pytest.mark.parametrize("seed", range(12))
def test_random_layout_chain(tmp_path, seed):
    check_net(_chain(seed), tmp_path)
