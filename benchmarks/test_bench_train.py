"""Training-iteration benchmarks: one full `Trainer.train_step` (batch sampling, degradation, forward, loss,
backward, Adam), fused IDR-DDC kernels vs the grouped-conv formulation.

    pytest benchmarks/test_bench_train.py --benchmark-only --benchmark-group-by=group
    KDSR_BENCH_THREADS=2 pytest benchmarks/test_bench_train.py --benchmark-only

Groups: teacher / student iteration of the "tiny" CPU recipe (B=8, 16x16 LR patches, iso x4, per-sample
kernels) on synthetic HR images. Iterations per second = 1 / mean. On a CUDA machine the same code trains on
the GPU; see benchmarks/gpu_train_check.py for the M-size student step at B=16, 64x64 LR.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kdsr.training.config import load_config
from kdsr.training.trainer import Trainer

THREADS = int(os.environ.get("KDSR_BENCH_THREADS", str(os.cpu_count() or 1)))
IMPLEMENTATIONS = {"grouped-conv": "false", "fused": "true"}


def _images(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(4):
        img = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
        Image.fromarray(img).save(folder / f"b{i}.png")
    return folder


def _trainer(tmp_path: Path, stage: str, fused: str) -> Trainer:
    images = _images(tmp_path / "hr")
    overrides = [
        f"data.train_dir={images}",
        "data.val_dir=null",
        f"logging.out_dir={tmp_path / 'runs'}",
        "logging.tensorboard=false",
        f"fused_kernels={fused}",
    ]
    if stage == "student":
        teacher = Trainer(load_config("tiny_iso_x4_teacher", overrides), progress=False)
        teacher_path = teacher.model.save(tmp_path / "teacher.pt")
        overrides.append(f"teacher={teacher_path}")
    return Trainer(load_config(f"tiny_iso_x4_{stage}", overrides), progress=False)


@pytest.mark.parametrize("stage", ["teacher", "student"])
@pytest.mark.parametrize("impl", list(IMPLEMENTATIONS))
def test_bench_train_iteration(benchmark, tmp_path, stage, impl):
    torch.set_num_threads(THREADS)
    trainer = _trainer(tmp_path, stage, IMPLEMENTATIONS[impl])
    benchmark.group = f"train-iteration-tiny-{stage}-b8-16x16"
    benchmark.extra_info.update(
        impl=impl,
        stage=stage,
        threads=torch.get_num_threads(),
        device=platform.processor() or "cpu",
        torch=torch.__version__,
    )
    counter = iter(range(10**6))
    trainer.train_step(next(counter))  # warm-up (kernel build/load, allocator)
    benchmark.pedantic(lambda: trainer.train_step(next(counter)), rounds=5, iterations=1, warmup_rounds=1)
