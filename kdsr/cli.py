"""`kdsr` command line: one subcommand per module in kdsr.commands.

Each module kdsr/commands/<name>.py defines `add_parser(subparsers)` that adds its subparser and
sets `func=<callable taking the parsed args and returning an exit code>`. Exit codes follow
kdsr.commands._common (0 done, 1 failed while running, 2 bad usage or input, 130 interrupted); a command
reports bad input by returning 2 after one line on stderr, or by raising `UsageError`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from kdsr import __version__
from kdsr.commands._common import (
    EXIT_CODES_HELP,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    KdsrArgumentParser,
    UsageError,
)

SUBCOMMANDS = (
    "upscale",
    "export",
    "profile",
    "degrade",
    "train",
    "eval",
    "tsne",
    "prepare_subimages",
    "calibrate",
    "inspect",
)


def build_parser() -> argparse.ArgumentParser:
    """The `kdsr` parser with every subcommand; its errors are one line with exit code 2."""
    parser = KdsrArgumentParser(
        prog="kdsr",
        description="KDSR blind super-resolution: upscale images, train teacher/student models, evaluate, "
        "profile the fused IDR-DDC kernels. Run `kdsr <command> --help` for each command's flags.",
        epilog=EXIT_CODES_HELP
        + ". Shared flags, the same on every command that does the work: --device, --threads, --no-progress.",
    )
    parser.add_argument("--version", action="version", version=f"kdsr {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(f"kdsr.commands.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one `kdsr` command; returns its exit code (see EXIT_CODES_HELP)."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UsageError as exc:
        print(f"kdsr {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"kdsr {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
