"""Durable writes: every file the project writes goes through :func:`atomic_write`.

The new content is written to a uniquely named temporary file in the destination's folder,
flushed to disk (``fsync``) and renamed over the destination, so a crash or a ``kill -9``
leaves either the old file or the new one, never half of one, and two writers never share a
temporary file. The folder is fsynced after the rename where the platform allows, so the
rename itself survives a power loss.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w", **open_kwargs) -> Iterator[IO]:
    """Yield a file opened on a temporary name beside ``path``; on success it replaces ``path``.

    ``mode`` is ``"w"`` (text, UTF-8 unless ``encoding`` is given) or ``"wb"``. On an exception
    the temporary file is removed and ``path`` is left as it was.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write writes whole files: mode 'w' or 'wb', not {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "w":
        open_kwargs.setdefault("encoding", "utf-8")
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp",
                                             dir=path.parent)
    try:
        # mkstemp makes the file private (0600); the result gets the mode a plain open() would
        # give it (or keeps the mode of the file it replaces), so others can still read it.
        with contextlib.suppress(OSError, AttributeError):  # no fchmod on Windows
            os.fchmod(descriptor, _mode_for(path))
        with os.fdopen(descriptor, mode, **open_kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    _fsync_folder(path.parent)


def _mode_for(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        return 0o666 & ~_UMASK


def _current_umask() -> int:
    # Read once, at import: os.umask can only be read by setting it, which would race with
    # other threads creating files.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def _fsync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform opens folders (Windows)
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically and return the path."""
    with atomic_write(path) as handle:
        handle.write(text)
    return Path(path)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    with atomic_write(path, "wb") as handle:
        handle.write(data)
    return Path(path)


def write_json(path: str | Path, data, indent: int | None = 2) -> Path:
    """Write ``data`` as JSON (with a final newline) to ``path`` atomically and return the path."""
    return write_text(path, json.dumps(data, indent=indent) + "\n")
