"""Atomic checkpoints: a crash (exception or kill -9) in the middle of a save leaves the old file intact."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from kdsr.training import checkpoint as ckpt_io


def _state(value: float) -> dict:
    g = torch.Generator().manual_seed(int(value))
    return {
        "format": ckpt_io.CHECKPOINT_FORMAT,
        "version": ckpt_io.CHECKPOINT_VERSION,
        "iteration": int(value),
        "weights": torch.randn(64, 64, generator=g) + value,
    }


def test_roundtrip_and_foreign_files(tmp_path):
    path = ckpt_io.save_atomic(_state(3), tmp_path / "last.pt")
    loaded = ckpt_io.load_checkpoint(path)
    assert loaded["iteration"] == 3 and torch.equal(loaded["weights"], _state(3)["weights"])
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a kdsr training checkpoint"):
        ckpt_io.load_checkpoint(tmp_path / "other.pt")
    (tmp_path / "broken.pt").write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        ckpt_io.load_checkpoint(tmp_path / "broken.pt")
    with pytest.raises(FileNotFoundError):
        ckpt_io.load_checkpoint(tmp_path / "missing.pt")


def test_exception_mid_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = ckpt_io.save_atomic(_state(1), tmp_path / "last.pt")

    def crashing_save(obj, handle, *args, **kwargs):
        handle.write(b"partial garbage")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(ckpt_io.torch, "save", crashing_save)
    with pytest.raises(OSError, match="simulated"):
        ckpt_io.save_atomic(_state(2), path)
    assert ckpt_io.load_checkpoint(path)["iteration"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # the temp file was removed


def test_kill_9_mid_write_keeps_the_previous_checkpoint(tmp_path):
    path = ckpt_io.save_atomic(_state(1), tmp_path / "last.pt")
    # A child process starts saving a new checkpoint and is SIGKILLed after half of the bytes are written.
    script = textwrap.dedent(
        f"""
        import os, signal, torch
        from kdsr.training import checkpoint as ckpt_io
        real_save = torch.save
        def dying_save(obj, handle, *a, **k):
            import io
            buffer = io.BytesIO(); real_save(obj, buffer)
            data = buffer.getvalue(); handle.write(data[: len(data) // 2]); handle.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        ckpt_io.torch.save = dying_save
        state = {{"format": "kdsr-train", "version": 1, "iteration": 2, "weights": torch.ones(256, 256)}}
        ckpt_io.save_atomic(state, {str(path)!r})
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), *sys.path])}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    leftovers = [p for p in tmp_path.iterdir() if p.name != "last.pt"]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(ckpt_io.TEMP_PREFIX)  # the half-written temp
    assert ckpt_io.load_checkpoint(path)["iteration"] == 1  # the checkpoint itself is intact
    assert ckpt_io.remove_stale_temp_files(tmp_path) == leftovers
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_rng_state_roundtrip_restores_every_generator(tmp_path):
    g = torch.Generator().manual_seed(5)
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    torch.rand(3), np.random.rand(2), random.random(), torch.rand(2, generator=g)
    state = ckpt_io.capture_rng_state({"data": g})
    ckpt_io.save_atomic({"rng": state}, tmp_path / "rng.pt")
    expected = (
        torch.rand(4),
        np.random.rand(4),
        [random.random() for _ in range(4)],
        torch.rand(4, generator=g),
    )
    torch.manual_seed(99), np.random.seed(99), random.seed(99), g.manual_seed(99)
    restored = torch.load(tmp_path / "rng.pt", weights_only=True)["rng"]  # loads without full unpickling
    ckpt_io.restore_rng_state(restored, {"data": g})
    got = (torch.rand(4), np.random.rand(4), [random.random() for _ in range(4)], torch.rand(4, generator=g))
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])
    assert got[2] == expected[2] and torch.equal(got[3], expected[3])
