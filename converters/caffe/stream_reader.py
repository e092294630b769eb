"""Streaming caffemodel reader: blobs go from the file straight into numpy arrays.

``read_caffemodel`` (protobuf ``ParseFromString``) holds the file bytes, the parsed message
and then the arrays at once (about 3x the file size) and cannot parse messages over 2 GB
(protobuf's limit). This reader walks the protobuf wire format itself with buffered file
reads: layer names and types are decoded, every other field is skipped by seeking, and the
packed ``data``/``double_data`` payload of each ``BlobProto`` is read with ``readinto``
directly into its final float32 array. Peak memory is the size of the weights (1x), any
file size works, and progress is logged per layer.

It returns the same table as :func:`reader.weights_by_layer` (layer name -> one blob list
per same-named layer, V2 ``layer`` entries first, then V1/V0 ``layers``).

Example:
    >>> table = read_caffemodel_table("vgg16.caffemodel")  # doctest: +SKIP
    >>> [a.shape for a in table["fc6"][0]]                  # doctest: +SKIP
    [(4096, 25088), (4096,)]
"""

from __future__ import annotations

import io
import logging
import math
import os
from typing import BinaryIO, Callable, Dict, List, Optional, Tuple, Union

import numpy as np

from kerasq.errors import CaffeFormatError

log = logging.getLogger("kerasq.converters.caffe.stream_reader")

PathLike = Union[str, "os.PathLike[str]"]
Table = Dict[str, List[List[np.ndarray]]]
Progress = Callable[[int, int], None]

# NetParameter / LayerParameter / V1LayerParameter / V0LayerParameter / BlobProto fields.
_NET_LAYER, _NET_LAYERS = 100, 2
_V2_NAME, _V2_BLOBS = 1, 7
_V1_NAME, _V1_BLOBS, _V1_V0 = 4, 6, 1
_V0_NAME, _V0_BLOBS = 1, 50
_BLOB_SHAPE, _BLOB_DATA, _BLOB_DOUBLE = 7, 5, 8
_BLOB_LEGACY = {1: 0, 2: 1, 3: 2, 4: 3}  # num, channels, height, width


class _Corrupt(Exception):
    """Internal: wire format violation (turned into CaffeFormatError with context)."""


class _Wire:
    """Bounded reads of protobuf wire data from a buffered binary file."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        self.f = f
        self.size = size

    def tell(self) -> int:
        return self.f.tell()

    def varint(self, end: int) -> int:
        value = shift = 0
        while True:
            if self.f.tell() >= end:
                raise _Corrupt("truncated varint")
            byte = self.f.read(1)[0]
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
            if shift >= 70:
                raise _Corrupt("varint longer than 10 bytes")

    def key(self, end: int) -> Tuple[int, int]:
        key = self.varint(end)
        field, wire_type = key >> 3, key & 7
        if field == 0:
            raise _Corrupt("field number 0")
        return field, wire_type

    def length(self, end: int) -> int:
        n = self.varint(end)
        if n > end - self.f.tell():
            raise _Corrupt(f"a field of {n} bytes runs past the end of its message")
        return n

    def span(self, end: int) -> int:
        """Read a length prefix; return the end offset of the field it announces."""
        n = self.length(end)
        return self.f.tell() + n

    def skip(self, wire_type: int, end: int) -> None:
        if wire_type == 0:
            self.varint(end)
            return
        if wire_type == 2:
            n = self.length(end)
        elif wire_type in (1, 5):
            n = 8 if wire_type == 1 else 4
            if n > end - self.f.tell():
                raise _Corrupt("truncated fixed-width field")
        else:
            raise _Corrupt(f"unsupported wire type {wire_type}")
        self.f.seek(n, io.SEEK_CUR)

    def bytes(self, n: int) -> bytes:
        data = self.f.read(n)
        if len(data) != n:
            raise _Corrupt("file ends inside a field")
        return data

    def array(self, n_bytes: int, dtype: str) -> np.ndarray:
        """Read ``n_bytes`` of little-endian values straight into a new array."""
        item = np.dtype(dtype).itemsize
        if n_bytes % item:
            raise _Corrupt(f"packed payload of {n_bytes} bytes is not a multiple of {item}")
        out = np.empty(n_bytes // item, dtype=dtype)
        if self.f.readinto(memoryview(out).cast("B")) != n_bytes:
            raise _Corrupt("file ends inside a blob")
        return out


def _label(name: Optional[str]) -> Optional[str]:
    """A layer name fit for a one-line message (corrupt files hold any bytes)."""
    if not name:
        return None
    return name if name.isprintable() else repr(name)


def _signed(value: int, bits: int = 64) -> int:
    value &= (1 << 64) - 1
    if value >= 1 << 63:
        value -= 1 << 64
    if bits == 32:
        value = ((value + (1 << 31)) % (1 << 32)) - (1 << 31)
    return value


def _read_blob(w: _Wire, end: int, source: str, layer: str) -> np.ndarray:
    """One BlobProto ending at ``end`` -> float32 array in Caffe layout (as blob_to_array)."""
    floats: List[np.ndarray] = []
    doubles: List[np.ndarray] = []
    dims: Optional[List[int]] = None
    legacy = [0, 0, 0, 0]
    while w.tell() < end:
        field, wire_type = w.key(end)
        if field in (_BLOB_DATA, _BLOB_DOUBLE) and wire_type == 2:
            dtype = "<f4" if field == _BLOB_DATA else "<f8"
            (floats if field == _BLOB_DATA else doubles).append(w.array(w.length(end), dtype))
        elif field == _BLOB_DATA and wire_type == 5:  # unpacked repeated float
            floats.append(np.frombuffer(w.bytes(4), "<f4").copy())
        elif field == _BLOB_DOUBLE and wire_type == 1:
            doubles.append(np.frombuffer(w.bytes(8), "<f8").copy())
        elif field == _BLOB_SHAPE and wire_type == 2:
            shape_end = w.span(end)
            dims = dims if dims is not None else []
            while w.tell() < shape_end:
                f2, t2 = w.key(shape_end)
                if f2 == 1 and t2 == 2:
                    packed_end = w.span(shape_end)
                    while w.tell() < packed_end:
                        dims.append(_signed(w.varint(packed_end)))
                elif f2 == 1 and t2 == 0:
                    dims.append(_signed(w.varint(shape_end)))
                else:
                    w.skip(t2, shape_end)
        elif field in _BLOB_LEGACY and wire_type == 0:
            legacy[_BLOB_LEGACY[field]] = _signed(w.varint(end), 32)
        else:
            w.skip(wire_type, end)
    if doubles:
        values = np.concatenate(doubles).astype(np.float32)
    elif len(floats) == 1:
        values = floats[0].astype(np.float32, copy=False)
    else:
        values = np.concatenate(floats).astype(np.float32) if floats else np.empty(0, np.float32)
    if dims is not None:
        shape: Tuple[int, ...] = tuple(dims)
    elif any(legacy):
        shape = tuple(legacy)
    else:
        shape = (values.size,)
    expected = math.prod(shape)  # Python ints: a huge product cannot wrap around
    if any(d < 0 for d in shape) or expected != values.size:
        raise CaffeFormatError(
            f"blob declares shape {shape} ({expected} values) but holds {values.size} values",
            file=source or None,
            layer=_label(layer),
        )
    return values.reshape(shape)


def _read_layer(
    w: _Wire, end: int, name_field: int, blobs_field: int, source: str,
    nested_v0: bool = False,
) -> Tuple[str, List[np.ndarray], Optional[Tuple[str, List[np.ndarray]]]]:
    """(name, blobs, nested V0 (name, blobs) or None) of one layer message."""
    name = ""
    blob_spans: List[Tuple[int, int]] = []
    v0: Optional[Tuple[str, List[np.ndarray]]] = None
    while w.tell() < end:
        field, wire_type = w.key(end)
        if field == name_field and wire_type == 2:
            raw = w.bytes(w.length(end))
            name = raw.decode("utf-8", errors="replace")
        elif field == blobs_field and wire_type == 2:
            n = w.length(end)
            blob_spans.append((w.tell(), n))
            w.f.seek(n, io.SEEK_CUR)
        elif nested_v0 and field == _V1_V0 and wire_type == 2:
            sub_end = w.span(end)
            v0_name, v0_blobs, _ = _read_layer(w, sub_end, _V0_NAME, _V0_BLOBS, source)
            if v0 is not None:  # a repeated singular message merges: later blobs append
                v0_name = v0_name or v0[0]
                v0_blobs = v0[1] + v0_blobs
            v0 = (v0_name, v0_blobs)
            w.f.seek(sub_end)
        else:
            w.skip(wire_type, end)
    # Blobs are decoded after the name is known (it may come after them), for the errors.
    blobs = []
    for start, n in blob_spans:
        w.f.seek(start)
        blobs.append(_read_blob(w, start + n, source, name))
    w.f.seek(end)
    return name, blobs, v0


def read_caffemodel_table(path: PathLike, progress: Optional[Progress] = None) -> Table:
    """Stream a binary caffemodel into ``{layer name: [[blob arrays], ...]}`` (any size).

    ``progress(bytes_done, bytes_total)`` is called after each layer. Raises
    :class:`CaffeFormatError` naming the file (and layer) for missing, empty, truncated or
    corrupt files and for files without layers.

    Example:
        >>> table = read_caffemodel_table("lenet.caffemodel")  # doctest: +SKIP
        >>> sorted(table)                                      # doctest: +SKIP
        ['conv1', 'conv2', 'ip1', 'ip2']
    """
    from kerasq.converters.caffe.reader import check_regular_file

    source = os.fspath(path)
    size = check_regular_file(source, "caffemodel")
    if size == 0:
        raise CaffeFormatError("caffemodel is empty", file=source)
    v2: List[Tuple[str, List[np.ndarray]]] = []
    v1: List[Tuple[str, List[np.ndarray]]] = []
    layers_seen = 0
    name = None
    start = 0
    try:
        with open(source, "rb", buffering=1 << 16) as f:
            w = _Wire(f, size)
            while w.tell() < size:
                start = w.tell()
                field, wire_type = w.key(size)
                if field in (_NET_LAYER, _NET_LAYERS) and wire_type == 2:
                    end = w.span(size)
                    if field == _NET_LAYER:
                        name, blobs, _ = _read_layer(w, end, _V2_NAME, _V2_BLOBS, source)
                        v2.append((name, blobs))
                    else:
                        name, blobs, v0 = _read_layer(
                            w, end, _V1_NAME, _V1_BLOBS, source, nested_v0=True
                        )
                        if not blobs and v0 is not None:
                            name, blobs = v0
                        v1.append((name, blobs))
                    layers_seen += 1
                    nbytes = sum(b.nbytes for b in blobs)
                    log.info("%s: read layer %r (%.1f MB) [%d/%d MB]", source, name,
                             nbytes / 1e6, w.tell() // 10**6, size // 10**6)
                    if progress is not None:
                        progress(w.tell(), size)
                else:
                    w.skip(wire_type, size)
    except _Corrupt as err:
        after = f", after layer {_label(name)}" if name else ""
        raise CaffeFormatError(
            f"not a valid caffemodel (truncated, corrupt or not a Caffe NetParameter): {err} "
            f"(in the field at byte {start}{after})",
            file=source,
        ) from None
    except MemoryError:
        raise CaffeFormatError(
            f"not enough memory for the weights of this caffemodel (at byte {start})",
            file=source,
        ) from None
    if not layers_seen:
        raise CaffeFormatError(
            "caffemodel contains no layers (not a Caffe NetParameter?)", file=source
        )
    table: Table = {}
    for layer_name, blobs in v2 + v1:
        if blobs:
            table.setdefault(layer_name, []).append(blobs)
    return table


__all__ = ["read_caffemodel_table"]
