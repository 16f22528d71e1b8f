"""DDP: `Trainer.run` under 2 gloo processes equals 1 process on the union batch; ranks draw own data."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from test_training_support import (
    free_port,
    join_as_rank,
    make_image_folder,
    save_tiny_teacher,
    tiny_overrides,
)

from kdsr.training.config import load_config
from kdsr.training.distributed import DistContext, init_distributed, local_batch_size, shutdown
from kdsr.training.trainer import Trainer

WORLD = 2
BATCH = 4
ITERS = 2


def _record(trainer: Trainer) -> dict:
    """Wrap batch_for and optimizer.step so each iteration's batch and pre-step gradients are kept."""
    log: dict = {
        "lr": [],
        "hr": [],
        "grads": [],
        "init": {k: v.clone() for k, v in trainer.model.state_dict().items()},
    }
    batch_for, step = trainer.batch_for, trainer.optimizer.step

    def recording_batch_for(iteration):
        lr, hr = batch_for(iteration)
        log["lr"].append(lr.clone())
        log["hr"].append(hr.clone())
        return lr, hr

    def recording_step(*args, **kwargs):
        named = trainer.model.named_parameters()
        log["grads"].append({n: p.grad.detach().clone() for n, p in named if p.grad is not None})
        return step(*args, **kwargs)

    trainer.batch_for = recording_batch_for
    trainer.optimizer.step = recording_step
    return log


def _worker(rank: int, config: dict, port: int, out_dir: str) -> None:
    join_as_rank(rank, WORLD, port)
    torch.set_num_threads(1)
    runs = str(Path(config["logging"]["out_dir"]).resolve())
    writes: list[str] = []

    def audit(event, args):  # every file this process creates, opens for writing, renames or deletes in runs/
        if event in ("os.mkdir", "os.rename", "os.replace", "os.remove", "shutil.rmtree") or (
            event == "open"
            and (any(c in str(args[1]) for c in "wax+") or (args[2] or 0) & (os.O_WRONLY | os.O_RDWR))
        ):
            if str(os.path.abspath(str(args[0]))).startswith(runs):
                writes.append(f"{event} {args[0]}")

    sys.addaudithook(audit)
    ctx = init_distributed("cpu")
    try:
        trainer = Trainer(config, ctx, progress=False)
        assert trainer.local_batch == BATCH // WORLD
        log = _record(trainer)
        result = trainer.run()
        log["losses"] = result.losses
        log["writes"] = list(writes)
        torch.save(log, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        shutdown(ctx)


@pytest.mark.filterwarnings("ignore:Seems like `optimizer.step\\(\\)` has been overridden")  # by _record
@pytest.mark.parametrize("stage", ["teacher", "student"])  # the student step also runs the frozen teacher
def test_two_gloo_processes_run_like_one_process_on_the_union_batch(tmp_path, stage):
    images = make_image_folder(tmp_path / "hr", count=3, size=40)
    extra = [f"teacher={save_tiny_teacher(tmp_path / 't.pt', seed=3)}"] if stage == "student" else []
    overrides = [
        *tiny_overrides(images, tmp_path / "runs", iters=ITERS),
        f"data.batch_size={BATCH}",
        "fused_kernels=true",
        "logging.save_every=1",
        *extra,
    ]
    config = load_config(f"tiny_iso_x4_{stage}", overrides)
    mp.spawn(_worker, args=(config, free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    logs = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]

    assert logs[1]["writes"] == [], f"rank 1 wrote into the run folder: {logs[1]['writes']}"
    assert any("last.pt" in w for w in logs[0]["writes"]), "rank 0 wrote no checkpoint"
    assert (tmp_path / "runs" / config["name"] / "last.pt").is_file()
    assert logs[0]["losses"] == logs[1]["losses"] and len(logs[0]["losses"]) == ITERS  # rank-averaged
    for it in range(ITERS):
        assert logs[0]["hr"][it].shape[0] == BATCH // WORLD
        assert not torch.equal(logs[0]["hr"][it], logs[1]["hr"][it]), (
            f"ranks drew the same HR at iteration {it}"
        )
        assert not torch.equal(logs[0]["lr"][it], logs[1]["lr"][it]), (
            f"ranks drew the same LR at iteration {it}"
        )

    # One process on the union batch of every iteration, from the same initial weights.
    torch.set_num_threads(1)
    single_config = load_config(
        f"tiny_iso_x4_{stage}", [*overrides, f"logging.out_dir={tmp_path / 'single'}"]
    )
    single = Trainer(single_config, DistContext(), progress=False)
    single.model.load_state_dict(logs[0]["init"])
    union = [
        (torch.cat([lg["lr"][it] for lg in logs]), torch.cat([lg["hr"][it] for lg in logs]))
        for it in range(ITERS)
    ]
    single_log = _record(single)
    single.batch_for = lambda iteration: union[iteration]  # noqa: ARG005 - replaces the recording wrapper
    single.run()
    for it in range(ITERS):
        ddp, one = logs[0]["grads"][it], single_log["grads"][it]
        assert set(ddp) == set(one) == set(logs[1]["grads"][it]) and len(one) > 10
        for name, g in one.items():
            assert g.abs().max() > 0, name
            tol = dict(rtol=1e-4, atol=1e-6 * g.abs().max().item())
            torch.testing.assert_close(ddp[name], g, **tol, msg=f"iteration {it} {name}: DDP vs 1 process")
            torch.testing.assert_close(logs[1]["grads"][it][name], ddp[name], rtol=0, atol=0, msg=name)


def test_batch_split_needs_an_even_division():
    assert local_batch_size(8, DistContext(rank=1, world_size=2)) == 4
    with pytest.raises(ValueError, match="multiple of 3"):
        local_batch_size(8, DistContext(rank=0, world_size=3))
