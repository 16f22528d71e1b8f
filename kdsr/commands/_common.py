"""Flags shared by several `kdsr` commands, defined once so they read the same everywhere."""

from __future__ import annotations

import argparse

TRUST_CHECKPOINT_HELP = (
    "fully unpickle a legacy torch checkpoint that the safe loader refuses (it needs a Python global "
    "outside tensors/containers). This runs any code in the file: only for files you trust. Without it, "
    "checkpoints are read with torch.load(weights_only=True) and safetensors files as plain data"
)


def add_trust_checkpoint_flag(parser: argparse.ArgumentParser) -> None:
    """Add `--trust-checkpoint` (args.trust_checkpoint: bool) to a command that reads checkpoints."""
    parser.add_argument("--trust-checkpoint", action="store_true", help=TRUST_CHECKPOINT_HELP)
