"""The one atomic file writer of the package: temp file in the target folder, fsync, rename.

atomic_write(path, lambda f: f.write(data))      # f: a binary file object open on the temp file
atomic_write_path(path, lambda tmp: encoder.write(str(tmp)))   # for writers that only take a file name
A crash (even kill -9) mid-write leaves the previous file intact, plus at most a hidden `.tmp-<name>.*` temp
file. The final file gets the usual mode of a new file, 0o666 & ~umask (tempfile.mkstemp alone gives 0600).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

TEMP_PREFIX = ".tmp-"


def current_umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Create or replace `path` atomically; `write(f)` fills the binary temp file `f`. Returns the path.

    Creates missing parent folders. The result has mode 0o666 & ~umask. On any error the temp file is
    removed and the previous `path` (if any) is left untouched.
    """

    def fill(tmp: Path, fd: int) -> None:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())

    return _replace_atomically(Path(path), fill)


def atomic_write_path(path: str | os.PathLike, fill: Callable[[Path], object]) -> Path:
    """`atomic_write` for a writer that takes a file name: `fill(tmp)` writes the temp file `tmp` (a Path
    in the target folder, already created with mode 0o666 & ~umask; the writer may truncate or replace
    it). Returns the path."""

    def fill_fd(tmp: Path, fd: int) -> None:
        os.close(fd)
        fill(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())  # in case the writer replaced the file
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())

    return _replace_atomically(Path(path), fill_fd)


def _replace_atomically(path: Path, fill: Callable[[Path, int], object]) -> Path:
    """mkstemp beside `path`, chmod to the umask's mode, `fill(tmp, fd)` (which closes fd), rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=TEMP_PREFIX + path.name + ".", dir=path.parent)
    try:
        os.chmod(tmp_name, 0o666 & ~current_umask())
        fill(Path(tmp_name), fd)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """`atomic_write` of a bytes payload."""
    return atomic_write(path, lambda handle: handle.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """`atomic_write` of a UTF-8 text payload."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def remove_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Delete temp files a crashed `atomic_write` left in `folder`; returns what was removed."""
    removed = []
    for tmp in Path(folder).glob(TEMP_PREFIX + "*"):
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
