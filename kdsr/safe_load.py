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

    Raises UnsafePickleError if the file needs a global the safe unpickler refuses, ValueError (one line,
    never torch's "retry with weights_only=False" advice) for a truncated, corrupt or non-torch file. With
    `trust_pickle=True` it prints a line to stderr and unpickles the file fully (weights_only=False) — only
    for files the user trusts.
    """
    if trust_pickle:
        print(
            f"{who}: --trust-checkpoint / trust_pickle=True: fully unpickling {str(path)!r} "
            "(any code inside it runs)",
            file=sys.stderr,
        )
        try:
            return torch.load(path, map_location=map_location, weights_only=False)
        except Exception:  # noqa: BLE001 - a foreign file can raise anything; report one line
            message = _CORRUPT if _looks_like_torch_file(path) else _NOT_A_CHECKPOINT
            raise ValueError(message.format(path=str(path))) from None
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
        raise ValueError(_CORRUPT.format(path=str(path))) from None
    except Exception:  # noqa: BLE001 - random bytes can make the unpickler raise anything (IndexError, ...)
        if not _looks_like_torch_file(path):
            raise ValueError(_NOT_A_CHECKPOINT.format(path=str(path))) from None
        raise ValueError(_CORRUPT.format(path=str(path))) from None


_NOT_A_CHECKPOINT = (
    "cannot read {path!r}: it is not a checkpoint (neither a torch zip archive nor a pickle); pass a .pt / "
    ".safetensors file written by kdsr (model.save or a training run)"
)
_CORRUPT = (
    "cannot read {path!r}: it is not a valid torch file (not a PyTorch checkpoint, or the file is corrupt or "
    "truncated); pass a .pt / .safetensors file written by kdsr (model.save or a training run)"
)


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """(metadata, tensors on the CPU) of a safetensors file (no code runs).

    Raises ValueError "<path> is not a valid safetensors file (<reason>)" for a malformed or unreadable file.
    """
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            return handle.metadata() or {}, {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as exc:  # noqa: BLE001 - SafetensorError / OSError: one line for a malformed file
        text = (str(exc).strip() or type(exc).__name__).splitlines()[0]
        raise ValueError(f"{str(path)!r} is not a valid safetensors file ({text})") from None


def _looks_like_torch_file(path: str | os.PathLike) -> bool:
    """True when `path` starts like something torch.save writes: a zip archive or a pickle (0x80 PROTO)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
    except OSError:
        return True  # unreadable: let the caller's message (the OSError) stand
    return head.startswith(b"PK") or head[:1] == b"\x80"


def load_exported_program(path: str | os.PathLike, trust_pickle: bool = False) -> Any:
    """`torch.export.load` a .pt2 archive after checking every pickle inside it with `weights_only=True`.

    torch.export.load unpickles some members fully (pickled weights, and a weights_only=False retry for the
    rest), so a crafted .pt2 could run code. Each pickled member (``*.pt``, a weight or constant its config
    marks ``use_pickle``, anything under ``custom_objects/``) must load with the safe unpickler first; a
    member that needs another global raises UnsafePickleError, a file that is not a .pt2 archive ValueError.
    The archive is read once and loaded from memory. Returns the ExportedProgram.
    """
    import json

    data = _read_bytes(path)
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise ValueError(
            f"cannot read {str(path)!r}: not a torch.export archive (.pt2), or the file is corrupt; "
            "write one with kdsr export --format torch-export"
        ) from None
    if not trust_pickle:
        names = archive.namelist()
        pickled = {n for n in names if n.endswith(".pt") or "/custom_objects/" in f"/{n}"}
        for name in names:
            if name.endswith("_config.json") and "/data/" in f"/{name}":
                folder = name.rsplit("/", 1)[0]
                entries = json.loads(archive.read(name)).get("config", {}).values()
                pickled |= {f"{folder}/{e['path_name']}" for e in entries if e.get("use_pickle")}
        for name in sorted(pickled):
            _check_weights_only(archive.read(name), path, name)
    return torch.export.load(io.BytesIO(data))


def _read_bytes(path: str | os.PathLike) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise ValueError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None


def _check_weights_only(member: bytes, path: str | os.PathLike, name: str) -> None:
    """Load one pickled archive member with weights_only=True; UnsafePickleError / ValueError if it fails."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            torch.load(io.BytesIO(member), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        match = re.search(r"GLOBAL (\S+?)(?:\s| was|$)", str(exc))
        if match:
            raise UnsafePickleError(f"{path} ({name})", _python3_name(match.group(1))) from None
        raise ValueError(_unreadable(f"{path} ({name})", exc)) from None
    except Exception as exc:  # noqa: BLE001 - a foreign member can raise anything; report one line
        raise ValueError(_unreadable(f"{path} ({name})", exc)) from None


def _unreadable(path: str | os.PathLike, exc: BaseException) -> str:
    """One line for a file torch cannot read that refused no global: random bytes, truncation, corruption.

    torch's own text for these suggests retrying with weights_only=False, which would not help and would run
    whatever code the file holds; it is left out, keeping only the reason (e.g. "Unsupported operand 199")."""
    text = str(exc)
    match = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
    reason = (match.group(1) if match else _first_line(exc)).split(". ")[0].strip().rstrip(".,")
    detail = type(exc).__name__ if "weights_only" in reason else f"{type(exc).__name__}: {reason}"
    return (
        f"cannot read {str(path)!r}: not a PyTorch checkpoint, or the file is corrupt or truncated ({detail})"
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
