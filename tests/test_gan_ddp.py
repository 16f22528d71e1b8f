"""DDP of the GAN stage: 2 gloo processes give G and D the gradients of 1 process on the union batch."""

from __future__ import annotations

import importlib.util
import os

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

import kdsr
from kdsr.training.config import load_config
from kdsr.training.distributed import DistContext, init_distributed, shutdown
from kdsr.training.trainer import Trainer

WORLD = 2
BATCH = 4
ITERS = 2

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("stlpips_pytorch") is None,
    reason='needs the [gan] extra: pip install --no-deps stlpips-pytorch==0.0.2 (or pip install -e ".[gan]")',
)


def _record(trainer: Trainer) -> dict:
    """Keep each iteration's batch and the pre-step gradients of G and D (wrapping the GAN stage's hooks)."""
    gan = trainer.gan
    log: dict = {"lr": [], "hr": [], "g": [], "d": []}
    batch_for, step_g, step_d = gan.batch_for, gan.opt_g.step, gan.opt_d.step

    def recording_batch_for(iteration):
        lr, hr = batch_for(iteration)
        log["lr"].append(lr.clone())
        log["hr"].append(hr.clone())
        return lr, hr

    def grads(module):
        return {n: p.grad.detach().clone() for n, p in module.named_parameters() if p.grad is not None}

    def recording_step_g(*args, **kwargs):
        log["g"].append(grads(gan.student))
        return step_g(*args, **kwargs)

    def recording_step_d(*args, **kwargs):
        log["d"].append(grads(gan.disc))
        return step_d(*args, **kwargs)

    gan.batch_for = recording_batch_for
    gan.opt_g.step, gan.opt_d.step = recording_step_g, recording_step_d
    return log


def _worker(rank: int, config: dict, port: int, out_dir: str) -> None:
    join_as_rank(rank, WORLD, port)
    torch.set_num_threads(1)
    ctx = init_distributed("cpu")
    try:
        trainer = Trainer(config, ctx, progress=False)
        log = _record(trainer)
        log["init_d"] = {k: v.clone() for k, v in trainer.gan.disc.state_dict().items()}
        log["losses"] = trainer.run().losses
        log["final_g"] = trainer.model.state_dict()
        log["final_d"] = trainer.gan.disc.state_dict()
        torch.save(log, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        shutdown(ctx)


@pytest.mark.filterwarnings("ignore:Seems like `optimizer.step\\(\\)` has been overridden")  # by _record
def test_gan_stage_under_two_gloo_processes_matches_one_process_on_the_union_batch(tmp_path):
    images = make_image_folder(tmp_path / "hr", count=3, size=48)
    teacher = save_tiny_teacher(tmp_path / "t.pt", seed=3)
    torch.manual_seed(4)
    student = kdsr.KDSRStudent.from_teacher(kdsr.load(teacher)).save(tmp_path / "s.pt")
    overrides = [
        *tiny_overrides(images, tmp_path / "runs", iters=ITERS),
        f"data.batch_size={BATCH}",
        "data.crop_size=48",
        "data.queue_size=4",
        "loss.perceptual.network=stlpips-vgg16",
        f"teacher={teacher}",
        f"init={student}",
        "logging.save_every=1",
    ]
    config = load_config("tiny_realworld_x4_gan", overrides)
    mp.spawn(_worker, args=(config, free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    logs = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]

    assert logs[0]["losses"] == logs[1]["losses"] and len(logs[0]["losses"]) == ITERS
    for it in range(ITERS):
        assert logs[0]["hr"][it].shape[0] == BATCH // WORLD
        assert not torch.equal(logs[0]["hr"][it], logs[1]["hr"][it]), f"ranks drew the same HR at {it}"
    for part in ("final_g", "final_d"):  # DDP kept the replicas equal, and they trained
        for name, p in logs[0][part].items():
            torch.testing.assert_close(logs[1][part][name], p, rtol=0, atol=0, msg=f"{part} {name}")
    assert any(not torch.equal(logs[0]["final_d"][n], p) for n, p in logs[0]["init_d"].items()), (
        "D did not train"
    )

    # One process on the union batch of every iteration, from the same G (--init) and the same D init.
    torch.set_num_threads(1)
    single = Trainer(load_config("tiny_realworld_x4_gan", overrides), DistContext(), progress=False)
    single.gan.disc.load_state_dict(logs[0]["init_d"])
    union = [
        (torch.cat([lg["lr"][it] for lg in logs]), torch.cat([lg["hr"][it] for lg in logs]))
        for it in range(ITERS)
    ]
    one = _record(single)
    single.gan.batch_for = lambda iteration: union[iteration]  # replaces the recording wrapper's source
    single.run()
    # Iteration 0 elementwise, to 1e-4 of each tensor's largest gradient: D's conv gradients are fp32 sums
    # over ~10^4 terms per element, added in another order by the two half batches (measured: up to 1.3e-5
    # of the largest). Later iterations come after an Adam step, whose per-element normalisation turns that
    # noise in near-zero gradients into lr-sized weight differences, so they are compared by norm. A missing,
    # doubled or unsynchronised all-reduce is off by O(1) either way.
    for net in ("g", "d"):
        for it in range(ITERS):
            ddp, ref = logs[0][net][it], one[net][it]
            assert set(ddp) == set(ref) == set(logs[1][net][it]) and len(ref) > 5, net
            for name, g in ref.items():
                assert g.abs().max() > 0, f"{net} {name}"
                torch.testing.assert_close(logs[1][net][it][name], ddp[name], rtol=0, atol=0, msg=name)
                rel = ((ddp[name] - g).norm() / g.norm()).item()
                assert rel < 1e-4, f"{net} iteration {it} {name}: DDP vs 1 process, relative error {rel:.2e}"
                if it == 0:
                    tol = dict(rtol=1e-4, atol=1e-4 * g.abs().max().item())
                    torch.testing.assert_close(ddp[name], g, **tol, msg=f"{net} iteration 0 {name}: DDP vs 1")
