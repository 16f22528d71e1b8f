"""`kdsr` command line: one subcommand per module in kdsr.commands.

Each module kdsr/commands/<name>.py defines `add_parser(subparsers)` that adds its subparser and
sets `func=<callable taking the parsed args and returning an exit code>`. Exit codes follow
kdsr.commands._common (0 done, 1 failed while running, 2 bad usage or input, 130 interrupted); a command
reports bad input by returning 2 after one line on stderr, or by raising `UsageError`.
"""

from __future__ import annotations

import argparse
import sys

from kdsr import __version__
from kdsr.commands import (
    calibrate,
    degrade,
    export,
    inspect,
    models,
    prepare_subimages,
    profile,
    train,
    tsne,
    upscale,
)
from kdsr.commands import eval as eval_command
from kdsr.commands._common import EXIT_CODES_HELP, KdsrArgumentParser, run_command

COMMAND_MODULES = {
    "upscale": upscale,
    "models": models,
    "export": export,
    "profile": profile,
    "degrade": degrade,
    "train": train,
    "eval": eval_command,
    "tsne": tsne,
    "prepare_subimages": prepare_subimages,
    "calibrate": calibrate,
    "inspect": inspect,
}
SUBCOMMANDS = tuple(COMMAND_MODULES)


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
    for module in COMMAND_MODULES.values():
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one `kdsr` command; returns its exit code (see EXIT_CODES_HELP).

    Every command runs under `kdsr.commands._common.run_command` (one-line errors, the exit codes); an
    unknown flag is reported by the command's own parser (`kdsr <command>: error: ...`).
    """
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        action.choices[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    return run_command(args.command, args.func, args)


if __name__ == "__main__":
    sys.exit(main())
