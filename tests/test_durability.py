"""Atomic writes are durable (kdsr/atomic.py): the temp file's data is fsync'ed before the rename, and the
folder is fsync'ed after it, so after a power cut the path holds the old file or the complete new one.

Every ``os.fsync`` and ``os.replace`` is recorded with the inode it touches (``os.fstat`` of the fd,
``os.stat`` of the rename source), so the checks name the file, not a call count.
"""

from __future__ import annotations

import os
import stat

import pytest

from kdsr import atomic


@pytest.fixture
def io_log(monkeypatch):
    """[(op, inode, is_dir)] for every fsync and replace, in order; the real calls still run."""
    log: list[tuple[str, int, bool]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        st = os.fstat(fd)
        log.append(("fsync", st.st_ino, stat.S_ISDIR(st.st_mode)))
        return real_fsync(fd)

    def replace(src, dst, *args, **kwargs):
        log.append(("replace", os.stat(src).st_ino, False))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return log


def _write_bytes(path, data):
    atomic.atomic_write(path, lambda f: f.write(data))


def _write_by_name(path, data):
    def fill(tmp):
        with open(tmp, "wb") as f:  # a writer that only takes a file name (e.g. an encoder)
            f.write(data)

    atomic.atomic_write_path(path, fill)


def _write_by_replacing(path, data):
    def fill(tmp):  # a writer that replaces the temp file by a new one (a new inode)
        other = tmp.with_name(tmp.name + ".x")
        other.write_bytes(data)
        os.rename(other, tmp)

    atomic.atomic_write_path(path, fill)


@pytest.mark.parametrize("write", [_write_bytes, _write_by_name, _write_by_replacing])
@pytest.mark.parametrize("existing", [False, True])
def test_data_fsynced_before_rename_and_folder_after(tmp_path, io_log, write, existing):
    path = tmp_path / "sub" / "out.bin"
    if existing:
        path.parent.mkdir()
        path.write_bytes(b"old contents")
    data = os.urandom(4096)
    write(path, data)
    assert path.read_bytes() == data
    final = os.stat(path).st_ino
    folder = os.stat(path.parent).st_ino
    renames = [i for i, (op, ino, _) in enumerate(io_log) if op == "replace" and ino == final]
    assert len(renames) == 1, f"the file was not put in place by one os.replace: {io_log}"
    r = renames[0]
    assert ("fsync", final, False) in io_log[:r], "the new file's data was not fsync'ed before the rename"
    assert ("fsync", folder, True) in io_log[r + 1 :], "the folder was not fsync'ed after the rename"
