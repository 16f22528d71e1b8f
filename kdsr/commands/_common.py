"""What every `kdsr` command shares: exit codes, the one-line error convention, and the flags defined
once (`--device`, `--threads`, `--no-progress`, `--trust-checkpoint`, `--kernels`) so they read the same."""

from __future__ import annotations

import argparse
import math
import sys
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


class KdsrArgumentParser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line (`kdsr <command>: error: ...; see --help`), exit code 2."""

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
