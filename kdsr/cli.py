"""`kdsr` command line: one subcommand per module in kdsr.commands.

Each module kdsr/commands/<name>.py defines `add_parser(subparsers)` that adds its subparser and
sets `func=<callable taking the parsed args and returning an exit code>`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = ("upscale", "export", "profile", "degrade", "train", "eval", "tsne", "prepare_subimages")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kdsr",
        description="KDSR blind super-resolution: upscale images, train teacher/student models, evaluate, "
        "profile the fused IDR-DDC kernels. Run `kdsr <command> --help` for each command's flags.",
    )
    sub = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(f"kdsr.commands.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
