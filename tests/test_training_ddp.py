"""DDP with 2 gloo processes: the averaged gradients equal one process on the whole batch."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from test_training_support import make_image_folder, save_tiny_teacher, tiny_overrides

from kdsr.training.config import load_config
from kdsr.training.distributed import DistContext, init_distributed, local_batch_size, shutdown
from kdsr.training.trainer import Trainer

WORLD = 2
BATCH = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fixed_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """The same (lr, hr) in every process: lr (4,3,8,8), hr (4,3,32,32), smooth-ish random values in (0,1)."""
    g = torch.Generator().manual_seed(7)
    hr = torch.rand(BATCH, 3, 32, 32, generator=g)
    lr = torch.nn.functional.avg_pool2d(hr, 4) + 0.01 * torch.rand(BATCH, 3, 8, 8, generator=g)
    return lr, hr


def _gradients(trainer: Trainer, lr: torch.Tensor, hr: torch.Tensor) -> dict[str, torch.Tensor]:
    loss, _ = trainer.compute_loss(lr, hr, iteration=0)
    loss.backward()
    return {
        name: p.grad.detach().clone() for name, p in trainer.model.named_parameters() if p.grad is not None
    }


def _worker(rank: int, config: dict, port: int, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    ctx = init_distributed("cpu")
    try:
        trainer = Trainer(config, ctx, progress=False)
        assert trainer.local_batch == BATCH // WORLD
        lr, hr = _fixed_batch()
        part = slice(rank * trainer.local_batch, (rank + 1) * trainer.local_batch)
        grads = _gradients(trainer, lr[part], hr[part])
        if ctx.is_main:
            torch.save(grads, out)
    finally:
        shutdown(ctx)


@pytest.mark.parametrize("stage", ["student"])  # the student step also runs the frozen teacher's encoder
def test_two_gloo_processes_match_one_process_on_the_full_batch(tmp_path, stage):
    images = make_image_folder(tmp_path / "hr", count=2, size=40)
    extra = [f"teacher={save_tiny_teacher(tmp_path / 't.pt', seed=3)}"] if stage == "student" else []
    config = load_config(
        f"tiny_iso_x4_{stage}",
        [
            *tiny_overrides(images, tmp_path / "runs"),
            f"data.batch_size={BATCH}",
            "fused_kernels=false",
            *extra,
        ],
    )
    out = tmp_path / "ddp_grads.pt"
    mp.spawn(_worker, args=(config, _free_port(), str(out)), nprocs=WORLD, join=True)
    ddp_grads = torch.load(out, weights_only=True)

    torch.set_num_threads(1)
    single = Trainer(config, DistContext(), progress=False)
    lr, hr = _fixed_batch()
    full_grads = _gradients(single, lr, hr)
    assert set(ddp_grads) == set(full_grads) and len(full_grads) > 10
    for name, g in full_grads.items():
        assert g.abs().max() > 0, name
        torch.testing.assert_close(ddp_grads[name], g, rtol=1e-4, atol=1e-6 * g.abs().max().item(), msg=name)


def test_batch_split_needs_an_even_division():
    assert local_batch_size(8, DistContext(rank=1, world_size=2)) == 4
    with pytest.raises(ValueError, match="multiple of 3"):
        local_batch_size(8, DistContext(rank=0, world_size=3))
