"""Reading torch pickle files without running code from them.

Every torch file kdsr reads goes through `torch_load`: `torch.load(weights_only=True)`, whose unpickler only
builds tensors, containers and plain Python values and refuses every other global (`os.system`,
`subprocess.call`, a class of some package, ...). There is no automatic fallback: a file that needs another
global raises `UnsafePickleError` naming it, unless the caller opted in with `trust_pickle=True` (CLI:
`--trust-checkpoint`), which prints that it fully unpickles the file.
"""

from __future__ import annotations

import _compat_pickle
import io
import os
import pickle
import pickletools
import re
import sys
import warnings
import zipfile
from typing import Any

import torch

TRUST_HINT = (
    "if you trust this file, load it with kdsr.load(path, trust_pickle=True) or the CLI flag "
    "--trust-checkpoint (this runs any code inside it), then re-save it with model.save('model.safetensors')"
)


class CheckpointError(ValueError):
    """A file given as a model / checkpoint cannot be read (CLI: exit code 2)."""


class UnsafePickleError(CheckpointError):
    """A pickle needs a Python global the safe loader does not allow; `.refused` is its name."""

    def __init__(self, path: str | os.PathLike, refused: str):
        self.path = str(path)
        self.refused = refused
        super().__init__(
            f"refusing to unpickle {self.path!r}: it needs the Python global {refused!r}, which the safe "
            f"loader does not allow (unpickling it could run code); {TRUST_HINT}"
        )


SAFE_MODULES = ("torch", "collections", "_codecs", "numpy.core.multiarray", "numpy._core.multiarray")


def refused_global(exc: BaseException, path: str | os.PathLike) -> str | None:
    """The global the safe unpickler refused, or None if `exc` is no such refusal (e.g. a corrupt file).

    torch names it in its message for most files; for the rest (e.g. a protocol-4 pickle it stops reading
    at an opcode) the pickle's opcodes are listed, without running them, for the first global outside torch.
    """
    text = str(exc)
    match = re.search(r"GLOBAL (\S+?)(?:\s| was|$)", text)
    if match:
        return _python3_name(match.group(1))
    if not re.search(r"Unsupported (operand|class|global)|WeightsUnpickler error", text):
        return None
    found = [name for name in pickle_globals(path) if not name.startswith(SAFE_MODULES)]
    return found[0] if found else None  # no foreign global: a corrupt or non-pickle file


def _python3_name(dotted: str) -> str:
    """Protocol-2 pickles store some globals by their Python 2 names (subprocess.call as commands.call);
    name them as Python 3 would import them."""
    module, _, name = dotted.rpartition(".")
    module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
    return f"{_compat_pickle.IMPORT_MAPPING.get(module, module)}.{name}"


def pickle_globals(path: str | os.PathLike) -> list[str]:
    """'module.name' of every global a pickle file (or a torch zip's data.pkl) imports; nothing is run."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
        if zipfile.is_zipfile(io.BytesIO(data)):
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                pkl = [n for n in archive.namelist() if n.endswith("data.pkl")]
                data = archive.read(pkl[0]) if pkl else b""
        names, strings, memo = [], [], {}
        for op, arg, _ in pickletools.genops(data):
            if op.name in ("GLOBAL", "INST"):
                names.append(_python3_name(str(arg).replace(" ", ".")))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                names.append(f"{strings[-2]}.{strings[-1]}")
            elif isinstance(arg, str) and ("UNICODE" in op.name or "STRING" in op.name):
                strings.append(str(arg))
            elif op.name == "MEMOIZE" and strings:
                memo[len(memo)] = strings[-1]
            elif op.name in ("BINPUT", "LONG_BINPUT", "PUT") and strings:
                memo[arg] = strings[-1]
            elif op.name in ("BINGET", "LONG_BINGET", "GET") and arg in memo:
                strings.append(memo[arg])
        return names
    except Exception:  # noqa: BLE001 - only used to word an error message
        return []


def torch_load(
    path: str | os.PathLike,
    map_location: str | torch.device | None = "cpu",
    trust_pickle: bool = False,
    who: str = "kdsr",
) -> Any:
    """torch.load `path` with weights_only=True; returns the object (tensors mapped to `map_location`).

    Raises UnsafePickleError if the file needs a global the safe unpickler refuses, ValueError (one line)
    for a truncated or non-torch file. With `trust_pickle=True` it prints a line to stderr and unpickles
    the file fully (weights_only=False) — only for files the user trusts.
    """
    if trust_pickle:
        print(
            f"{who}: --trust-checkpoint / trust_pickle=True: fully unpickling {str(path)!r} "
            "(any code inside it runs)",
            file=sys.stderr,
        )
        try:
            return torch.load(path, map_location=map_location, weights_only=False)
        except Exception as exc:  # noqa: BLE001 - a foreign file can raise anything; report one line
            raise ValueError(f"cannot read {str(path)!r} as a torch file ({_first_line(exc)})") from exc
    try:
        with warnings.catch_warnings():  # "Detected pickle protocol 4": noise for a file we may refuse anyway
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = refused_global(exc, path)
        if refused is not None:
            raise UnsafePickleError(path, refused) from None
        if not _looks_like_torch_file(path):
            raise ValueError(_NOT_A_CHECKPOINT.format(path=str(path))) from None
        # torch's own text here advises weights_only=False, which is wrong for a corrupt file
        raise ValueError(
            f"cannot read {str(path)!r}: it is not a valid torch file (corrupt or truncated?); pass a "
            ".pt / .safetensors file written by kdsr (model.save or a training run)"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        if not _looks_like_torch_file(path):
            raise ValueError(_NOT_A_CHECKPOINT.format(path=str(path))) from None
        raise ValueError(
            f"cannot read {str(path)!r} as a torch file ({_first_line(exc)}); is it complete?"
        ) from None


_NOT_A_CHECKPOINT = (
    "{path!r} is not a checkpoint (neither a torch zip archive nor a pickle); pass a .pt / .safetensors "
    "file written by kdsr (model.save or a training run)"
)


def _looks_like_torch_file(path: str | os.PathLike) -> bool:
    """True when `path` starts like something torch.save writes: a zip archive or a pickle (0x80 PROTO)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
    except OSError:
        return True  # unreadable: let the caller's message (the OSError) stand
    return head.startswith(b"PK") or head[:1] == b"\x80"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
