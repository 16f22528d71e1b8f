"""Atomic training checkpoints holding everything needed to continue a run exactly.

A checkpoint is one torch file:
    {"format": "kdsr-train", "version": 1, "iteration": int (iterations done),
     "model": the kdsr-model dict (loadable with kdsr.load), "ema_model": the same for the EMA or None,
     "optimizer": ..., "ema": state dict or None, "gan": stage gan's state or None,
     "rng": {torch, numpy, python, cuda?, generators...}, "config": the run's config as a plain dict
     (RunConfig.to_dict()), "best_psnr": float or None, "pair_queue": the real-world queue or None}
Checkpoints written before the LR schedule became a function of config and iteration also hold a
"scheduler" entry; it is ignored on resume.
`save_atomic` writes a temp file in the target folder, fsyncs it and renames it over the target, so a
crash (even kill -9) mid-write leaves the previous file intact.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdsr.atomic import TEMP_PREFIX, atomic_write, remove_stale_temp_files  # noqa: F401 - re-exported
from kdsr.safe_load import UnsafePickleError, torch_load

CHECKPOINT_FORMAT = "kdsr-train"
CHECKPOINT_VERSION = 1


def save_atomic(obj: Any, path: str | Path) -> Path:
    """torch.save `obj` to `path` atomically (kdsr.atomic.atomic_write: temp + fsync + rename, mode
    0o666 & ~umask); returns the path."""
    return atomic_write(path, lambda handle: torch.save(obj, handle))


def capture_rng_state(generators: dict[str, torch.Generator] | None = None) -> dict[str, Any]:
    """Every RNG state of this process: torch CPU, CUDA (all devices), numpy, python, named generators."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        # numpy's state as tensors and numbers, so the checkpoint loads with torch.load(weights_only=True)
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)),
        "python": random.getstate(),
        "generators": {name: g.get_state() for name, g in (generators or {}).items()},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any], generators: dict[str, torch.Generator] | None = None) -> None:
    """Inverse of `capture_rng_state`; generators are matched by name."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for name, g in (generators or {}).items():
        if name in state["generators"]:
            g.set_state(state["generators"][name])


def load_checkpoint(
    path: str | Path, map_location: str | torch.device | None = "cpu", trust_pickle: bool = False
) -> dict[str, Any]:
    """Read a training checkpoint written by the trainer, with torch.load(weights_only=True): it holds only
    tensors, containers and plain values (RNG states as tensors/ints). Raises ValueError for other files,
    `kdsr.safe_load.UnsafePickleError` (a ValueError) for a pickle that needs other globals unless
    `trust_pickle` (prints what it does, then unpickles fully)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        ckpt = torch_load(path, map_location, trust_pickle=trust_pickle, who="kdsr train")
    except UnsafePickleError:
        raise
    except ValueError as exc:  # truncated or foreign file
        raise ValueError(
            f"cannot read checkpoint: {exc}; --resume needs a last.pt/best.pt written by `kdsr train`"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{str(path)!r} is not a kdsr training checkpoint (format {CHECKPOINT_FORMAT!r}); "
            "--resume needs a last.pt/best.pt written by `kdsr train`"
        )
    if ckpt.get("version", 0) > CHECKPOINT_VERSION:
        raise ValueError(f"{str(path)!r} has checkpoint version {ckpt['version']}; upgrade kdsr to read it")
    return ckpt
