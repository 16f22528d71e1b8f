"""What every `kdsr` command shares: exit codes, the one-line error convention, the flags defined once
(`--device`, `--threads`, `--no-progress`, `--trust-checkpoint`, `--kernels`) so they read the same, the one
image scan, and the wording of errors.

The user contract (enforced by `kdsr.cli.main` through `run_command`, tested table-driven over every command):
* bad usage or input -- command line, a missing path, a folder without images, a config, checkpoint or
  device -- is one line `kdsr <command>: error: <what, and what to do>` and exit code 2, before any work and
  before any output folder is created;
* a file that fails while processing is one line `kdsr <command>: <file>: <reason in words>` ("not an
  image", "file is truncated") and, once the rest is done, exit code 1;
* no traceback and no Python exception names in any message (KDSR_DEBUG=1 re-raises, for bug reports).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NoReturn

# ---------------------------------------------------------------------------------------------- exit codes
EXIT_OK = 0  # the work was done
EXIT_FAILED = 1  # the work failed while running: a file that could not be processed, a diverged run, a bug
EXIT_USAGE = 2  # nothing was done: bad command line, input path, config, checkpoint or device (argparse's 2)
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)

EXIT_CODES_HELP = (
    f"exit codes (every command): {EXIT_OK} done; {EXIT_FAILED} the work failed while running (e.g. a file "
    f"that could not be processed, a diverged training run); {EXIT_USAGE} bad usage or input (command line, "
    f"path, config, checkpoint, device), reported in one line before any work; {EXIT_INTERRUPTED} "
    "interrupted (Ctrl-C)"
)


class UsageError(Exception):
    """Bad input found by a command: `kdsr.cli.main` prints `kdsr <command>: error: <message>` and
    returns EXIT_USAGE. The message names the problem and what to do, in one line."""


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, without breaking lines at hyphens (model names stay whole)."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        import textwrap

        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        import textwrap

        return textwrap.fill(
            " ".join(text.split()),
            width,
            initial_indent=indent,
            subsequent_indent=indent,
            break_on_hyphens=False,
        )


class KdsrArgumentParser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line (`kdsr <command>: error: ...; see --help`), exit code 2."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def fail(command: str, message: str, code: int = EXIT_USAGE) -> int:
    """Print `kdsr <command>: error: <message>` to stderr and return `code` (for `return fail(...)`)."""
    print(f"kdsr {command}: error: {message}", file=sys.stderr)
    return code


# ---------------------------------------------------------------------------------------------- flags
TRUST_CHECKPOINT_HELP = (
    "fully unpickle a legacy torch checkpoint that the safe loader refuses (it needs a Python global "
    "outside tensors/containers). This runs any code in the file: only for files you trust. Without it, "
    "checkpoints are read with torch.load(weights_only=True) and safetensors files as plain data"
)
DEVICE_HELP = "auto (cuda when available, else cpu), cpu, cuda or cuda:N"
THREADS_HELP = "torch CPU threads (torch.set_num_threads; default: torch's choice)"
NO_PROGRESS_HELP = "hide the tqdm progress bars"
KERNELS_HELP = (
    "test kernels: 'gaussian8' (the 8 isotropic sigmas of the scale), 'aniso' (the 9 anisotropic test "
    "kernels) or comma-separated blur sigmas, e.g. '1.8,2.6,3.2' (default: gaussian8)"
)


def add_trust_checkpoint_flag(parser: argparse.ArgumentParser) -> None:
    """Add `--trust-checkpoint` (args.trust_checkpoint: bool) to a command that reads checkpoints."""
    parser.add_argument("--trust-checkpoint", action="store_true", help=TRUST_CHECKPOINT_HELP)


def positive_int(text: str) -> int:
    """argparse type: an int >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def add_runtime_flags(
    parser: argparse.ArgumentParser,
    *,
    device: bool = True,
    threads: bool = True,
    progress: bool = True,
    device_default: str | None = "auto",
    device_default_help: str = "auto",
) -> None:
    """Add the shared `--device` (args.device: str | None), `--threads` (args.threads: int | None) and
    `--no-progress` (args.no_progress: bool) flags, with the same help on every command.

    `device_default` / `device_default_help`: what an omitted --device means (train: None, the config's).
    Use `apply_threads(args)` and `resolve_device(args.device)` to act on them.
    """
    if device:
        parser.add_argument(
            "--device",
            default=device_default,
            metavar="DEVICE",
            help=f"where to run: {DEVICE_HELP} (default: {device_default_help})",
        )
    if threads:
        parser.add_argument("--threads", type=positive_int, default=None, metavar="N", help=THREADS_HELP)
    if progress:
        parser.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)


def apply_threads(args: argparse.Namespace) -> None:
    """torch.set_num_threads(args.threads) when --threads was given."""
    if getattr(args, "threads", None) is not None:
        import torch

        torch.set_num_threads(args.threads)


def resolve_device(name: str | None):
    """The torch.device of a --device value (kdsr.device.pick_device); UsageError on a bad one."""
    from kdsr.device import DeviceError, pick_device

    try:
        return pick_device(name)
    except DeviceError as exc:
        raise UsageError(str(exc)) from None


def kernels_arg(text: str) -> str | list[float]:
    """argparse type of `--kernels` (degrade, eval): 'gaussian8', 'aniso', or a list of sigmas > 0.

    Returns the name, or the sigmas as floats (kdsr.data.benchmark_kernels takes either).
    """
    name = text.strip()
    if name in ("gaussian8", "aniso"):
        return name
    items = [v.strip() for v in name.split(",")]
    try:
        sigmas = [float(v) for v in items if v]
    except ValueError:
        sigmas = []
    if not sigmas or any(not (math.isfinite(s) and s > 0) for s in sigmas):
        raise argparse.ArgumentTypeError(
            f"expected 'gaussian8', 'aniso' or comma-separated blur sigmas > 0 (e.g. 1.8,2.6), got {text!r}"
        )
    return sigmas


def kernels_label(kernels: str | list[float]) -> str:
    """The --kernels value as the user would type it (for tables and JSON)."""
    return kernels if isinstance(kernels, str) else ",".join(f"{s:g}" for s in kernels)


# ---------------------------------------------------------------------------------------------- images
def scan_images(inputs: Iterable[str | os.PathLike], command: str = "") -> list[Path]:
    """The image files of `inputs`: files named directly (any extension Pillow reads), plus the files with
    one of kdsr.data.io.IMAGE_EXTENSIONS directly inside named folders (sorted by name).

    Raises UsageError (exit 2) for a missing path, or a folder without images (the message names the folder
    and the extensions looked for). `command` is unused; it keeps call sites readable.
    """
    from kdsr.data.io import IMAGE_EXTENSIONS, list_images

    files: list[Path] = []
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            try:
                files += list_images(path)
            except ValueError:
                raise UsageError(
                    f"no images in {path} (looked for {', '.join(IMAGE_EXTENSIONS)}); give image files or a "
                    "folder holding some"
                ) from None
        elif path.exists():
            files.append(path)
        else:
            raise UsageError(f"{path}: no such file or folder")
    return files


def check_folder(path: str | os.PathLike, flag: str) -> Path:
    """`path` as an existing folder of images to read; UsageError naming `flag` otherwise (missing path, a
    file, or a folder without images)."""
    folder = Path(path)
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise UsageError(f"{flag} {folder} {what}; give a folder of images")
    scan_images([folder])
    return folder


def check_output_folder(outdir: str | os.PathLike, flag: str = "-o") -> Path:
    """Check that `outdir` is a folder or can be created as one, WITHOUT creating it (commands create it
    when they write their first file, so a failed run leaves nothing behind). UsageError otherwise."""
    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise UsageError(f"{flag} {outdir} is an existing file; give a folder (created if missing)")
    for parent in outdir.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"{flag} {outdir}: {parent} is a file, not a folder; give a folder path")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise UsageError(
                    f"{flag} {outdir}: cannot create a folder inside {parent} (permission denied)"
                )
            break
    return outdir


# ---------------------------------------------------------------------------------------------- wording
_EXCEPTION_NAME = re.compile(r"\b(?:[a-z_]+\.)*[A-Z][A-Za-z]*(?:Error|Exception|Warning)\b:?\s*")


def error_words(exc: BaseException) -> str:
    """What went wrong, in words, on one line: "not an image", "file is truncated", "no such file", ...,
    else the exception's own message -- never the exception's class name."""
    from PIL import Image, UnidentifiedImageError

    text = " ".join(str(exc).split())
    if isinstance(exc, UnidentifiedImageError):
        return "not an image (or a format Pillow cannot read)"
    if isinstance(exc, Image.DecompressionBombError):
        return "image too large to decode safely (Pillow's decompression-bomb limit)"
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, IsADirectoryError):
        return "is a folder, not a file"
    if isinstance(exc, (OSError, SyntaxError)) and re.search(
        r"truncated|unexpected end|broken data", text, re.I
    ):
        return "file is truncated (incomplete download or copy?)"
    if isinstance(exc, OSError) and exc.strerror and not text:
        return exc.strerror.lower()
    text = _EXCEPTION_NAME.sub("", text).strip(" :")
    return text or "failed with an unexpected error (run with KDSR_DEBUG=1 for details)"


def say_file_error(command: str, path: str | os.PathLike, exc: BaseException) -> None:
    """Print the per-file failure line `kdsr <command>: <path>: <reason in words>` to stderr."""
    print(f"kdsr {command}: {path}: {error_words(exc)}", file=sys.stderr)


def run_command(command: str, func: Callable[[argparse.Namespace], int | None], args) -> int:
    """Run a command's `func(args)` under the user contract: UsageError and a checkpoint / path / device
    problem raised before any work -> one line, EXIT_USAGE; any other error -> one line, EXIT_FAILED;
    Ctrl-C -> EXIT_INTERRUPTED. KDSR_DEBUG=1 re-raises (for a traceback)."""
    from kdsr.device import DeviceError
    from kdsr.safe_load import CheckpointError

    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        print(f"kdsr {command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if os.environ.get("KDSR_DEBUG") == "1":
            raise
        usage = isinstance(exc, UsageError | CheckpointError | DeviceError)
        return fail(command, error_words(exc), EXIT_USAGE if usage else EXIT_FAILED)


def load_model(name: str, device, *, flag: str = "--checkpoint", trust: bool = False, **kwargs):
    """`kdsr.load(name, map_location=device, trust_pickle=trust, **kwargs)`; a missing file, unknown shipped
    name or unreadable checkpoint becomes a UsageError (exit 2) naming `flag`."""
    import kdsr

    try:
        return kdsr.load(name, map_location=device, trust_pickle=trust, **kwargs)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        text = _EXCEPTION_NAME.sub("", " ".join(str(exc).split())).removeprefix("kdsr.load: ")
        raise UsageError(f"{flag} {name}: {text or 'cannot be loaded'}") from None
