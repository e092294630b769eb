"""File helpers shared by every command that writes output.

:func:`atomic_output` gives the caller a temporary path next to the target and
moves it into place only when the block succeeds, so a failed conversion,
quantization or export never leaves a partial file or directory behind.

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
import os
import shutil
import tempfile
from typing import Iterator, Union

PathLike = Union[str, "os.PathLike[str]"]


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


@contextlib.contextmanager
def atomic_output(path: PathLike, *, suffix: str = "") -> Iterator[str]:
    """Yield a temporary path in the target's directory; rename it to ``path`` on success.

    The temporary name keeps ``path``'s extension (plus ``suffix``) because Keras picks
    the save format from it. Works for files and directories (SavedModel).
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(directory, exist_ok=True)
    base = os.path.basename(path)
    ext = "".join(base.partition(".")[1:]) if "." in base else ""
    fd, tmp = tempfile.mkstemp(prefix=".kerasq-tmp-", suffix=ext + suffix, dir=directory)
    os.close(fd)
    os.remove(tmp)  # the writer creates it (file or directory)
    try:
        yield tmp
        if not os.path.lexists(tmp):
            raise FileNotFoundError(f"{path}: nothing was written")
        if os.path.lexists(path) and (os.path.isdir(path) != os.path.isdir(tmp)):
            _remove(path)
        if os.path.isdir(tmp) and os.path.isdir(path):
            _remove(path)
        os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            _remove(tmp)


def write_bytes_atomic(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
