"""Write synthetic Caffe nets (text prototxt + binary caffemodel) for per-layer tests.

The caffemodel is encoded by hand in protobuf wire format (NetParameter.layer = 100,
LayerParameter name = 1 / type = 2 / blobs = 7, BlobProto shape = 7 / data = 5 packed /
legacy num,channels,height,width = 1..4) so the tests do not depend on kerasq's own proto
module either. Example::

    nb = NetBuilder()
    x = nb.input("data", (2, 3, 5, 7))
    nb.add("PReLU", [x], param="prelu_param { channel_shared: true }", blobs=[np.array([0.3])])
    proto, model = nb.write(tmp_path)
"""

from __future__ import annotations

import pathlib
import struct
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

ShapeLike = Sequence[int]


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return _varint((field << 3) | wire)


def _len_field(field: int, payload: bytes) -> bytes:
    return _key(field, 2) + _varint(len(payload)) + payload


def _int_field(field: int, value: int) -> bytes:
    return _key(field, 0) + _varint(value)


class Blob:
    """A learned blob and how to store its shape.

    storage: "shape" (BlobShape), "legacy" (num/channels/height/width) or "none"."""

    def __init__(self, data: np.ndarray, storage: str = "shape") -> None:
        self.data = np.asarray(data, np.float32)
        self.storage = storage

    def encode(self) -> bytes:
        out = b""
        if self.storage == "shape":
            dims = b"".join(_varint(int(d)) for d in self.data.shape)
            out += _len_field(7, _len_field(1, dims))
        elif self.storage == "legacy":
            dims = (1,) * (4 - self.data.ndim) + self.data.shape
            for i, d in enumerate(dims[-4:]):
                out += _int_field(i + 1, int(d))
        out += _len_field(5, struct.pack(f"<{self.data.size}f", *self.data.ravel()))
        return out


class NetBuilder:
    """Accumulates layers; ``params`` holds each layer's blobs (Caffe layouts) for the reference."""

    def __init__(self, name: str = "synthetic", seed: int = 0) -> None:
        self.name = name
        self.rng = np.random.RandomState(seed)
        self.layers: List[Tuple[str, str, List[str], List[str], str, List[Blob]]] = []
        self.params: Dict[str, List[np.ndarray]] = {}
        self.inputs: Dict[str, Tuple[int, ...]] = {}

    def input(self, name: str, shape: ShapeLike) -> str:
        """Declare an Input layer (top ``name``) of the given NCHW shape."""
        dims = " ".join(f"dim: {int(d)}" for d in shape)
        self.layers.append((name, "Input", [], [name], f"input_param {{ shape {{ {dims} }} }}", []))
        self.inputs[name] = tuple(int(d) for d in shape)
        return name

    def add(
        self,
        ltype: str,
        bottoms: Sequence[str],
        tops: Union[None, str, Sequence[str]] = None,
        name: Optional[str] = None,
        param: str = "",
        blobs: Sequence[Union[np.ndarray, Blob]] = (),
    ) -> Union[str, List[str]]:
        """Add a layer; returns its top (or list of tops if several were given)."""
        name = name or f"{ltype.lower()}{len(self.layers)}"
        if tops is None:
            top_list = [name]
        elif isinstance(tops, str):
            top_list = [tops]
        else:
            top_list = list(tops)
        bl = [b if isinstance(b, Blob) else Blob(b) for b in blobs]
        self.layers.append((name, ltype, list(bottoms), top_list, param, bl))
        if bl:
            self.params[name] = [b.data for b in bl]
        if tops is None or isinstance(tops, str):
            return top_list[0]
        return top_list

    def randn(self, *shape: int, scale: float = 1.0) -> np.ndarray:
        return (self.rng.randn(*shape) * scale).astype(np.float32)

    def prototxt(self) -> str:
        lines = [f'name: "{self.name}"']
        for name, ltype, bottoms, tops, param, _ in self.layers:
            lines.append("layer {")
            lines.append(f'  name: "{name}"')
            lines.append(f'  type: "{ltype}"')
            lines += [f'  bottom: "{b}"' for b in bottoms]
            lines += [f'  top: "{t}"' for t in tops]
            if param:
                lines.append(f"  {param}")
            lines.append("}")
        return "\n".join(lines) + "\n"

    def caffemodel_bytes(self) -> bytes:
        out = _len_field(1, self.name.encode())
        for name, ltype, _, _, _, blobs in self.layers:
            layer = _len_field(1, name.encode()) + _len_field(2, ltype.encode())
            for b in blobs:
                layer += _len_field(7, b.encode())
            out += _len_field(100, layer)
        return out

    def write(self, folder: Union[str, pathlib.Path]) -> Tuple[str, str]:
        folder = pathlib.Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        proto = folder / f"{self.name}.prototxt"
        model = folder / f"{self.name}.caffemodel"
        proto.write_text(self.prototxt())
        model.write_bytes(self.caffemodel_bytes())
        return str(proto), str(model)

    def random_inputs(self, scale: float = 1.0) -> Dict[str, np.ndarray]:
        return {k: self.randn(*shape, scale=scale) for k, shape in self.inputs.items()}


def forward_and_reference(
    nb: NetBuilder, folder: Union[str, pathlib.Path], inputs: Optional[Dict[str, np.ndarray]] = None
) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray], List[str]]:
    """Run the net through kerasq's ``forward`` and through the numpy reference.

    Returns (kerasq tops, reference tops, names of the non-input tops to compare).
    """
    import caffe_reference as ref  # the test oracle, sibling module
    from kerasq.converters.caffe import forward

    inputs = inputs if inputs is not None else nb.random_inputs()
    proto, model = nb.write(folder)
    got = forward(proto, model, inputs)
    want = ref.run_net(nb.prototxt(), nb.params, inputs)
    tops = [t for (_, ltype, _, tops, _, _) in nb.layers if ltype != "Input" for t in tops]
    return got, want, list(dict.fromkeys(tops))


def assert_caffe_close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    """The issue's tolerance: atol 1e-5 * max(1, max|ref|) + rtol 1e-4, shapes equal."""
    got = np.asarray(got)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != reference {want.shape}"
    atol = 1e-5 * max(1.0, float(np.abs(want).max(initial=0.0)))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=atol, err_msg=what)


def check_net(
    nb: NetBuilder, folder: Union[str, pathlib.Path], inputs: Optional[Dict[str, np.ndarray]] = None
) -> Dict[str, np.ndarray]:
    """forward() must match the numpy reference on every top of the net; returns kerasq's tops."""
    got, want, tops = forward_and_reference(nb, folder, inputs)
    assert tops, "net without tops"
    for top in tops:
        assert top in got, f"forward() did not return top {top!r}"
        assert_caffe_close(got[top], want[top], top)
    return got


# ----------------------------------------------------------------------------------------
# a minimal, independent caffemodel decoder (names and blobs only), for test oracles
# ----------------------------------------------------------------------------------------
def _fields(buf: bytes):
    """Yield (field number, wire type, value) of one protobuf message."""
    pos = 0

    def varint() -> int:
        nonlocal pos
        shift = result = 0
        while True:
            byte = buf[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result
            shift += 7

    while pos < len(buf):
        key = varint()
        field, wire = key >> 3, key & 7
        if wire == 0:
            yield field, wire, varint()
        elif wire == 1:
            yield field, wire, buf[pos : pos + 8]
            pos += 8
        elif wire == 2:
            n = varint()
            yield field, wire, buf[pos : pos + n]
            pos += n
        elif wire == 5:
            yield field, wire, buf[pos : pos + 4]
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")


def _fields_varints(buf: bytes):
    """Decode a packed run of varints."""
    pos = 0
    while pos < len(buf):
        shift = result = 0
        while True:
            byte = buf[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
        yield 0, 0, result


def _decode_blob(buf: bytes) -> np.ndarray:
    dims: List[int] = []
    legacy = {}
    data: List[float] = []
    for field, wire, value in _fields(buf):
        if field == 7 and wire == 2:  # shape
            for f2, w2, v2 in _fields(value):
                if f2 == 1:
                    dims += [v for _, _, v in _fields_varints(v2)] if w2 == 2 else [v2]
        elif field == 5:  # float data, packed or not
            data += list(np.frombuffer(value, "<f4")) if wire in (2, 5) else []
        elif field == 8 and wire == 2:  # double data
            data += list(np.frombuffer(value, "<f8"))
        elif field in (1, 2, 3, 4) and wire == 0:
            legacy[field] = value
    arr = np.asarray(data, np.float32)
    if dims:
        return arr.reshape(dims)
    if legacy:
        return arr.reshape([legacy.get(i, 1) for i in (1, 2, 3, 4)])
    return arr


def read_caffemodel_blobs(path: Union[str, pathlib.Path]) -> Dict[str, List[np.ndarray]]:
    """layer name -> blobs of the first layer of that name that has blobs (V2, V1 and V0)."""
    out: Dict[str, List[np.ndarray]] = {}

    def layer(buf: bytes, name_field: int, blob_field: int) -> None:
        name, blobs = "", []
        for field, wire, value in _fields(buf):
            if field == name_field and wire == 2:
                name = value.decode()
            elif field == blob_field and wire == 2:
                blobs.append(_decode_blob(value))
            elif name_field == 4 and field == 1 and wire == 2:  # V0 layer inside V1
                layer(value, 1, 50)
        if blobs and name not in out:
            out[name] = blobs

    for field, wire, value in _fields(pathlib.Path(path).read_bytes()):
        if field == 100 and wire == 2:
            layer(value, 1, 7)
        elif field == 2 and wire == 2:
            layer(value, 4, 6)
    return out
