"""The one place a device name ("auto", "cpu", "cuda", "cuda:N") becomes a torch.device.

Every command (`--device`) and the training config (`device:`) go through `pick_device`, so the names
accepted and the error messages are the same everywhere.
"""

from __future__ import annotations

import torch

DEVICE_NAMES = "auto, cpu, cuda or cuda:N"


class DeviceError(ValueError):
    """A device name that is malformed or not usable on this machine; the message says what to use."""


def pick_device(name: str | None = "auto", local_rank: int = 0) -> torch.device:
    """Map a device name to a torch.device.

    Args:
        name: "auto" (or None): CUDA when available, else the CPU; "cpu"; "cuda" (this process's GPU:
            cuda:`local_rank`, as torchrun assigns); "cuda:N".
        local_rank: the GPU index "cuda"/"auto" mean under DDP (torchrun's LOCAL_RANK); 0 otherwise.

    Raises:
        DeviceError: the name is not one of the above, or names a GPU this machine does not have.
    """
    text = "auto" if name is None else str(name).strip()
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError) as exc:
        raise DeviceError(f"device {name!r} is not a device name; use {DEVICE_NAMES}") from exc
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type != "cuda":
        raise DeviceError(f"device {name!r} is not supported; use {DEVICE_NAMES}")
    if not torch.cuda.is_available():
        raise DeviceError(f"device {name!r} requested but CUDA is not available here; use cpu")
    index = local_rank if device.index is None else device.index
    count = torch.cuda.device_count()
    if not 0 <= index < count:
        raise DeviceError(f"device cuda:{index} does not exist: this machine has {count} GPU(s)")
    return torch.device("cuda", index)
