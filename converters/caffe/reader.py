"""Reading Caffe files: text prototxt, binary caffemodel, BlobProto (.binaryproto).

* Prototxts are parsed with protobuf's text format against kerasq's ``caffe.proto``
  (which knows BVLC's fields and the text fields of common forks). Unknown fields
  are skipped with a warning instead of failing, as forks add many.
* Caffemodels are parsed through the ``NetWeights`` message, which declares only
  layer names, types and blobs: every other field (fork hyper-parameters whose
  numbers collide between forks) is skipped. Hyper-parameters always come from the
  prototxt.
* Blobs are returned as float32 ``numpy`` arrays in Caffe layout; legacy 4-D
  dimensions (``num/channels/height/width``) are kept as 4-D here and squeezed later
  against the expected parameter shape (:func:`fit_blob_shape`).

Example:
    >>> net = read_prototxt("deploy.prototxt")            # doctest: +SKIP
    >>> weights = read_caffemodel("weights.caffemodel")   # doctest: +SKIP
    >>> mean = read_binaryproto("mean.binaryproto")       # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import os
import re
import stat
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from google.protobuf import message as pb_message
from google.protobuf import text_format

from kerasq.converters.caffe.proto import caffe_pb2
from kerasq.errors import CaffeFormatError

log = logging.getLogger("kerasq.converters.caffe.reader")

PathLike = Union[str, "os.PathLike[str]"]

_UNKNOWN_FIELD = re.compile(r'has no field named "([^"]+)"')

# Fields of caffe-jacinto / Ristretto / sparsity forks: not needed to convert the float net
# (QuantizationConfig.from_caffe reads them), so skipping them is not worth a warning.
QUANTIZATION_FIELDS = frozenset(
    {
        "quantization_param",
        "quantize",
        "net_quantization_param",
        "sparse_mode",
        "sparsity_target",
        "sparsity_step_factor",
        "sparsity_step_iter",
        "sparsity_start_iter",
        "sparsity_start_factor",
        "sparsity_threshold",
        "sparsity_threshold_maxratio",
        "sparsity_itr_increment_bfr_applying",
        "sparsity_threshold_value_max",
        "display_sparsity",
        "insert_quantization_param",
        "quantization_start",
        "quantization_start_iter",
        "display_quantization",
    }
)


def _syntax_error(err: text_format.ParseError) -> str:
    """``'2:9 : '': Expected ...'`` -> ``'line 2, column 9: Expected ...'``."""
    m = re.match(r"(\d+):(\d+)\s*:\s*(?:'[^']*'\s*:\s*)?(.*)", str(err), re.S)
    if m:
        return f"syntax error at line {m.group(1)}, column {m.group(2)}: {m.group(3)}"
    return f"syntax error: {err}"


def check_regular_file(path: PathLike, what: str) -> int:
    """The size of ``path`` if it is a readable regular file; a FIFO, device, socket or
    directory is refused before it is opened (a FIFO would block, ``/dev/zero`` never ends)."""
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise CaffeFormatError(f"{what} not found", file=path) from None
    except OSError as err:
        raise CaffeFormatError(f"cannot open {what}: {err.strerror}", file=path) from None
    if stat.S_ISDIR(st.st_mode):
        raise CaffeFormatError(f"{what} is a directory, expected a file", file=path)
    if not stat.S_ISREG(st.st_mode):
        kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(
            st.st_mode) else "a device"
        raise CaffeFormatError(f"{what} is {kind}, not a regular file", file=path)
    return int(st.st_size)


def _read_bytes(path: PathLike, what: str) -> bytes:
    path = os.fspath(path)
    check_regular_file(path, what)
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as err:
        raise CaffeFormatError(f"cannot read {what}: {err.strerror}", file=path) from None
    except MemoryError:
        raise CaffeFormatError(f"not enough memory to read the {what}", file=path) from None


MAX_NESTING = 100  # Caffe's deepest real messages nest < 10 levels


def check_nesting(text: str, source: str, limit: int = MAX_NESTING) -> None:
    """Refuse text whose ``{``/``<`` blocks nest deeper than ``limit`` (outside quotes),
    before a recursive parser sees it."""
    depth = deepest = 0
    quote = ""
    escaped = comment = False
    for ch in text:
        if comment:
            comment = ch != "\n"
        elif quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = ""
        elif ch == "#":
            comment = True
        elif ch in "\"'":
            quote = ch
        elif ch in "{<[":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    raise CaffeFormatError(f"text nested more than {limit} levels deep",
                                           file=source)
        elif ch in "}>]":
            depth -= 1


def parse_prototxt_text(text: str, source: str = "<prototxt>") -> caffe_pb2.NetParameter:
    """Parse prototxt ``text`` into a ``NetParameter``; unknown fields are skipped with a warning.

    Example:
        >>> net = parse_prototxt_text('layer { name: "d" type: "Input" top: "d" }')
        >>> net.layer[0].type
        'Input'
    """
    check_nesting(text, source)
    net = caffe_pb2.NetParameter()
    try:
        text_format.Parse(text, net)
        return net
    except text_format.ParseError as err:
        if not _UNKNOWN_FIELD.search(str(err)):
            raise CaffeFormatError(_syntax_error(err), file=source) from None
    # Second pass: skip unknown fields, but tell the user which ones.
    net = caffe_pb2.NetParameter()
    try:
        text_format.Parse(text, net, allow_unknown_field=True, allow_unknown_extension=True)
    except text_format.ParseError as err:
        raise CaffeFormatError(_syntax_error(err), file=source) from None
    names = sorted(set(_unknown_field_names(text)))
    unknown = [n for n in names if n not in QUANTIZATION_FIELDS]
    if unknown or not names:
        log.warning(
            "%s: skipped fields this Caffe schema does not know: %s",
            source,
            ", ".join(unknown) or "?",
        )
    quant = [n for n in names if n in QUANTIZATION_FIELDS]
    if quant:
        log.info(
            "%s: quantization/sparsity fields left to kerasq quantize: %s", source, ", ".join(quant)
        )
    return net


def _unknown_field_names(text: str) -> List[str]:
    """Names of the fields the schema does not know (for the warning)."""
    found: List[str] = []
    for _ in range(100):
        try:
            text_format.Parse(text, caffe_pb2.NetParameter())
            break
        except text_format.ParseError as err:
            m = _UNKNOWN_FIELD.search(str(err))
            if not m or m.group(1) in found:
                break
            found.append(m.group(1))
            text = _drop_field(text, m.group(1))
    return found


def _drop_field(text: str, name: str) -> str:
    """Remove ``name { ... }`` or ``name: value`` occurrences from prototxt text."""
    out = []
    i = 0
    pat = re.compile(r"\b%s\b\s*(:?)\s*" % re.escape(name))
    while True:
        m = pat.search(text, i)
        if not m:
            out.append(text[i:])
            break
        out.append(text[i : m.start()])
        j = m.end()
        if j < len(text) and text[j] == "{":
            depth = 0
            while j < len(text):
                if text[j] == "{":
                    depth += 1
                elif text[j] == "}":
                    depth -= 1
                    if depth == 0:
                        j += 1
                        break
                j += 1
        else:
            vm = re.match(r'"[^"]*"|\'[^\']*\'|[^\s;,}]+', text[j:])
            j += vm.end() if vm else 0
        i = j
    return "".join(out)


def read_prototxt(path: PathLike) -> caffe_pb2.NetParameter:
    """Read a text prototxt (deploy or train_test) into a ``NetParameter``.

    Raises :class:`CaffeFormatError` (naming the file) for missing files, syntax errors
    and files that define no layers and no inputs.
    """
    data = _read_bytes(path, "prototxt")
    source = os.fspath(path)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise CaffeFormatError(
            "not a text prototxt (binary data; is this a .caffemodel?)", file=source
        ) from None
    net = parse_prototxt_text(text, source)
    if not net.layer and not net.layers and not net.input:
        raise CaffeFormatError("prototxt defines no layers and no inputs", file=source)
    return net


def parse_caffemodel_bytes(data: bytes, source: str = "<caffemodel>") -> caffe_pb2.NetWeights:
    """Parse caffemodel bytes; only layer names, types and blobs are kept."""
    if not data:
        raise CaffeFormatError("caffemodel is empty", file=source)
    weights = caffe_pb2.NetWeights()
    try:
        weights.ParseFromString(data)
    except (pb_message.DecodeError, RuntimeError, ValueError):
        raise CaffeFormatError(
            "not a valid caffemodel (truncated, corrupt or not a Caffe NetParameter)", file=source
        ) from None
    if not weights.layer and not weights.layers:
        raise CaffeFormatError(
            "caffemodel contains no layers (not a Caffe NetParameter?)", file=source
        )
    return weights


def read_caffemodel(path: PathLike) -> caffe_pb2.NetWeights:
    """Read a binary caffemodel (V2 ``layer`` or V1/V0 ``layers``) of up to 2 GB.

    Files over protobuf's 2 GB message limit raise a clear error before being read;
    ``stream_reader.read_caffemodel_table`` reads any size (``load``/``forward`` use it).

    Example:
        >>> w = read_caffemodel("lenet.caffemodel")  # doctest: +SKIP
        >>> [l.name for l in w.layer if l.blobs]     # doctest: +SKIP
        ['conv1', 'conv2', 'ip1', 'ip2']
    """
    source = os.fspath(path)
    size = check_regular_file(source, "caffemodel")
    if size >= 2**31:
        raise CaffeFormatError(
            f"caffemodel is {size / 2**30:.2f} GiB, over protobuf's 2 GB message limit: "
            "read it with stream_reader.read_caffemodel_table (caffe.load streams it)",
            file=source,
        )
    return parse_caffemodel_bytes(_read_bytes(path, "caffemodel"), source)


def blob_to_array(
    blob: caffe_pb2.BlobProto, source: str = "", layer: Optional[str] = None
) -> np.ndarray:
    """Return a BlobProto's values as a float32 array in Caffe layout.

    Shape comes from ``shape.dim`` if present, else from the legacy 4-D fields; a blob
    with neither is a flat vector (a "shapeless" blob, e.g. a shared PReLU slope).
    """
    if len(blob.double_data):
        values = np.asarray(blob.double_data, dtype=np.float64).astype(np.float32)
    else:
        values = np.asarray(blob.data, dtype=np.float32)
    if blob.HasField("shape"):
        shape: Tuple[int, ...] = tuple(int(d) for d in blob.shape.dim)
    elif blob.num or blob.channels or blob.height or blob.width:
        shape = (blob.num, blob.channels, blob.height, blob.width)
    else:
        shape = (values.size,)
    if any(d < 0 for d in shape):
        raise CaffeFormatError(f"blob shape {shape} has a negative dimension",
                               file=source or None, layer=layer)
    expected = math.prod(shape)  # Python ints: a huge product cannot wrap around
    if expected != values.size:
        raise CaffeFormatError(
            f"blob declares shape {shape} ({expected} values) but holds {values.size} values",
            file=source or None,
            layer=layer,
        )
    return values.reshape(shape)


def read_binaryproto(path: PathLike) -> np.ndarray:
    """Read a ``.binaryproto`` BlobProto (e.g. a mean image) as a float32 array.

    Example:
        >>> mean = read_binaryproto("mean.binaryproto")  # doctest: +SKIP
        >>> mean.shape                                   # doctest: +SKIP
        (1, 3, 32, 32)
    """
    data = _read_bytes(path, "binaryproto")
    source = os.fspath(path)
    if not data:
        raise CaffeFormatError("binaryproto is empty", file=source)
    blob = caffe_pb2.BlobProto()
    try:
        blob.ParseFromString(data)
    except (pb_message.DecodeError, RuntimeError, ValueError):
        raise CaffeFormatError(
            "not a valid BlobProto (truncated or corrupt)", file=source
        ) from None
    if not len(blob.data) and not len(blob.double_data):
        raise CaffeFormatError("BlobProto holds no data", file=source)
    return blob_to_array(blob, source)


def fit_blob_shape(
    array: np.ndarray,
    expected: Sequence[int],
    source: str = "",
    layer: Optional[str] = None,
    what: str = "blob",
) -> np.ndarray:
    """Reshape a (possibly legacy 4-D) blob to ``expected``, or raise a shape-mismatch error.

    Legacy binaries store e.g. biases as 1x1x1xN and InnerProduct weights as 1x1xOxI;
    leading 1s are dropped when the remaining dims match (same as Caffe's upgrade).
    """
    expected = tuple(int(d) for d in expected)
    if tuple(array.shape) == expected:
        return array
    squeezed = tuple(array.shape)
    while len(squeezed) > len(expected) and squeezed[0] == 1:
        squeezed = squeezed[1:]
    shapeless = array.ndim == 1 and array.size == int(np.prod(expected))
    if squeezed == expected or shapeless:
        return array.reshape(expected)
    raise CaffeFormatError(
        f"{what} shape mismatch: the prototxt implies {list(expected)}, "
        f"the caffemodel holds {list(array.shape)}",
        file=source or None,
        layer=layer,
    )


def weights_by_layer(
    weights: caffe_pb2.NetWeights, source: str = ""
) -> Dict[str, List[List[np.ndarray]]]:
    """Map layer name -> list of blob lists (one per same-named layer that has blobs)."""
    table: Dict[str, List[List[np.ndarray]]] = {}

    def add(name: str, blobs: Sequence[caffe_pb2.BlobProto]) -> None:
        if not blobs:
            return
        if isinstance(name, bytes):  # protobuf returns a non-UTF-8 proto2 string as bytes
            name = name.decode("utf-8", errors="replace")
        label = name if name.isprintable() else repr(name)  # one-line error messages
        arrays = [blob_to_array(b, source, label) for b in blobs]
        table.setdefault(name, []).append(arrays)

    for layer in weights.layer:
        add(layer.name, layer.blobs)
    for layer in weights.layers:
        if layer.blobs:
            add(layer.name, layer.blobs)
        elif layer.HasField("layer"):
            add(layer.layer.name, layer.layer.blobs)
    return table


__all__ = [
    "read_prototxt",
    "parse_prototxt_text",
    "read_caffemodel",
    "parse_caffemodel_bytes",
    "read_binaryproto",
    "blob_to_array",
    "fit_blob_shape",
    "weights_by_layer",
]
