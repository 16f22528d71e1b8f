"""Training-step speed of the CPU recipe's options side by side: fp32 eager (today), bf16 autocast,
torch.compile, both, and fp32 with the model and batches in channels_last (issue 24; not a config option:
the benchmark converts them). Interleaved rounds (A B C D A B C D ...), medians, ratios to fp32 eager.

    OMP_NUM_THREADS=1 python benchmarks/train_options.py --threads 1 --rounds 15 --lr-patch 32
    OMP_NUM_THREADS=1 python benchmarks/train_options.py --options "fp32 eager" "fp32 channels_last"

Same synthetic images and the same iteration indices (hence identical batches) for every option.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from kdsr.training.config import load_config
from kdsr.training.trainer import Trainer

CHANNELS_LAST = "channels_last"  # not a config override: make_trainer converts the model and its batches

OPTIONS = {
    "fp32 eager": ["train.precision=fp32", "train.compile=false"],
    "bf16 eager": ["train.precision=bf16", "train.compile=false"],
    "fp32 compile": ["train.precision=fp32", "train.compile=true"],
    "bf16 compile": ["train.precision=bf16", "train.compile=true"],
    "fp32 channels_last": ["train.precision=fp32", "train.compile=false", CHANNELS_LAST],
}


def make_images(folder: Path, count: int = 4, size: int = 160) -> Path:
    """`count` random uint8 RGB PNGs of size x size in `folder` (synthetic training data)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"b{i}.png")
    return folder


def make_trainer(tmp: Path, option: list[str], variant: str, lr_patch: int, batch: int) -> Trainer:
    """A teacher Trainer of the tiny recipe with `option` overrides, on synthetic images (CHANNELS_LAST in
    `option`: the model's weights and every batch in channels_last)."""
    nhwc = CHANNELS_LAST in option
    option = [o for o in option if o != CHANNELS_LAST]
    overrides = [
        f"data.train_dir={make_images(tmp / 'hr')}",
        "data.val_dir=null",
        f"logging.out_dir={tmp / 'runs'}",
        "logging.tensorboard=false",
        f"model.variant={variant}",
        f"data.lr_patch={lr_patch}",
        f"data.batch_size={batch}",
        *option,
    ]
    trainer = Trainer(load_config("tiny_iso_x4_teacher", overrides), progress=False)
    if nhwc:
        trainer.model.to(memory_format=torch.channels_last)  # in place: the optimizer keeps its parameters
        batch_for = trainer.batch_for
        to_nhwc = torch.channels_last
        trainer.batch_for = lambda it: tuple(t.contiguous(memory_format=to_nhwc) for t in batch_for(it))
    return trainer


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (default 15)")
    parser.add_argument("--variant", default="tiny", help="model variant (default tiny)")
    parser.add_argument("--lr-patch", type=int, default=32, help="LR patch size (default 32)")
    parser.add_argument("--batch", type=int, default=8, help="batch size (default 8)")
    parser.add_argument("--options", nargs="+", default=list(OPTIONS), help=f"subset of {list(OPTIONS)}")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {
            name: make_trainer(Path(tmp) / str(i), OPTIONS[name], args.variant, args.lr_patch, args.batch)
            for i, name in enumerate(args.options)
        }
        for trainer in trainers.values():  # warm-up: compile, kernel load, allocator
            for it in range(3):
                trainer.train_step(it)
        times: dict[str, list[float]] = {name: [] for name in trainers}
        for r in range(args.rounds):
            for name, trainer in trainers.items():
                start = time.perf_counter()
                trainer.train_step(100 + r)
                times[name].append(time.perf_counter() - start)
    base = statistics.median(times[args.options[0]])
    load = os.getloadavg()
    print(
        f"{args.variant}, batch {args.batch}, LR patch {args.lr_patch}, {args.threads} thread(s), "
        f"{args.rounds} interleaved rounds, load average {load[0]:.1f} / {load[1]:.1f}"
    )
    print("| option | median ms / step | min ms | speed-up vs first |")
    print("|---|---|---|---|")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"| {name} | {1e3 * med:.1f} | {1e3 * min(values):.1f} | {base / med:.2f}x |")


if __name__ == "__main__":
    main()
