"""torch.profiler breakdown of one CPU training step (teacher) of a variant, for docs/training_profile.md.

OMP_NUM_THREADS=1 python benchmarks/profile_train_step.py --variant tiny --lr-patch 32 --threads 1
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function
from train_options import OPTIONS, make_trainer


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variant", default="tiny", help="model variant (default tiny)")
    parser.add_argument("--lr-patch", type=int, default=32, help="LR patch (default 32)")
    parser.add_argument("--batch", type=int, default=8, help="batch size (default 8)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--option", default="fp32 eager", choices=list(OPTIONS), help="training option")
    parser.add_argument("--rows", type=int, default=18, help="table rows (default 18)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = make_trainer(Path(tmp), OPTIONS[args.option], args.variant, args.lr_patch, args.batch)
        for it in range(2):
            trainer.train_step(it)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for it in range(2, 5):
                lr, hr = None, None
                with record_function("data: crop + degrade"):
                    lr, hr = trainer.batch_for(it)
                with record_function("forward + loss"):
                    loss, _ = trainer.compute_loss(lr, hr, it)
                trainer.optimizer.zero_grad(set_to_none=True)
                with record_function("backward"):
                    loss.backward()
                with record_function("optimizer (Adam)"):
                    trainer.optimizer.step()
    print(
        f"{args.variant}, batch {args.batch}, LR patch {args.lr_patch}, {args.threads} thread(s), "
        f"{args.option}"
    )
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))
    print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
