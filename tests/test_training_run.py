"""End-to-end training on tiny images: teacher -> student with fused kernels, exact resume, NaN stop."""

from __future__ import annotations

import csv
import shutil

import pytest
import torch
from test_training_support import make_image_folder, tiny_overrides

import kdsr
from kdsr.cli import main
from kdsr.training import checkpoint as ckpt_io
from kdsr.training.config import load_config
from kdsr.training.trainer import Trainer, TrainingDiverged

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    return make_image_folder(root / "train", count=3, size=48), make_image_folder(
        root / "val", count=1, size=32
    )


def _csv_rows(path):
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_teacher_then_student_with_fused_kernels(folders, tmp_path):
    train_dir, val_dir = folders
    runs = tmp_path / "runs"
    sets = tiny_overrides(train_dir, runs, val_dir, iters=4)
    assert (
        main(
            [
                "train",
                "--config",
                "tiny_iso_x4_teacher",
                "--fused-kernels",
                "--no-progress",
                "--name",
                "T",
                "--set",
                *sets,
            ]
        )
        == 0
    )
    t_dir = runs / "T"
    for name in ("last.pt", "best.pt", "config.yaml", "train_log.csv", "val_log.csv", "curves.png"):
        assert (t_dir / name).is_file(), name
    assert [int(r["iteration"]) for r in _csv_rows(t_dir / "train_log.csv")] == [1, 2, 3, 4]
    assert [int(r["iteration"]) for r in _csv_rows(t_dir / "val_log.csv")] == [2, 4]
    teacher_ckpt = ckpt_io.load_checkpoint(t_dir / "last.pt")
    assert teacher_ckpt["iteration"] == 4 and teacher_ckpt["config"]["fused_kernels"] is True
    teacher = kdsr.load(t_dir / "last.pt")  # a training checkpoint loads as a model
    assert type(teacher).__name__ == "KDSRTeacher" and teacher.fused_kernels

    assert (
        main(
            [
                "train",
                "--config",
                "tiny_iso_x4_student",
                "--teacher",
                str(t_dir / "last.pt"),
                "--fused-kernels",
                "--no-progress",
                "--name",
                "S",
                "--set",
                *sets,
            ]
        )
        == 0
    )
    student_rows = _csv_rows(runs / "S" / "train_log.csv")
    assert len(student_rows) == 4  # all(...) below would pass on an empty log
    assert all(float(r["kd"]) > 0 for r in student_rows)  # KL between two different encoders
    for r in student_rows:
        assert float(r["loss"]) == pytest.approx(float(r["l1"]) + float(r["kd"]), rel=1e-5)
    student = kdsr.load(runs / "S" / "last.pt")
    assert type(student).__name__ == "KDSRStudent" and student.fused_kernels
    # the teacher stayed frozen: its weights on disk are what the student run loaded
    again = kdsr.load(t_dir / "last.pt")
    for a, b in zip(teacher.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    lr = torch.rand(1, 3, 12, 12)
    assert student(lr).shape == (1, 3, 48, 48)


def test_student_starts_from_teacher_sr_network_with_fresh_encoder(folders, tmp_path):
    train_dir, _ = folders
    teacher_cfg = load_config("tiny_iso_x4_teacher", tiny_overrides(train_dir, tmp_path, iters=2))
    Trainer(teacher_cfg, progress=False).run()
    cfg = load_config(
        "tiny_iso_x4_student",
        [*tiny_overrides(train_dir, tmp_path, iters=2), f"teacher={tmp_path}/tiny_iso_x4_teacher/last.pt"],
    )
    trainer = Trainer(cfg, progress=False)
    for (name, a), b in zip(
        trainer.model.sr_net.state_dict().items(), trainer.teacher.sr_net.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    student_enc, teacher_enc = trainer.model.encoder.state_dict(), trainer.teacher.encoder.state_dict()
    same_shape = [k for k in student_enc if student_enc[k].shape == teacher_enc[k].shape]
    assert len(same_shape) > 4
    assert not any(torch.equal(student_enc[k], teacher_enc[k]) for k in same_shape)  # fresh, not copied
    teacher_params = list(trainer.teacher.parameters())
    assert teacher_params and all(not p.requires_grad for p in teacher_params)
    optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert optimised == {id(p) for p in trainer.model.parameters() if p.requires_grad}  # G and E_S, jointly


def _scramble_global_rngs():
    """Whatever happens between two runs (other code drawing numbers) must not change what is resumed."""
    import random

    import numpy as np

    torch.manual_seed(1234)
    np.random.seed(1234)
    random.seed(1234)


@pytest.mark.parametrize("stage", ["teacher", "student", "teacher-ema"])
def test_resume_gives_identical_losses(folders, tmp_path, stage):
    """6 iterations split at 3, LR steps at 2 and 4, validations at 2, 4, 6 on both sides of the split:
    same losses, same LR at every iteration, same best-checkpoint bookkeeping, same weights."""
    train_dir, val_dir = folders
    teacher_path = None
    ema = stage.endswith("-ema")
    stage = stage.removesuffix("-ema")
    if stage == "student":
        pre = load_config("tiny_iso_x4_teacher", tiny_overrides(train_dir, tmp_path / "pre", iters=2))
        Trainer(pre, progress=False).run()
        teacher_path = tmp_path / "pre" / "tiny_iso_x4_teacher" / "last.pt"
    extra = [f"teacher={teacher_path}"] if teacher_path else []
    extra += ["train.ema_decay=0.9"] if ema else []
    extra += ["train.lr_decay_iters=2", "train.gamma=0.5"]
    n = 6
    name = f"tiny_iso_x4_{stage}"
    full = Trainer(
        load_config(name, [*tiny_overrides(train_dir, tmp_path / "a", val_dir, n), *extra]), progress=False
    ).run()
    cfg_b = load_config(name, [*tiny_overrides(train_dir, tmp_path / "b", val_dir, n), *extra])
    first = Trainer(cfg_b, progress=False).run(stop_after=n // 2)
    assert first.iteration == n // 2 and first.best_psnr is not None  # a validation ran before the split
    _scramble_global_rngs()
    resumed_ckpt = ckpt_io.load_checkpoint(first.run_dir / "last.pt")
    resumed = Trainer(resumed_ckpt["config"], resume=resumed_ckpt, progress=False)
    assert resumed.best_psnr == first.best_psnr, "best_psnr was not restored from the checkpoint"
    second = resumed.run()
    assert len(full.losses) == n
    assert first.losses + second.losses == full.losses  # bit-identical floats

    lr_full = [float(r["lr"]) for r in _csv_rows(full.run_dir / "train_log.csv")]
    lr_split = [float(r["lr"]) for r in _csv_rows(second.run_dir / "train_log.csv")]
    assert len(lr_full) == n and len(set(lr_full[n // 2 :])) == 2, lr_full  # a step after the split
    assert lr_split == lr_full, f"LR per iteration differs after resume: {lr_split} vs {lr_full}"

    assert second.best_psnr == full.best_psnr
    best_a = ckpt_io.load_checkpoint(full.run_dir / "best.pt")
    best_b = ckpt_io.load_checkpoint(second.run_dir / "best.pt")
    assert best_a["iteration"] == best_b["iteration"] and best_a["best_psnr"] == best_b["best_psnr"]
    last_a = ckpt_io.load_checkpoint(full.run_dir / "last.pt")
    last_b = ckpt_io.load_checkpoint(second.run_dir / "last.pt")
    assert last_a["best_psnr"] == last_b["best_psnr"] == full.best_psnr
    assert last_a["iteration"] == last_b["iteration"] == n and "scheduler" not in last_a  # lr: from config
    a = kdsr.load(full.run_dir / "last.pt", ema=False).state_dict()
    b = kdsr.load(second.run_dir / "last.pt", ema=False).state_dict()
    assert a.keys() == b.keys() and len(a) > 0
    assert all(torch.equal(a[k], b[k]) for k in a)
    if ema:
        ema_a = last_a["ema_model"]["state_dict"]
        ema_b = last_b["ema_model"]["state_dict"]
        assert ema_a.keys() == a.keys()
        assert all(torch.equal(ema_a[k], ema_b[k]) for k in ema_a)
        assert not all(torch.equal(ema_a[k], a[k]) for k in a)  # the average differs from the raw weights
        loaded = kdsr.load(full.run_dir / "last.pt").state_dict()  # kdsr.load prefers the EMA weights
        assert all(torch.equal(loaded[k], ema_a[k]) for k in ema_a)


def test_batches_depend_on_seed_iteration_and_rank_only(folders, tmp_path):
    """Which RNG state needs restoring on resume: none of the global ones. Every sample of a batch (crop,
    flips, blur, noise) draws from its own generator seeded by (seed, iteration, rank, index), so the
    iteration counter is the state that matters; the RNG states in the checkpoint are a second line of
    defence. This checks that the global RNGs play no part."""
    train_dir, _ = folders
    trainer = Trainer(load_config("tiny_iso_x4_teacher", tiny_overrides(train_dir, tmp_path)), progress=False)
    lr_a, hr_a = trainer.batch_for(3)
    torch.rand(17)  # advance / scramble the global RNGs between the two draws
    _scramble_global_rngs()
    lr_b, hr_b = trainer.batch_for(3)
    assert torch.equal(lr_a, lr_b) and torch.equal(hr_a, hr_b)
    lr_c, hr_c = trainer.batch_for(4)
    assert not torch.equal(hr_a, hr_c) and not torch.equal(lr_a, lr_c)


def test_cli_resume_continues_the_run_and_rewrites_logs_after_the_checkpoint(folders, tmp_path):
    train_dir, _ = folders
    run = tmp_path / "tiny_iso_x4_teacher"
    sets = tiny_overrides(train_dir, tmp_path, iters=4)
    args = ["train", "--config", "tiny_iso_x4_teacher", "--no-progress", "--stop-after", "2", "--set", *sets]
    assert main(args) == 0
    assert ckpt_io.load_checkpoint(run / "last.pt")["iteration"] == 2
    shutil.copy(run / "last.pt", tmp_path / "at2.pt")
    assert main(["train", "--resume", str(run / "last.pt"), "--no-progress"]) == 0
    assert ckpt_io.load_checkpoint(run / "last.pt")["iteration"] == 4
    losses = [r["loss"] for r in _csv_rows(run / "train_log.csv")]
    # a second resume from iteration 2 (as after a kill) logs 3 and 4 again instead of appending duplicates
    assert main(["train", "--resume", str(tmp_path / "at2.pt"), "--no-progress"]) == 0
    rows = _csv_rows(run / "train_log.csv")
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3, 4]
    assert [r["loss"] for r in rows] == losses


def test_nan_loss_stops_with_a_message_and_keeps_a_checkpoint(folders, tmp_path, monkeypatch):
    train_dir, _ = folders
    cfg = load_config("tiny_iso_x4_teacher", tiny_overrides(train_dir, tmp_path, iters=8))
    trainer = Trainer(cfg, progress=False)
    original = trainer.compute_loss

    def poisoned(lr, hr, iteration):
        loss, parts = original(lr, hr, iteration)
        return (loss * float("nan") if iteration == 4 else loss), parts

    monkeypatch.setattr(trainer, "compute_loss", poisoned)
    with pytest.raises(
        TrainingDiverged, match=r"loss became nan at iteration 5.*iteration 4.*last\.pt.*train\.lr"
    ):
        trainer.run()
    kept = ckpt_io.load_checkpoint(tmp_path / "tiny_iso_x4_teacher" / "last.pt")
    assert kept["iteration"] == 4
    assert kept["model"]["state_dict"]
    assert all(torch.isfinite(v).all() for v in kept["model"]["state_dict"].values())


def test_encoder_only_warm_up_trains_the_encoder_alone_with_kd(folders, tmp_path):
    train_dir, _ = folders
    pre = load_config("tiny_iso_x4_teacher", tiny_overrides(train_dir, tmp_path / "pre", iters=2))
    Trainer(pre, progress=False).run()
    teacher = tmp_path / "pre" / "tiny_iso_x4_teacher" / "last.pt"
    cfg = load_config(
        "tiny_iso_x4_student",
        [
            *tiny_overrides(train_dir, tmp_path, iters=4),
            f"teacher={teacher}",
            "train.encoder_iters=2",
            "train.lr_encoder=2e-3",
        ],
    )
    trainer = Trainer(cfg, progress=False)
    sr_before = {k: v.clone() for k, v in trainer.model.sr_net.state_dict().items()}
    enc_before = {k: v.clone() for k, v in trainer.model.encoder.state_dict().items()}
    first = [trainer.train_step(i) for i in range(2)]
    assert len(first) == 2 and sr_before and enc_before
    assert all(s["l1"] == 0.0 and s["kd"] > 0 and s["loss"] == pytest.approx(s["kd"]) for s in first)
    assert all(s["lr"] == pytest.approx(2e-3) for s in first)
    assert all(torch.equal(v, sr_before[k]) for k, v in trainer.model.sr_net.state_dict().items())
    assert not all(torch.equal(v, enc_before[k]) for k, v in trainer.model.encoder.state_dict().items())
    joint = trainer.train_step(2)
    assert joint["l1"] > 0 and joint["lr"] == pytest.approx(1e-3)
    assert not all(torch.equal(v, sr_before[k]) for k, v in trainer.model.sr_net.state_dict().items())
