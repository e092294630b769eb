"""Write a synthetic VGG-style Caffe net of a chosen size, streaming, in little memory.

The caffemodel is written directly in the protobuf wire format (``NetParameter`` with V2
``layer`` entries, each ``BlobProto`` with a ``shape`` and packed float ``data``), chunk by
chunk, so generating a multi-gigabyte file needs only a few megabytes of RAM. The net:

    data 1x3xSxS -> [conv3x3+ReLU]x2 -> pool -> [conv3x3+ReLU]x2 -> pool -> conv3x3+ReLU -> pool
                 -> fc6 (N) + ReLU -> fc7 (N) + ReLU -> fc8 (10) -> prob (Softmax)

``N`` (the fully connected width) is chosen so the file is about ``target_bytes``; as in
VGG, almost all bytes are in fc6/fc7. Weights are He-scaled normal values from a seeded
generator, so activations stay in a sane range and outputs are reproducible.

Usage:
    python tools/make_large_caffemodel.py OUT_DIR --size-mb 1024 [--seed 0]

Example:
    >>> paths = write_vgg_caffemodel("/tmp/big", 200 * 2**20)  # doctest: +SKIP
    >>> paths["caffemodel"], paths["prototxt"]                 # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from typing import BinaryIO, Dict, List, Sequence, Tuple

import numpy as np

CHUNK_FLOATS = 1 << 20  # 4 MB of float32 per write

INPUT_SIZE = 32  # spatial size S of the input; three 2x2 poolings -> 4x4
CONV_CHANNELS = (32, 32, 64, 64, 128)  # conv1_1, conv1_2, conv2_1, conv2_2, conv3_1
POOL_AFTER = (1, 3, 4)  # indices of the convs followed by a 2x2/2 max pooling
NUM_CLASSES = 10


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return _varint((field << 3) | wire_type)


def _len_field(field: int, payload: bytes) -> bytes:
    return _key(field, 2) + _varint(len(payload)) + payload


def _shape_message(shape: Sequence[int]) -> bytes:
    """BlobShape { repeated int64 dim = 1 [packed] } as field 7 of BlobProto."""
    dims = b"".join(_varint(int(d)) for d in shape)
    return _len_field(7, _len_field(1, dims))


def _blob_header(shape: Sequence[int]) -> Tuple[bytes, int]:
    """(bytes before the float payload, payload size) of one BlobProto."""
    count = int(np.prod(shape))
    payload = 4 * count
    head = _shape_message(shape) + _key(5, 2) + _varint(payload)
    return head, payload


def _write_floats(f: BinaryIO, count: int, std: float, rng: np.random.Generator) -> None:
    left = count
    while left:
        n = min(left, CHUNK_FLOATS)
        chunk = rng.standard_normal(n, dtype=np.float32)
        chunk *= np.float32(std)
        f.write(chunk.astype("<f4", copy=False).tobytes())
        left -= n


def _write_layer(
    f: BinaryIO, name: str, type_: str, blobs: List[Tuple[Sequence[int], float]],
    rng: np.random.Generator,
) -> None:
    """One LayerParameter (field 100 of NetParameter) with name, type and blobs (field 7)."""
    heads = [_blob_header(shape) for shape, _ in blobs]
    blob_sizes = [len(h) + p for h, p in heads]
    body = _len_field(1, name.encode()) + _len_field(2, type_.encode())
    layer_size = len(body) + sum(len(_key(7, 2)) + len(_varint(s)) + s for s in blob_sizes)
    f.write(_key(100, 2) + _varint(layer_size) + body)
    for (shape, std), (head, payload), size in zip(blobs, heads, blob_sizes):
        f.write(_key(7, 2) + _varint(size) + head)
        _write_floats(f, payload // 4, std, rng)


def fc_width_for(target_bytes: int) -> int:
    """Width N of fc6/fc7 so that the weights take about ``target_bytes``.

    Bytes ~= 4 * (F*N + N*N + N*10 + conv weights) with F = fc6 fan-in; solved for N.
    """
    fan_in = CONV_CHANNELS[-1] * (INPUT_SIZE // 8) ** 2
    conv = sum(
        9 * cin * cout + cout for cin, cout in zip((3,) + CONV_CHANNELS[:-1], CONV_CHANNELS)
    )
    floats = max(target_bytes // 4 - conv, 1)
    b = fan_in + NUM_CLASSES + 2
    return max(16, int((-b + math.sqrt(b * b + 4 * floats)) / 2))


def prototxt_text(width: int) -> str:
    """Deploy prototxt of the synthetic net with fully connected width ``width``."""
    lines = [
        'name: "synthetic_vgg"',
        'layer { name: "data" type: "Input" top: "data"',
        f"  input_param {{ shape {{ dim: 1 dim: 3 dim: {INPUT_SIZE} dim: {INPUT_SIZE} }} }} }}",
    ]
    bottom = "data"
    for i, cout in enumerate(CONV_CHANNELS):
        name = f"conv{i}"
        lines.append(
            f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}"'
            f" convolution_param {{ num_output: {cout} kernel_size: 3 pad: 1 }} }}"
        )
        lines.append(
            f'layer {{ name: "relu{i}" type: "ReLU" bottom: "{name}" top: "{name}" }}'
        )
        bottom = name
        if i in POOL_AFTER:
            pool = f"pool{i}"
            lines.append(
                f'layer {{ name: "{pool}" type: "Pooling" bottom: "{bottom}" top: "{pool}"'
                " pooling_param { pool: MAX kernel_size: 2 stride: 2 } }"
            )
            bottom = pool
    for name, n in (("fc6", width), ("fc7", width), ("fc8", NUM_CLASSES)):
        lines.append(
            f'layer {{ name: "{name}" type: "InnerProduct" bottom: "{bottom}" top: "{name}"'
            f" inner_product_param {{ num_output: {n} }} }}"
        )
        if name != "fc8":
            lines.append(
                f'layer {{ name: "relu_{name}" type: "ReLU" bottom: "{name}" top: "{name}" }}'
            )
        bottom = name
    lines.append('layer { name: "prob" type: "Softmax" bottom: "fc8" top: "prob" }')
    return "\n".join(lines) + "\n"


def write_vgg_caffemodel(out_dir: str, target_bytes: int, seed: int = 0) -> Dict[str, str]:
    """Write ``synthetic_vgg.prototxt`` and ``synthetic_vgg.caffemodel`` (~target_bytes).

    Returns ``{"prototxt": path, "caffemodel": path, "width": str(N)}``. Memory use is
    O(chunk), independent of the size.
    """
    os.makedirs(out_dir, exist_ok=True)
    width = fc_width_for(target_bytes)
    rng = np.random.default_rng(seed)
    proto_path = os.path.join(out_dir, "synthetic_vgg.prototxt")
    model_path = os.path.join(out_dir, "synthetic_vgg.caffemodel")
    with open(proto_path, "w") as f:
        f.write(prototxt_text(width))
    with open(model_path, "wb") as f:
        f.write(_len_field(1, b"synthetic_vgg"))
        cin = 3
        for i, cout in enumerate(CONV_CHANNELS):
            std = math.sqrt(2.0 / (9 * cin))
            _write_layer(
                f, f"conv{i}", "Convolution", [((cout, cin, 3, 3), std), ((cout,), 0.01)], rng
            )
            cin = cout
        fan_in = CONV_CHANNELS[-1] * (INPUT_SIZE // 8) ** 2
        for name, n in (("fc6", width), ("fc7", width), ("fc8", NUM_CLASSES)):
            std = math.sqrt(2.0 / fan_in)
            _write_layer(f, name, "InnerProduct", [((n, fan_in), std), ((n,), 0.01)], rng)
            fan_in = n
    return {"prototxt": proto_path, "caffemodel": model_path, "width": str(width)}


def main(argv: Sequence[str] = ()) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--size-mb", type=float, default=1024.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(list(argv) or None)
    paths = write_vgg_caffemodel(args.out_dir, int(args.size_mb * 2**20), args.seed)
    size = os.path.getsize(paths["caffemodel"])
    print(f"{paths['caffemodel']}: {size / 2**20:.1f} MiB (fc width {paths['width']})")
    print(paths["prototxt"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
