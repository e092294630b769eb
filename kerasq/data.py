"""Reading input arrays (calibration, verification, evaluation data) safely.

Every check happens before anything big is allocated, and every failure is one line
(:class:`~kerasq.errors.DataError` naming the file, the array and the reason):

* only regular files are opened (a FIFO, device or directory is refused up front);
* an ``.npy`` header's shape x itemsize must fit in the file (a 100-byte file cannot
  claim 3.6 TiB); ``.npz`` members are checked the same way against their declared
  uncompressed size, and the whole archive against :data:`MAX_ARRAY_BYTES` (zip bombs);
* object, string and other non-numeric dtypes are refused (no pickle, ever);
* NaN and Inf are refused, naming the array and the first bad index;
* empty arrays are refused.

:func:`match_layout` puts data given in Caffe's NCHW layout or the model's NHWC layout
into the layout a model input expects, recognised from the shape; a shape that fits both
is refused unless ``layout`` says which (the CLI flag ``--layout nchw|nhwc``).

Example:
    >>> import numpy as np
    >>> x = np.zeros((2, 1, 28, 28), np.float32)            # Caffe NCHW
    >>> match_layout(x, (None, 28, 28, 1)).shape             # model NHWC
    (2, 28, 28, 1)
"""

from __future__ import annotations

import ast
import os
import stat
import struct
import zipfile
import zlib
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from kerasq.errors import ArgumentError, DataError, ModelFormatError

PathLike = Union[str, "os.PathLike[str]"]

#: Largest total array size read from one file (bytes); ``KERASQ_MAX_ARRAY_BYTES`` overrides.
MAX_ARRAY_BYTES = int(os.environ.get("KERASQ_MAX_ARRAY_BYTES", str(16 << 30)))

LAYOUTS = ("auto", "nchw", "nhwc")


def check_regular_file(path: PathLike, what: str = "file") -> str:
    """Return ``path`` if it is a readable regular file, else raise a one-line DataError.

    Example:
        >>> check_regular_file("/dev/null")
        Traceback (most recent call last):
        ...
        kerasq.errors.DataError: /dev/null: file is a device, not a regular file
    """
    path = _path_arg(path, what)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DataError(f"{what} not found", file=path) from None
    except OSError as err:
        raise DataError(f"cannot open {what}: {err.strerror}", file=path) from None
    if stat.S_ISDIR(st.st_mode):
        raise DataError(f"{what} is a directory, expected a file", file=path)
    if not stat.S_ISREG(st.st_mode):
        kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(
            st.st_mode) else "a device"
        raise DataError(f"{what} is {kind}, not a regular file", file=path)
    if not os.access(path, os.R_OK):
        raise DataError(f"cannot open {what}: Permission denied", file=path)
    return path


def _parse_npy_header(head: bytes, file: str, name: str) -> Tuple[np.dtype, Tuple[int, ...],
                                                                      bool, int]:
    """(dtype, shape, fortran_order, header length) of the .npy bytes ``head``."""
    if not head.startswith(b"\x93NUMPY") or len(head) < 10:
        raise DataError("not an .npy array (bad magic)", file=file, layer=name)
    major = head[6]
    if major == 1:
        hlen = int.from_bytes(head[8:10], "little")
        start = 10
    elif major in (2, 3):
        if len(head) < 12:
            raise DataError("truncated .npy header", file=file, layer=name)
        hlen = int.from_bytes(head[8:12], "little")
        start = 12
    else:
        raise DataError(f"unsupported .npy version {major}", file=file, layer=name)
    if hlen > 1 << 16 or start + hlen > len(head):
        raise DataError("truncated or oversized .npy header", file=file, layer=name)
    text = head[start:start + hlen].decode("latin1")
    try:
        header = ast.literal_eval(text)  # a dict literal (what numpy itself does)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise DataError("corrupt .npy header", file=file, layer=name) from None
    if (not isinstance(header, dict) or not {"descr", "shape", "fortran_order"} <= set(header)
            or not isinstance(header["shape"], tuple)
            or not all(isinstance(d, int) and not isinstance(d, bool) for d in header["shape"])):
        raise DataError("corrupt .npy header", file=file, layer=name)
    if any(d < 0 for d in header["shape"]):
        raise DataError(f"negative dimension in shape {header['shape']}", file=file, layer=name)
    try:
        dtype = np.dtype(np.lib.format.descr_to_dtype(header["descr"]))
    except (TypeError, ValueError):
        raise DataError(f"unknown dtype {header['descr']!r}", file=file, layer=name) from None
    return dtype, header["shape"], bool(header["fortran_order"]), start + hlen


def _check_dtype(dtype: np.dtype, file: str, name: str) -> None:
    if dtype.hasobject:
        raise DataError("object arrays are refused (they need pickle); save numbers",
                        file=file, layer=name)
    if dtype.kind not in "biuf" or dtype.fields is not None or dtype.subdtype is not None:
        raise DataError(f"expected numbers, the array holds {dtype} ({dtype.kind!r} kind)",
                        file=file, layer=name)


def _check_npy(head: bytes, available: int, file: str, name: str) -> None:
    dtype, shape, _, offset = _parse_npy_header(head, file, name)
    _check_dtype(dtype, file, name)
    count = 1
    for d in shape:
        count *= d
    need = count * dtype.itemsize
    if need > MAX_ARRAY_BYTES:
        raise DataError(f"shape {shape} of {dtype} needs {need / 2**30:.1f} GiB, over the "
                        f"{MAX_ARRAY_BYTES / 2**30:.0f} GiB limit (KERASQ_MAX_ARRAY_BYTES)",
                        file=file, layer=name)
    if need > available - offset:
        raise DataError(f"header claims shape {shape} of {dtype} ({need} bytes) but the data "
                        f"holds {max(available - offset, 0)} bytes (truncated or corrupt)",
                        file=file, layer=name)


def check_finite(array: np.ndarray, name: str = "array", file: Optional[str] = None) -> None:
    """Raise DataError naming ``name`` and the first NaN/Inf index if ``array`` has one.

    Example:
        >>> check_finite(np.array([[1.0, np.inf]]), "x")
        Traceback (most recent call last):
        ...
        kerasq.errors.DataError: x: holds inf at index (0, 1); non-finite values are refused
    """
    a = np.asarray(array)
    if a.dtype.kind not in "fc" or a.size == 0:
        return
    bad = ~np.isfinite(a)
    if bad.any():
        flat = int(np.argmax(bad.reshape(-1)))
        index = tuple(int(i) for i in np.unravel_index(flat, a.shape))
        value = a.reshape(-1)[flat]
        raise DataError(f"holds {value} at index {index}; non-finite values are refused",
                        file=file, layer=name)


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_input_values(array: np.ndarray, name: str = "input", file: Optional[str] = None
                       ) -> None:
    """Model input data must be numbers a float32 model input holds: no bool arrays (True/
    False are no pixel values; a mask saved by mistake), no value beyond the float32 range
    (float64 1e39 would become inf inside the model).

    Example:
        >>> check_input_values(np.array([1e39]), "x")
        Traceback (most recent call last):
        ...
        kerasq.errors.DataError: x: value 1e+39 at index (0,) is beyond the float32 range of the model input
    """
    if array.dtype.kind == "b":
        raise DataError("bool data for a model input; expected numbers (pixel or feature "
                        "values)", file=file, layer=name)
    if array.dtype.kind == "f" and array.dtype.itemsize > 4 and array.size:
        big = np.abs(array) > _FLOAT32_MAX
        if big.any():
            flat = int(np.argmax(big.reshape(-1)))
            index = tuple(int(i) for i in np.unravel_index(flat, array.shape))
            raise DataError(f"value {array.reshape(-1)[flat]:g} at index {index} is beyond the "
                            "float32 range of the model input", file=file, layer=name)


def check_model_finite(model: Any, file: Optional[str] = None) -> None:
    """Raise DataError naming the first variable (weight, range, fl) of ``model`` holding
    NaN/Inf, and its first bad index; a model passing this never hands a non-finite range
    to a file or to the TFLite converter.

    Example:
        >>> check_model_finite(qmodel, "q.h5")  # doctest: +SKIP
    """
    for var in getattr(model, "variables", None) or []:
        try:
            value = np.asarray(var.numpy())
        except (AttributeError, TypeError, ValueError):
            continue
        if value.dtype.kind == "f" and value.size and not np.all(np.isfinite(value)):
            name = var.name.split(":")[0]
            try:
                check_finite(value, name, file)
            except DataError as err:
                raise DataError(err.reason + " (was the calibration or training data "
                                "finite?)", file=file, layer=name) from None


def check_data_finite(data: Any, name: str = "data", file: Optional[str] = None) -> None:
    """:func:`check_finite` over an array, a list/tuple/dict of arrays (one per input);
    other objects (datasets, iterators) are left to the caller.

    Example:
        >>> check_data_finite([np.zeros(3), np.array([1.0, np.nan])], "calibration data")
        Traceback (most recent call last):
        ...
        kerasq.errors.DataError: calibration data[1]: holds nan at index (1,); non-finite values are refused
    """
    if isinstance(data, dict):
        for key, value in data.items():
            check_data_finite(value, f"{name}[{key!r}]", file)
    elif isinstance(data, (list, tuple)):
        for i, value in enumerate(data):
            if isinstance(value, np.ndarray):
                check_finite(value, f"{name}[{i}]", file)
    elif isinstance(data, np.ndarray):
        if data.dtype.hasobject or data.dtype.kind not in "biufc":
            raise DataError(f"expected numbers, the array holds {data.dtype}", file=file,
                            layer=name)
        check_finite(data, name, file)


def _as_numbers(array: np.ndarray, file: str, name: str) -> np.ndarray:
    _check_dtype(array.dtype, file, name)
    if array.size == 0:
        raise DataError(f"the array is empty (shape {tuple(array.shape)})", file=file,
                        layer=name)
    check_finite(array, name, file)
    return array


def load_arrays(path: PathLike, what: str = "data") -> Dict[str, np.ndarray]:
    """All arrays of an ``.npy`` (key ``""``) or ``.npz`` file, checked as described above.

    Example:
        >>> load_arrays("cal.npz")["x"].shape  # doctest: +SKIP
        (32, 28, 28, 1)
    """
    path = check_regular_file(path, what)
    size = os.path.getsize(path)
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except OSError as err:
        raise DataError(f"cannot read {what}: {err.strerror}", file=path) from None
    if head.startswith(b"\x93NUMPY"):
        _check_npy(head, size, path, "array")
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            raise DataError(f"cannot read the array: {_first_line(err)}", file=path) from None
        return {"": _as_numbers(array, path, "array")}
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return _load_npz(path, size)
    raise DataError(f"not an .npy or .npz array file ({what})", file=path)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return " ".join(text[0].split()) if text else type(err).__name__


def _load_npz(path: str, size: int) -> Dict[str, np.ndarray]:
    arrays: Dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            total = sum(i.file_size for i in infos)
            if total > MAX_ARRAY_BYTES:
                raise DataError(f"the archive expands to {total / 2**30:.1f} GiB, over the "
                                f"{MAX_ARRAY_BYTES / 2**30:.0f} GiB limit", file=path)
            for info in infos:
                name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                with zf.open(info) as member:
                    head = member.read(1 << 16)
                _check_npy(head, info.file_size, path, name)
                with zf.open(info) as member:
                    try:
                        array = np.lib.format.read_array(member, allow_pickle=False)
                    except (OSError, ValueError, EOFError) as err:
                        raise DataError(f"cannot read the array: {_first_line(err)}",
                                        file=path, layer=name) from None
                arrays[name] = _as_numbers(array, path, name)
    except DataError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, struct.error, OSError,
            EOFError, ValueError, NotImplementedError, RuntimeError) as err:
        raise DataError(f"not a readable .npz archive: {_first_line(err)}", file=path) from None
    if not arrays:
        raise DataError("the .npz archive holds no arrays", file=path)
    return arrays


#: Module prefixes a Keras config may name (``"module": ...``); anything else is refused
#: before Keras could import it.
ALLOWED_CONFIG_MODULES = ("keras", "tf_keras", "kerasq", "tensorflow_model_optimization",
                          "tensorflow", "builtins")
MAX_CONFIG_BYTES = 64 << 20
MAX_CONFIG_DEPTH = 200


def _check_config_json(text: Union[str, bytes], file: str) -> Any:
    """Parse a Keras model config; refuse deep nesting and modules outside Keras/kerasq."""
    import json

    if len(text) > MAX_CONFIG_BYTES:
        raise DataError(f"model config of {len(text)} bytes is over the "
                        f"{MAX_CONFIG_BYTES >> 20} MiB limit", file=file)
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_CONFIG_DEPTH:
                raise DataError(f"model config nested more than {MAX_CONFIG_DEPTH} levels deep",
                                file=file)
        elif ch in "]}":
            depth -= 1
    try:
        config = json.loads(text)
    except ValueError as err:
        raise DataError(f"model config is not valid JSON: {_first_line(err)}", file=file) from None
    stack: List[Tuple[Any, str, str]] = [(config, "", "")]  # (item, class, layer name)
    while stack:
        item, owner, layer = stack.pop()
        if isinstance(item, dict):
            if isinstance(item.get("class_name"), str):
                owner = item["class_name"]
                conf = item.get("config")
                if isinstance(conf, dict) and isinstance(conf.get("name"), str):
                    layer = conf["name"]
            module = item.get("module")
            if isinstance(module, str) and module and \
                    module.split(".")[0] not in ALLOWED_CONFIG_MODULES:
                where = f" (in a {owner} config)" if owner else ""
                raise DataError(f"model config names module {module!r}{where}; only Keras and "
                                "kerasq modules are allowed", file=file, layer=layer or None)
            stack.extend((v, owner, layer) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, owner, layer) for v in item)
    return config


def check_model_file(path: PathLike) -> str:
    """Checks on a Keras model file before Keras opens it; returns ``path``.

    * a regular file (``.h5``/``.keras``) or a directory (SavedModel); FIFOs and devices
      are refused;
    * ``.keras`` zips: member count, total uncompressed size against
      :data:`MAX_ARRAY_BYTES` and the compression ratio (zip bombs); ``config.json``
      nesting depth and ``"module"`` names (only Keras, kerasq, tfmot);
    * ``.h5``: the ``model_config`` attribute the same way, and every dataset's declared
      size against :data:`MAX_ARRAY_BYTES` and (uncompressed, contiguous) the file size.

    Example:
        >>> check_model_file("q.h5")  # doctest: +SKIP
        'q.h5'
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        _check_saved_model(path)
        return path
    check_regular_file(path, "model file")
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        _check_keras_zip(path, size)
    elif head.startswith(b"\x89HDF\r\n\x1a\n"):
        _check_h5(path, size)
    else:
        raise ModelFormatError("not a Keras model file (neither an HDF5 .h5 nor a .keras zip; "
                               "a SavedModel is a directory)", file=path)
    return path


#: The files a SavedModel directory must hold (besides optional ``assets/``,
#: ``fingerprint.pb``): the graph, Keras' metadata and the variables' index.
_SAVED_MODEL_FILES = ("saved_model.pb", "keras_metadata.pb")


def _check_saved_model(path: str) -> None:
    """A SavedModel directory as Keras (tf_keras) writes it, checked before TF loads it:
    ``saved_model.pb`` and ``keras_metadata.pb`` regular files, and ``variables/``: every
    tensor the index declares (shape x dtype size) under :data:`MAX_ARRAY_BYTES`, and
    all together no more than the data shards hold (a truncated shard is refused here,
    a huge claimed shape before anything is allocated). Only the index is read."""
    if os.path.splitext(path)[1].lower() in (".h5", ".hdf5", ".keras"):
        raise ModelFormatError(f"a directory, not a {os.path.splitext(path)[1]} file", file=path)
    for name in _SAVED_MODEL_FILES:
        member = os.path.join(path, name)
        if not os.path.exists(member):
            raise ModelFormatError(f"not a Keras SavedModel directory (no {name})", file=path)
        check_regular_file(member, "SavedModel file")
    variables = os.path.join(path, "variables")
    index = os.path.join(variables, "variables.index")
    if not os.path.isdir(variables) or not os.path.exists(index):
        raise ModelFormatError("not a Keras SavedModel directory (no variables/variables.index)",
                               file=path)
    check_regular_file(index, "SavedModel variables index")
    shards = []
    for name in sorted(os.listdir(variables)):
        if name.startswith("variables.data-"):
            check_regular_file(os.path.join(variables, name), "SavedModel variables data")
            shards.append(os.path.getsize(os.path.join(variables, name)))
    try:
        import tensorflow as tf
        from tensorflow.python.training import py_checkpoint_reader
    except ImportError:  # pragma: no cover - TensorFlow is a dependency
        return
    try:
        reader = py_checkpoint_reader.NewCheckpointReader(os.path.join(variables, "variables"))
        shapes = reader.get_variable_to_shape_map()
        dtypes = reader.get_variable_to_dtype_map()
    except (tf.errors.OpError, ValueError, RuntimeError, TypeError) as err:
        raise ModelFormatError(f"unreadable SavedModel variables: {_first_line(err)}",
                               file=index) from None
    total = 0
    for name in sorted(shapes):
        dtype = dtypes.get(name)
        if dtype is None or dtype == tf.string or dtype == tf.resource or dtype == tf.variant:
            continue
        count = 1
        for d in shapes[name] or ():
            count *= max(int(d), 0)
        nbytes = count * dtype.size
        total += nbytes
        if nbytes > MAX_ARRAY_BYTES:
            raise DataError(f"variable declares {nbytes} bytes (shape {list(shapes[name])}), "
                            f"over the {MAX_ARRAY_BYTES / 2**30:.0f} GiB limit "
                            "(KERASQ_MAX_ARRAY_BYTES)", file=index, layer=name)
        if nbytes > sum(shards):
            raise DataError(f"variable declares {nbytes} bytes but the data files hold "
                            f"{sum(shards)} (truncated or corrupt)", file=index, layer=name)
    if total > sum(shards):
        raise DataError(f"the variables declare {total} bytes but the data files hold "
                        f"{sum(shards)} (truncated or corrupt)", file=index)


def _check_keras_zip(path: str, size: int) -> None:
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            if len(infos) > 10000:
                raise DataError(f"the .keras archive has {len(infos)} members", file=path)
            total = sum(i.file_size for i in infos)
            if total > MAX_ARRAY_BYTES or total > 200 * max(size, 1) + (64 << 20):
                raise DataError(f"the .keras archive expands to {total} bytes from {size} "
                                "(over the limit; a zip bomb?)", file=path)
            names = {i.filename: i for i in infos}
            if "config.json" in names:
                if names["config.json"].file_size > MAX_CONFIG_BYTES:
                    raise DataError("config.json is too big", file=path)
                config = _check_config_json(zf.read("config.json"), path)
                weights = names.get("model.weights.h5")
                present = None
                if weights is not None:  # >= 1 byte per stored value: a generous bound
                    present = {n: weights.file_size for n, _, _ in _claimed_params(config)}
                _check_claimed_params(config, path, present, "the weights file holds")
    except DataError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, struct.error, OSError,
            EOFError, ValueError, NotImplementedError, RuntimeError) as err:
        raise DataError(f"not a readable .keras archive: {_first_line(err)}", file=path) from None


def _check_h5(path: str, size: int) -> None:
    try:
        import h5py
    except ImportError:  # pragma: no cover - h5py ships with TensorFlow
        return
    try:
        with h5py.File(path, "r") as f:
            config = f.attrs.get("model_config")
            if config is not None:
                parsed = _check_config_json(
                    config if isinstance(config, (str, bytes)) else str(config), path)
                _check_claimed_params(parsed, path, _h5_values_per_layer(f, h5py),
                                      "the file holds")
            found: List[Tuple[str, int, bool]] = []

            def visit(name: str, obj: Any) -> None:
                if isinstance(obj, h5py.Dataset):
                    count = 1
                    for d in obj.shape or ():
                        count *= int(d)
                    packed = obj.compression is None and obj.chunks is None
                    found.append((name, count * obj.dtype.itemsize, packed))

            f.visititems(visit)
    except DataError:
        raise
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as err:
        raise DataError(f"not a readable HDF5 model: {_first_line(err)}", file=path) from None
    total = 0
    for name, nbytes, packed in found:
        total += nbytes
        if nbytes > MAX_ARRAY_BYTES or total > MAX_ARRAY_BYTES:
            raise DataError(f"dataset declares {nbytes} bytes, over the "
                            f"{MAX_ARRAY_BYTES / 2**30:.0f} GiB limit", file=path, layer=name)
        if packed and nbytes > size:
            raise DataError(f"dataset declares {nbytes} bytes but the file has {size} "
                            "(truncated or corrupt)", file=path, layer=name)


#: Largest number of parameters a model config may claim for one layer before Keras would
#: allocate them (``KERASQ_MAX_LAYER_PARAMS`` overrides); 1e9 float32 values are 4 GB.
MAX_LAYER_PARAMS = int(os.environ.get("KERASQ_MAX_LAYER_PARAMS", str(1 << 30)))

_CONV_CLASSES = {"Conv1D", "Conv2D", "Conv3D", "Conv2DTranspose", "Conv3DTranspose",
                 "Conv1DTranspose", "Convolution1D", "Convolution2D", "Convolution3D"}
_PASSTHROUGH = {"Activation", "ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax", "Dropout",
                "BatchNormalization", "LayerNormalization", "MaxPooling2D", "AveragePooling2D",
                "MaxPooling1D", "AveragePooling1D", "ZeroPadding2D", "Cropping2D",
                "UpSampling2D", "GaussianNoise", "SpatialDropout2D", "Add", "Multiply",
                "Maximum", "Minimum", "Average", "Subtract"}


def _positive(value: Any) -> Optional[int]:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 \
        else None


def _layer_params(cls: str, conf: Dict[str, Any], channels_in: Optional[int]
                  ) -> Tuple[int, Optional[int], str]:
    """(lower bound of the parameter count, output channels, what it is) of one layer
    config; the lower bound never exceeds what Keras allocates when it builds the layer."""
    inner = conf.get("layer")
    if isinstance(inner, dict) and isinstance(inner.get("config"), dict):  # tfmot / prune
        return _layer_params(str(inner.get("class_name")), inner["config"], channels_in)
    known_in = channels_in or 1
    if cls == "Dense":
        units = _positive(conf.get("units")) or 1
        return units * known_in, units, f"Dense units={units} on {channels_in or '?'} inputs"
    if cls in _CONV_CLASSES or cls in ("DepthwiseConv2D", "SeparableConv2D"):
        kernel = conf.get("kernel_size")
        kernel = kernel if isinstance(kernel, (list, tuple)) else [kernel]
        taps = 1
        for k in kernel:
            taps *= _positive(k) or 1
        groups = _positive(conf.get("groups")) or 1
        if cls == "DepthwiseConv2D":
            mult = _positive(conf.get("depth_multiplier")) or 1
            return taps * known_in * mult, (channels_in * mult if channels_in else None), \
                f"DepthwiseConv2D kernel {kernel} x depth_multiplier {mult}"
        filters = _positive(conf.get("filters")) or 1
        per_group = max(known_in // groups, 1)
        return taps * per_group * filters, filters, \
            f"{cls} filters={filters} kernel {kernel} on {channels_in or '?'} channels"
    if cls == "Embedding":
        n = (_positive(conf.get("input_dim")) or 1) * (_positive(conf.get("output_dim")) or 1)
        return n, _positive(conf.get("output_dim")), "Embedding"
    if cls == "InputLayer":
        shape = conf.get("batch_input_shape") or conf.get("batch_shape")
        last = _positive(shape[-1]) if isinstance(shape, list) and shape else None
        return 0, last, "input"
    if cls in _PASSTHROUGH:
        return 0, channels_in, cls
    return 0, None, cls


def _config_layers(config: Any) -> List[Tuple[str, str, Dict[str, Any], List[str]]]:
    """(name, class, config, inbound layer names) of a Sequential/functional model config,
    in order; nested models are not entered."""
    if not isinstance(config, dict):
        return []
    conf = config.get("config")
    layers = conf.get("layers") if isinstance(conf, dict) else None
    if not isinstance(layers, list):
        return []
    out = []
    previous: List[str] = []
    sequential = config.get("class_name") == "Sequential"
    for item in layers:
        if not isinstance(item, dict) or not isinstance(item.get("config"), dict):
            continue
        lconf = item["config"]
        name = str(item.get("name") or lconf.get("name") or "")
        inbound: List[str] = []
        nodes = item.get("inbound_nodes")
        if sequential:
            inbound = previous
        elif isinstance(nodes, list):
            for node in nodes:
                if isinstance(node, list):
                    inbound += [e[0] for e in node if isinstance(e, list) and e
                                and isinstance(e[0], str)]
        build = item.get("build_config")
        if isinstance(build, dict) and isinstance(build.get("input_shape"), list):
            lconf = dict(lconf, _input_shape=build["input_shape"])
        out.append((name, str(item.get("class_name")), lconf, inbound))
        previous = [name]
    return out


def _claimed_params(config: Any) -> List[Tuple[str, int, str]]:
    """(layer name, parameter lower bound, description) for every layer of a model config."""
    channels: Dict[str, Optional[int]] = {}
    found = []
    for name, cls, conf, inbound in _config_layers(config):
        channels_in = None
        shape = conf.get("_input_shape")
        if isinstance(shape, list) and shape and isinstance(shape[-1], int):
            channels_in = _positive(shape[1] if conf.get("data_format") == "channels_first"
                                    and len(shape) > 2 else shape[-1])
        elif len(inbound) == 1 and conf.get("data_format") != "channels_first":
            channels_in = channels.get(inbound[0])  # the last axis of the producer
        count, channels[name], what = _layer_params(cls, conf, channels_in)
        found.append((name, count, what))
    return found


def _check_claimed_params(config: Any, file: str,
                          present: Optional[Dict[str, int]], holds: str) -> None:
    """Refuse a layer whose config alone asks Keras to allocate more than
    :data:`MAX_LAYER_PARAMS` values, or more values than the file holds for it
    (``present``: layer name -> values stored; None: unknown)."""
    for name, count, what in _claimed_params(config):
        if count > MAX_LAYER_PARAMS:
            raise DataError(f"config claims {count} parameters ({what}), over the "
                            f"{MAX_LAYER_PARAMS} limit (KERASQ_MAX_LAYER_PARAMS)",
                            file=file, layer=name or None)
        if present is not None and count > 1024 and count > present.get(name, 0):
            raise DataError(f"config claims {count} parameters ({what}) but {holds} "
                            f"{present.get(name, 0)} values for this layer (corrupt or forged)",
                            file=file, layer=name or None)


def _h5_values_per_layer(f: Any, h5py: Any) -> Optional[Dict[str, int]]:
    """Layer name -> number of stored weight values under ``model_weights`` (None when the
    file has no weights group)."""
    group = f.get("model_weights")
    if group is None or not isinstance(group, h5py.Group):
        return None
    counts: Dict[str, int] = {}
    for name in group:
        total = 0

        def add(_: str, obj: Any) -> None:
            nonlocal total
            if isinstance(obj, h5py.Dataset):
                n = 1
                for d in obj.shape or ():
                    n *= int(d)
                total += n

        item = group[name]
        if isinstance(item, h5py.Group):
            item.visititems(add)
        counts[name] = total
    return counts


def load_inputs_and_labels(path: PathLike, need_labels: bool = False, what: str = "data"
                           ) -> Tuple[Any, Optional[np.ndarray]]:
    """Model inputs (``x``, or ``x0``, ``x1``... for several inputs, or the only array)
    and labels ``y`` (integer class ids or one-hot; ``None`` when absent) of a data file.

    Inputs are float32. Labels must be integers (or integral floats), or one-hot rows.
    """
    path = os.fspath(path)
    arrays = load_arrays(path, what)

    def inputs(key: str) -> np.ndarray:
        check_input_values(arrays[key], key or "array", path)
        return arrays[key].astype(np.float32, copy=False)

    if "" in arrays:
        if need_labels:
            raise DataError("evaluation data must be an .npz with arrays x and y", file=path)
        return inputs(""), None
    keys = list(arrays)
    if "x" in keys:
        x: Any = inputs("x")
    elif "x0" in keys:
        x = [inputs(f"x{i}") for i in range(len(keys)) if f"x{i}" in keys]
    elif len(keys) == 1 and not need_labels:
        x = inputs(keys[0])
    else:
        raise DataError(f"no array 'x' (arrays: {', '.join(keys) or 'none'})", file=path)
    y = arrays.get("y")
    if need_labels and y is None:
        raise DataError("no label array 'y'", file=path)
    if y is not None:
        y = _check_labels(y, x, path)
    return x, y


def _check_labels(y: np.ndarray, x: Any, path: str) -> np.ndarray:
    n = (x[0] if isinstance(x, list) else x).shape[0]
    if y.ndim == 0 or y.shape[0] != n:
        raise DataError(f"{y.shape[0] if y.ndim else 0} labels for {n} inputs", file=path,
                        layer="y")
    if y.ndim == 1:
        if y.dtype.kind == "f" and not np.all(np.equal(np.floor(y), y)):
            raise DataError("labels must be integer class ids (or one-hot rows)", file=path,
                            layer="y")
        if np.any(y < 0):
            raise DataError("negative class id", file=path, layer="y")
    elif y.ndim != 2:
        raise DataError(f"labels of shape {y.shape}: expected (N,) ids or (N, classes) one-hot",
                        file=path, layer="y")
    return y


def _fits(shape: Sequence[int], expected: Sequence[Optional[int]]) -> bool:
    return len(shape) == len(expected) and all(
        e is None or int(e) == int(s) for s, e in zip(shape, expected))


def match_layout(
    array: np.ndarray,
    expected: Sequence[Optional[int]],
    layout: str = "auto",
    *,
    expected_layout: str = "nhwc",
    name: str = "input",
    file: Optional[str] = None,
) -> np.ndarray:
    """``array`` in the layout of a model input of shape ``expected`` (batch first).

    ``layout`` says what ``array`` is: ``"nchw"`` (Caffe), ``"nhwc"`` (Keras/TFLite) or
    ``"auto"`` (recognised from the shape). 4-D only is transposed; a missing batch axis
    is added. A shape fitting both layouts (e.g. 8x8x8 images) is refused in ``auto`` mode,
    a shape fitting neither always, with a one-line DataError that names ``--layout``.

    Example:
        >>> match_layout(np.zeros((1, 3, 3, 3)), (None, 3, 3, 3))
        Traceback (most recent call last):
        ...
        kerasq.errors.DataError: input: data shape (1, 3, 3, 3) fits both NCHW and NHWC for a model input (None, 3, 3, 3); say which with --layout nchw or --layout nhwc
    """
    if layout not in LAYOUTS:
        raise DataError(f"layout {layout!r}: expected one of {', '.join(LAYOUTS)}", file=file,
                        layer=name)
    a = np.asarray(array)
    if a.dtype.hasobject or a.dtype.kind not in "biuf" or a.ndim == 0:
        raise DataError(f"expected an array of numbers, got {_shown(array)} of {a.dtype}",
                        file=file, layer=name)
    check_input_values(a, name, file)
    expected = tuple(None if d is None or int(d) < 0 else int(d) for d in expected)
    shown = "(" + ", ".join("None" if d is None else str(d) for d in expected) + ")"
    if a.ndim == len(expected) - 1:
        a = a[np.newaxis]
    if a.ndim != len(expected):
        raise DataError(f"data of shape {tuple(array.shape)} for a model input {shown}",
                        file=file, layer=name)
    if a.ndim != 4:
        if not _fits(a.shape, expected):
            raise DataError(f"data of shape {tuple(a.shape)} for a model input {shown}",
                            file=file, layer=name)
        return a
    other = "nchw" if expected_layout == "nhwc" else "nhwc"
    perm = (0, 2, 3, 1) if expected_layout == "nhwc" else (0, 3, 1, 2)
    converted_shape = tuple(a.shape[i] for i in perm)
    as_is, converted = _fits(a.shape, expected), _fits(converted_shape, expected)
    if layout == expected_layout or (layout == "auto" and as_is and not converted):
        if not as_is:
            raise DataError(f"data of shape {tuple(a.shape)} is not {layout.upper()} for a "
                            f"model input {shown}", file=file, layer=name)
        return a
    if layout == other or (layout == "auto" and converted and not as_is):
        if not converted:
            raise DataError(f"data of shape {tuple(a.shape)} is not {other.upper()} for a "
                            f"model input {shown}", file=file, layer=name)
        return np.ascontiguousarray(a.transpose(perm))
    if as_is and converted:
        if a.shape == converted_shape and a.shape[1] == 1:
            return a  # one channel and 1-pixel rows: both readings are the same array
        raise DataError(f"data shape {tuple(a.shape)} fits both NCHW and NHWC for a model "
                        f"input {shown}; say which with --layout nchw or --layout nhwc",
                        file=file, layer=name)
    raise DataError(f"data of shape {tuple(a.shape)} fits neither NHWC nor NCHW for a model "
                    f"input {shown}", file=file, layer=name)


def match_model_inputs(data: Any, model: Any, layout: str = "auto",
                       file: Optional[str] = None) -> Any:
    """``data`` (an array or a list, one per input) put into ``model``'s input layouts.

    Example:
        >>> x = match_model_inputs(np.zeros((4, 1, 8, 8)), model)  # doctest: +SKIP
    """
    inputs = list(getattr(model, "inputs", None) or [])
    if not inputs:
        return data
    arrays: List[np.ndarray] = list(data) if isinstance(data, (list, tuple)) else [data]
    if len(arrays) != len(inputs):
        raise DataError(f"{len(arrays)} input arrays for a model with {len(inputs)} inputs "
                        "(give x0, x1, ... in an .npz)", file=file)
    out = []
    for i, (a, t) in enumerate(zip(arrays, inputs)):
        shape = tuple(t.shape)
        label = t.name.split(":")[0] if len(inputs) > 1 else "input"
        out.append(match_layout(a, shape, layout, name=label, file=file).astype(
            np.float32, copy=False))
    counts = {a.shape[0] for a in out}
    if len(counts) > 1:
        raise DataError(f"input arrays hold different numbers of samples {sorted(counts)}",
                        file=file)
    return out if isinstance(data, (list, tuple)) else out[0]


def load_model_inputs(path: PathLike, model: Any = None, layout: str = "auto",
                      what: str = "data") -> Any:
    """Checked float32 inputs of ``path``, in ``model``'s layout when a model is given.

    Example:
        >>> x = load_model_inputs("cal.npy", model)  # doctest: +SKIP
    """
    x, _ = load_inputs_and_labels(path, need_labels=False, what=what)
    if model is not None:
        x = match_model_inputs(x, model, layout, file=os.fspath(path))
    return x


# ------------------------------------------------------------------ function arguments
# The public functions check their arguments at the entry with the helpers below, so a bad
# argument is a one-line KerasqError naming it (``batch_size: expected an integer >= 1,
# got 0``) instead of a TypeError deep inside TensorFlow. Each check is O(1) except the
# NaN/Inf scan of array data (one pass).


def _shown(value: Any) -> str:
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "..."
    return f"a {type(value).__name__}"


def check_int(value: Any, arg: str, *, minimum: int = 1, optional: bool = False
              ) -> Optional[int]:
    """``value`` as an int >= ``minimum`` (``None`` allowed if ``optional``).

    Example:
        >>> check_int(0, "batch_size")
        Traceback (most recent call last):
        ...
        kerasq.errors.ArgumentError: batch_size: expected an integer >= 1, got 0
    """
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ArgumentError(f"expected an integer >= {minimum}, got {_shown(value)}", layer=arg)
    return int(value)


def check_number(value: Any, arg: str, *, minimum: Optional[float] = None,
                 positive: bool = False) -> float:
    """``value`` as a finite float (>= ``minimum``; > 0 if ``positive``).

    Example:
        >>> check_number(float("nan"), "error_margin")
        Traceback (most recent call last):
        ...
        kerasq.errors.ArgumentError: error_margin: expected a finite number, got nan
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not np.isfinite(value):
        raise ArgumentError(f"expected a finite number, got {_shown(value)}", layer=arg)
    if minimum is not None and value < minimum:
        raise ArgumentError(f"expected a number >= {minimum}, got {_shown(value)}", layer=arg)
    if positive and value <= 0:
        raise ArgumentError(f"expected a number > 0, got {_shown(value)}", layer=arg)
    return float(value)


def check_bool(value: Any, arg: str) -> bool:
    """``value`` if it is True or False (a string such as ``"no"`` is refused)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ArgumentError(f"expected True or False, got {_shown(value)}", layer=arg)
    return bool(value)


def check_choice(value: Any, arg: str, choices: Sequence[Any]) -> Any:
    """``value`` if it is one of ``choices``.

    Example:
        >>> check_choice("int4", "target", ("int8", "float"))
        Traceback (most recent call last):
        ...
        kerasq.errors.ArgumentError: target: 'int4' is not one of 'int8', 'float'
    """
    try:
        ok = value in choices
    except TypeError:
        ok = False
    if not ok:
        raise ArgumentError(f"{_shown(value)} is not one of {', '.join(map(repr, choices))}",
                            layer=arg)
    return value


def check_names(names: Any, arg: str, known: Optional[Iterable[str]] = None,
                what: str = "layer", optional: bool = True) -> Optional[List[str]]:
    """``names`` as a list of strings, each in ``known`` when given (a bare string is
    refused: ``layers="conv1"`` would otherwise mean the names c, o, n, v, 1).

    Example:
        >>> check_names(["conv9"], "ignored_layers", ["conv1", "ip1"])
        Traceback (most recent call last):
        ...
        kerasq.errors.ArgumentError: ignored_layers: no layer named 'conv9' (the model has conv1, ip1)
    """
    if names is None and optional:
        return None
    if isinstance(names, (str, bytes)):
        raise ArgumentError(f"expected a list of {what} names, got the string {_shown(names)} "
                            f"(write [{names!r}])", layer=arg)
    try:
        items = list(names)
    except TypeError:
        raise ArgumentError(f"expected a list of {what} names, got {_shown(names)}",
                            layer=arg) from None
    for item in items:
        if not isinstance(item, str):
            raise ArgumentError(f"expected {what} names (strings), got {_shown(item)}",
                                layer=arg)
    if known is not None:
        known = list(known)
        unknown = [n for n in items if n not in known]
        if unknown:
            listed = ", ".join(known[:12]) + (", ..." if len(known) > 12 else "")
            raise ArgumentError(f"no {what} named {', '.join(map(repr, unknown[:5]))} "
                                f"(the model has {listed})", layer=arg)
    return items


def check_path(path: Any, arg: str, *, optional: bool = False) -> Optional[str]:
    """``path`` as a str if it is a path (not None, bytes, a number, or file contents).

    Example:
        >>> check_path('name: "net"\\nlayer { }', "prototxt")
        Traceback (most recent call last):
        ...
        kerasq.errors.ArgumentError: prototxt: expected a file path, got text of 2 lines (give the path of a file holding it)
    """
    if path is None and optional:
        return None
    return _path_arg(path, arg)


def _path_arg(path: Any, arg: str) -> str:
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)):
        raise ArgumentError(f"expected a file path, got {_shown(path)}", layer=arg)
    text = os.fspath(path)
    if not isinstance(text, str) or not text.strip() or "\x00" in text:
        raise ArgumentError(f"expected a file path, got {_shown(text)}", layer=arg)
    if "\n" in text:
        raise ArgumentError(f"expected a file path, got text of {len(text.splitlines())} lines "
                            "(give the path of a file holding it)", layer=arg)
    return text


def check_input_file(path: Any, arg: str, what: str = "file", *,
                     directory_ok: bool = False) -> str:
    """``path`` if it names a readable regular file (or, with ``directory_ok``, a
    directory: a SavedModel); a FIFO, device, missing path or non-path is refused.

    Example:
        >>> check_input_file("/dev/zero", "prototxt", "prototxt")
        Traceback (most recent call last):
        ...
        kerasq.errors.DataError: /dev/zero: prototxt: prototxt is a device, not a regular file
    """
    text = _path_arg(path, arg)
    if directory_ok and os.path.isdir(text):
        return text
    try:
        return check_regular_file(text, what)
    except DataError as err:
        raise err.with_context(layer=arg) from None


def check_output_path(path: Any, arg: str, kinds: Iterable[str], *, optional: bool = True
                      ) -> Optional[str]:
    """``path`` if it can be written as one of ``kinds`` (keys of ``kerasq._io.MODEL_KINDS``)
    without destroying anything (:func:`kerasq._io.check_output`); checked before any work.

    Example:
        >>> check_output_path("m.h5", "path", ["tflite"])
        Traceback (most recent call last):
        ...
        kerasq.errors.OutputError: m.h5: path: unsupported output extension '.h5'; supported: .tflite
    """
    from kerasq._io import check_output, output_kind

    if path is None and optional:
        return None
    text = _path_arg(path, arg)
    try:
        return check_output(text, output_kind(text, kinds))
    except DataError:
        raise
    except Exception as err:
        if hasattr(err, "with_context"):
            raise err.with_context(layer=arg) from None  # type: ignore[attr-defined]
        raise


def _is_keras_model(value: Any) -> bool:
    from kerasq._compat import keras

    return isinstance(value, keras.Model)


def _is_quantized(model: Any) -> bool:
    names = {type(layer).__name__ for layer in getattr(model, "layers", ())}
    return bool(names & {"QuantizeWrapperV2", "QuantizeWrapper", "QuantizeLayer"})


def check_keras_model(model: Any, arg: str = "model", *, quantized: Optional[bool] = None
                      ) -> Any:
    """``model`` if it is a tf_keras Model (quantized by :func:`kerasq.quantize_model`
    when ``quantized`` is True, not quantized when False).

    Example:
        >>> check_keras_model(None, "qmodel")
        Traceback (most recent call last):
        ...
        kerasq.errors.ModelFormatError: qmodel: expected a tf_keras Model, got None
    """
    if not _is_keras_model(model):
        from kerasq._compat import is_keras3_model

        hint = " (load a file with kerasq.load_model)" if isinstance(
            model, (str, os.PathLike)) else ""
        if is_keras3_model(model):  # the top-level entry points run its tf_keras twin
            hint = (" (a Keras 3 model: use kerasq.run_integer / prepare_integer, "
                    "kerasq.search_bitwidths or kerasq.dispatch.quantization_report)")
        raise ModelFormatError(f"expected a tf_keras Model, got {_shown(model)}{hint}",
                               layer=arg)
    if quantized is True and not _is_quantized(model):
        raise ModelFormatError(f"{model.name} is a float model; give the model returned by "
                               "kerasq.quantize_model", layer=arg)
    if quantized is False and _is_quantized(model):
        raise ModelFormatError(f"{model.name} is already quantized; give the float model",
                               layer=arg)
    return model


def _is_stream(value: Any, lists: bool = False) -> bool:
    """A dataset, generator or other iterable of batches (checked batch by batch later);
    with ``lists``, a list or tuple (of batches) too."""
    if lists and isinstance(value, (list, tuple)):
        return True
    if isinstance(value, (np.ndarray, list, tuple, dict, str, bytes)) or value is None:
        return False
    if hasattr(value, "numpy") and hasattr(value, "shape") and hasattr(value, "dtype"):
        return False  # a tensor
    return hasattr(value, "__iter__") or hasattr(value, "__next__")


def _array_of(value: Any, arg: str) -> np.ndarray:
    if hasattr(value, "numpy") and hasattr(value, "shape") and not isinstance(value, np.ndarray):
        value = value.numpy()
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as err:  # ragged nested lists
        raise DataError(f"not an array: {_first_line(err)}", layer=arg) from None
    if array.dtype.hasobject or array.dtype.kind not in "biuf":
        raise DataError(f"expected numbers, the array holds {array.dtype}", layer=arg)
    if array.ndim == 0:
        raise DataError(f"expected a batch of samples, got a scalar {_shown(value)}", layer=arg)
    if array.size == 0:
        raise DataError(f"the array is empty (shape {tuple(array.shape)})", layer=arg)
    check_finite(array, arg)
    check_input_values(array, arg)
    return array


def check_array(value: Any, arg: str, *, model: Any = None, optional: bool = False,
                streams: bool = False) -> Any:
    """Check array data given to a function: numbers, not empty, finite, and (with
    ``model``) one array per model input of the input's rank and fixed sizes (batch
    first, the model's layout; see :func:`match_layout` for Caffe NCHW data).
    ``streams``: datasets and iterables of batches (lists included) are accepted as they
    are (the caller checks each batch).
    Returns ``value`` unchanged.

    Example:
        >>> check_array(np.zeros((0, 8)), "x")
        Traceback (most recent call last):
        ...
        kerasq.errors.DataError: x: the array is empty (shape (0, 8))
    """
    if value is None:
        if optional:
            return None
        raise DataError("expected an array of samples, got None", layer=arg)
    if isinstance(value, (str, bytes, os.PathLike)):
        raise DataError(f"expected an array of samples, got the path {_shown(os.fspath(value))} "
                        "(load it with kerasq.data.load_arrays)", layer=arg)
    if _is_stream(value, lists=streams):
        if streams:
            return value
        raise DataError(f"expected an array (or a list of arrays), got {_shown(value)}",
                        layer=arg)
    inputs = list(getattr(model, "inputs", None) or []) if model is not None else []
    if isinstance(value, dict):
        arrays = [(f"{arg}[{k!r}]", _array_of(v, f"{arg}[{k!r}]")) for k, v in value.items()]
        if inputs and len(arrays) != len(inputs):
            raise DataError(f"{len(arrays)} input arrays for a model with {len(inputs)} inputs",
                            layer=arg)
        return value
    several = isinstance(value, (list, tuple)) and (
        len(inputs) > 1 or any(isinstance(v, np.ndarray) or hasattr(v, "numpy")
                               for v in value))
    if several:
        if not value:
            raise DataError("an empty list of input arrays", layer=arg)
        arrays = [(f"{arg}[{i}]", _array_of(v, f"{arg}[{i}]")) for i, v in enumerate(value)]
    else:
        arrays = [(arg, _array_of(value, arg))]
    if inputs:
        if len(arrays) != len(inputs):
            raise DataError(f"{len(arrays)} input array(s) for a model with {len(inputs)} inputs "
                            "(give a list, one array per input)", layer=arg)
        counts = {a.shape[0] for _, a in arrays}
        if len(counts) > 1:
            raise DataError(f"input arrays hold different numbers of samples {sorted(counts)}",
                            layer=arg)
        for (name, a), t in zip(arrays, inputs):
            try:
                expected = tuple(None if d is None else int(d) for d in t.shape)
            except (TypeError, ValueError):
                continue
            if not _fits(a.shape, expected):
                shown = "(" + ", ".join("None" if d is None else str(d) for d in expected) + ")"
                hint = ""
                if a.ndim == 4 and len(expected) == 4 and _fits(
                        tuple(a.shape[i] for i in (0, 2, 3, 1)), expected):
                    hint = " (NCHW data? convert it with kerasq.data.match_layout)"
                raise DataError(f"data of shape {tuple(a.shape)} for a model input {shown}{hint}",
                                layer=name)
    return value


def check_calibration_args(qmodel: Any, data: Any, steps: Any, batch_size: Any) -> None:
    """The arguments of :func:`kerasq.calibrate`: a quantized model, finite numeric data of
    the model's input shape (or a dataset / iterable of batches), ``steps`` None or >= 1,
    ``batch_size`` >= 1.

    Example:
        >>> check_calibration_args(qmodel, x, None, 0)  # doctest: +SKIP
        kerasq.errors.ArgumentError: batch_size: expected an integer >= 1, got 0
    """
    check_keras_model(qmodel, "qmodel", quantized=True)
    check_int(batch_size, "batch_size")
    check_int(steps, "steps", optional=True)
    check_array(data, "data", model=qmodel, streams=True)


def check_callable(value: Any, arg: str) -> Any:
    """``value`` if it can be called (a function, a lambda, a callable object)."""
    if not callable(value):
        raise ArgumentError(f"expected a function, got {_shown(value)}", layer=arg)
    return value


def check_mapping(value: Any, arg: str, *, optional: bool = True) -> Any:
    """``value`` if it is a dict (or None when ``optional``)."""
    if value is None and optional:
        return None
    if not isinstance(value, dict):
        raise ArgumentError(f"expected a dict, got {_shown(value)}", layer=arg)
    return value


__all__ = ["MAX_ARRAY_BYTES", "MAX_LAYER_PARAMS", "LAYOUTS", "check_regular_file", "check_finite",
           "check_data_finite", "check_model_finite", "check_model_file", "load_arrays",
           "load_inputs_and_labels", "match_layout", "match_model_inputs", "load_model_inputs",
           "check_int", "check_number", "check_bool", "check_choice", "check_names",
           "check_input_file", "check_output_path", "check_keras_model", "check_array",
           "check_mapping", "check_path", "check_callable", "check_calibration_args"]
