"""File helpers shared by every command that writes output.

:func:`atomic_output` gives the caller a temporary path next to the target and moves it
into place only when the block succeeds, so a failed conversion, quantization or export
never leaves a partial file or directory behind. Before anything is written the target is
checked (:func:`check_output`): an existing output is replaced only when it is a regular
file of the same kind (or a SavedModel directory); ``.``, a directory holding anything
else, a device, a FIFO, or an input of the same command (:func:`protect_inputs`) is
refused with a one-line :class:`~kerasq.errors.OutputError` and nothing is touched.

Temporary names are ``.kerasq-tmp-<name>-<pid>-<random>``: they are removed on error,
on SIGINT, SIGTERM and SIGHUP, and a left-over of a killed run (its pid no longer alive)
is removed by the next run that writes the same output.

Example:
    >>> import os, tempfile
    >>> d = tempfile.mkdtemp()
    >>> with atomic_output(os.path.join(d, "m.txt")) as tmp:
    ...     _ = open(tmp, "w").write("ok")
    >>> open(os.path.join(d, "m.txt")).read()
    'ok'
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import stat
import threading
import uuid
from typing import Dict, Iterable, Iterator, Optional, Set, Union

from kerasq.errors import OutputError

PathLike = Union[str, "os.PathLike[str]"]

TMP_PREFIX = ".kerasq-tmp-"

#: output kind -> accepted name endings ("" = a name without extension: SavedModel directory)
MODEL_KINDS: Dict[str, tuple] = {
    "h5": (".h5", ".hdf5"),
    "keras": (".keras",),
    "savedmodel": ("",),
    "tflite": (".tflite",),
    "onnx": (".onnx",),
    "json": (".json",),
    "html": (".html", ".htm"),
    "npy": (".npy",),
    "npz": (".npz",),
}

# First bytes of an existing file that may be replaced by a new file of that kind.
_MAGIC = {
    "h5": (b"\x89HDF\r\n\x1a\n",),
    "keras": (b"PK\x03\x04", b"PK\x05\x06"),
    "npz": (b"PK\x03\x04", b"PK\x05\x06"),
    "npy": (b"\x93NUMPY",),
    "onnx": (b"\x08",),  # ModelProto field 1 (ir_version), a varint
}
# First non-blank bytes of an existing text output that may be replaced (lower-cased).
_TEXT_START = {"json": (b"{", b"["), "html": (b"<",)}
_SAVEDMODEL_ENTRIES = {"saved_model.pb", "saved_model.pbtxt", "variables", "assets",
                       "fingerprint.pb", "keras_metadata.pb"}

_protected: Set[str] = set()
_live_temps: Set[str] = set()
_lock = threading.Lock()
_handlers_installed = False


def protect_inputs(paths: Iterable[PathLike]) -> None:
    """Declare the inputs of the running command: no output may replace or contain them.

    Example:
        >>> protect_inputs(["net.prototxt"]); clear_protected()
    """
    for p in paths:
        try:
            _protected.add(os.path.realpath(os.fspath(p)))
        except (TypeError, ValueError):
            continue


def clear_protected() -> None:
    """Forget the inputs declared with :func:`protect_inputs`."""
    _protected.clear()


def output_kind(path: PathLike, kinds: Iterable[str], what: str = "output") -> str:
    """The kind of ``path`` among ``kinds`` (keys of :data:`MODEL_KINDS`) from its name.

    An unknown extension raises :class:`OutputError` listing the supported ones.

    Example:
        >>> output_kind("m.h5", ["h5", "keras", "savedmodel"])
        'h5'
        >>> output_kind("export_dir", ["h5", "savedmodel"])
        'savedmodel'
    """
    name = os.path.basename(os.path.normpath(os.fspath(path))).lower()
    ext = os.path.splitext(name)[1]
    kinds = list(kinds)
    for kind in kinds:
        if ext in MODEL_KINDS[kind]:
            return kind
    supported = []
    for kind in kinds:
        supported += ["a name without extension (SavedModel directory)" if e == "" else e
                      for e in MODEL_KINDS[kind]]
    raise OutputError(f"unsupported {what} extension {ext or '(none)'!r}; supported: "
                      + ", ".join(supported), file=os.fspath(path))


def _is_savedmodel_dir(path: str) -> bool:
    try:
        entries = set(os.listdir(path))
    except OSError:
        return False
    if not entries:
        return True  # an empty directory holds nothing to lose
    return "saved_model.pb" in entries and entries <= _SAVEDMODEL_ENTRIES


def _contains(parent: str, child: str) -> bool:
    parent = parent.rstrip(os.sep) + os.sep
    return child.startswith(parent)


def check_output(path: PathLike, kind: Optional[str] = None) -> str:
    """Refuse an output ``path`` whose writing could destroy something; return it normalized.

    Refused (one-line :class:`OutputError`): ``.`` or a directory above the current one,
    an input of the running command or a directory holding one, a device, a FIFO or
    socket, an existing directory that is not a SavedModel (or a SavedModel where a file is
    written), an existing file where a SavedModel directory is written, an existing file
    of another kind (``.h5``, ``.keras``, ``.tflite``, ``.npy`` checked by their first
    bytes), a parent path that is not a directory, a parent directory without write access.
    """
    raw = os.fspath(path)
    if not raw or not raw.strip():
        raise OutputError("empty output name")
    real = os.path.realpath(raw)
    cwd = os.path.realpath(os.getcwd())
    if real == cwd or _contains(real, cwd) or real == os.sep:
        raise OutputError("refusing to replace the current directory or one above it", file=raw)
    for inp in _protected:
        if real == inp or _contains(real, inp):
            raise OutputError("the output would replace an input of this command", file=raw)
    parent = os.path.dirname(real) or "."
    if os.path.lexists(parent) and not os.path.isdir(parent):
        raise OutputError(f"the parent path {os.path.dirname(raw) or '.'} is not a directory",
                          file=raw)
    try:
        st = os.stat(raw)
    except FileNotFoundError:
        st = None
    except OSError as err:
        raise OutputError(f"cannot inspect the output path: {err.strerror}", file=raw) from None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            if kind not in (None, "savedmodel") or not _is_savedmodel_dir(raw):
                raise OutputError("exists and is a directory that is not a SavedModel; "
                                  "refusing to replace it", file=raw)
        elif not stat.S_ISREG(st.st_mode):
            what = ("a FIFO" if stat.S_ISFIFO(st.st_mode) else "a socket"
                    if stat.S_ISSOCK(st.st_mode) else "a device")
            raise OutputError(f"exists and is {what}, not a regular file; refusing to replace it",
                              file=raw)
        elif kind == "savedmodel":
            raise OutputError("exists and is a file; a SavedModel is a directory (give a "
                              "name with a supported extension, or remove the file)", file=raw)
        elif kind in _MAGIC and st.st_size > 0:
            try:
                with open(raw, "rb") as f:
                    head = f.read(8)
            except OSError as err:
                raise OutputError(f"cannot read the existing file: {err.strerror}",
                                  file=raw) from None
            if not head.startswith(_MAGIC[kind]):
                raise OutputError(f"exists and is not a {kind} file; refusing to replace it",
                                  file=raw)
        elif kind in _TEXT_START and st.st_size > 0:
            try:
                with open(raw, "rb") as f:
                    head = f.read(512).lstrip()
            except OSError as err:
                raise OutputError(f"cannot read the existing file: {err.strerror}",
                                  file=raw) from None
            if head and not head.lower().startswith(_TEXT_START[kind]):
                raise OutputError(f"exists and is not a {kind} file; refusing to replace it",
                                  file=raw)
        elif kind == "tflite" and st.st_size > 0:
            try:
                with open(raw, "rb") as f:
                    head = f.read(8)
            except OSError as err:
                raise OutputError(f"cannot read the existing file: {err.strerror}",
                                  file=raw) from None
            if head[4:8] != b"TFL3":
                raise OutputError("exists and is not a TFLite file; refusing to replace it",
                                  file=raw)
    if os.path.isdir(parent) and not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"no write permission in {os.path.dirname(raw) or '.'}", file=raw)
    return raw


def _remove(path: str) -> None:
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.lexists(path):
            os.remove(path)
    except OSError:
        pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_leftovers(directory: str, base: str) -> None:
    """Remove temporaries of earlier, killed runs writing ``base`` in ``directory``."""
    prefix = f"{TMP_PREFIX}{base}-"
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if not name.startswith(prefix):
            continue
        pid_text = name[len(prefix):].split("-", 1)[0]
        if pid_text.isdigit() and int(pid_text) != os.getpid() and not _pid_alive(int(pid_text)):
            _remove(os.path.join(directory, name))


def remove_live_temporaries() -> None:
    """Remove the temporaries of writes still in progress (on a signal or an interrupt)."""
    for tmp in list(_live_temps):
        _remove(tmp)
    _live_temps.clear()


def _on_signal(signum: int, frame: object) -> None:
    remove_live_temporaries()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def install_signal_handlers() -> None:
    """Remove live temporaries on SIGTERM/SIGHUP (then die of the signal as before);
    SIGINT raises KeyboardInterrupt, and the ``finally`` of :func:`atomic_output` cleans."""
    global _handlers_installed
    if _handlers_installed or threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if sig is None:
            continue
        try:
            if signal.getsignal(sig) in (signal.SIG_DFL, None):
                signal.signal(sig, _on_signal)
        except (ValueError, OSError):
            pass
    _handlers_installed = True


@contextlib.contextmanager
def atomic_output(path: PathLike, *, suffix: str = "", kind: Optional[str] = None
                  ) -> Iterator[str]:
    """Yield a temporary path in the target's directory; rename it to ``path`` on success.

    The temporary name keeps ``path``'s extension (plus ``suffix``) because Keras picks
    the save format from it. Works for files and directories (SavedModel). ``kind`` (a
    key of :data:`MODEL_KINDS`) makes :func:`check_output` require an existing target to
    be of that kind. Write errors become one-line :class:`OutputError`.
    """
    path = check_output(path, kind)
    directory = os.path.dirname(os.path.abspath(path)) or "."
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create the output directory: {err.strerror}",
                          file=path) from None
    base = os.path.basename(os.path.normpath(path))
    ext = os.path.splitext(base)[1]
    _clean_leftovers(directory, base)
    install_signal_handlers()
    tmp = os.path.join(directory,
                       f"{TMP_PREFIX}{base}-{os.getpid()}-{uuid.uuid4().hex[:8]}{ext}{suffix}")
    with _lock:
        _live_temps.add(tmp)
    old = None
    try:
        try:
            yield tmp
        except OSError as err:
            if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES):
                raise OutputError(f"cannot write: {err.strerror}", file=path) from None
            raise
        if not os.path.lexists(tmp):
            raise OutputError("nothing was written", file=path)
        check_output(path, kind)  # unchanged while we wrote?
        if os.path.isdir(tmp) and os.path.isdir(path):
            old = os.path.join(directory, f"{TMP_PREFIX}{base}-{os.getpid()}-old")
            _live_temps.add(old)
            os.replace(path, old)
        try:
            os.replace(tmp, path)
        except OSError as err:
            if old is not None:
                os.replace(old, path)
                old = None
            raise OutputError(f"cannot move the result into place: {err.strerror}",
                              file=path) from None
    finally:
        for leftover in (tmp, old):
            if leftover is not None:
                if os.path.lexists(leftover):
                    _remove(leftover)
                _live_temps.discard(leftover)


def save_h5(model: object, path: str) -> None:
    """Save a Keras ``model`` as HDF5 at ``path`` (a temporary of :func:`atomic_output`).

    The file is built in memory (h5py's ``core`` driver) and written with one plain
    write: HDF5's own writer, after a failed write (a file-size limit, ``EFBIG``), left
    the process to crash in h5py's object cleanup (SIGSEGV), so the file system only ever
    sees a write that fails with an ``OSError`` (turned into one-line
    :class:`OutputError` by :func:`atomic_output`).

    Example:
        >>> with atomic_output("m.h5", kind="h5") as tmp:  # doctest: +SKIP
        ...     save_h5(model, tmp)
    """
    import h5py

    with h5py.File(f"kerasq-{uuid.uuid4().hex}.h5", "w", driver="core",
                   backing_store=False) as f:
        model.save(f, save_format="h5")  # type: ignore[attr-defined]
        f.flush()
        image = f.id.get_file_image()
    with open(path, "wb") as out:
        out.write(image)


def write_bytes_atomic(path: PathLike, data: bytes, kind: Optional[str] = None) -> None:
    """Write ``data`` to ``path`` atomically (checked by :func:`check_output`; the kind is
    taken from a known file extension when not given)."""
    if kind is None:
        ext = os.path.splitext(os.fspath(path))[1].lower()
        kind = next((k for k, exts in MODEL_KINDS.items() if ext and ext in exts), None)
    with atomic_output(path, kind=kind) as tmp:
        try:
            with open(tmp, "wb") as f:
                f.write(data)
        except OSError as err:
            raise OutputError(f"cannot write: {err.strerror}", file=os.fspath(path)) from None
