"""The LR schedule as a function of config and iteration (step, cosine: closed forms), and resuming a
checkpoint written before the schedule stopped being checkpointed (it holds LambdaLR state, ignored now)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from test_training_support import make_image_folder, tiny_overrides

from kdsr.training import checkpoint as ckpt_io
from kdsr.training.config import load_config
from kdsr.training.schedule import lr_factor
from kdsr.training.trainer import Trainer

FIXTURES = Path(__file__).parent / "fixtures"


def _train(sets: list[str]):
    return load_config("tiny_iso_x4_student", ["teacher=t.pt", "data.train_dir=.", *sets]).train


def test_step_schedule_closed_form():
    t = _train(["train.lr=2e-4", "train.lr_decay_iters=7", "train.gamma=0.3", "train.iters=40"])
    for i in (0, 6, 7, 13, 14, 39):
        assert math.isclose(2e-4 * lr_factor(t, i), 2e-4 * 0.3 ** (i // 7), rel_tol=1e-15), i


@pytest.mark.parametrize("lr_min", [0.0, 3e-6])
def test_cosine_schedule_closed_form(lr_min):
    lr, iters, warm = 4e-4, 50, 10  # student with an encoder-only phase: the cosine spans iters - warm
    t = _train(
        [
            f"train.lr={lr}",
            "train.schedule=cosine",
            f"train.lr_min={lr_min}",
            f"train.iters={iters}",
            f"train.encoder_iters={warm}",
            "train.lr_encoder=1e-3",
            "train.encoder_lr_decay_iters=4",
            "train.gamma_encoder=0.5",
        ]
    )
    assert math.isclose(lr * lr_factor(t, 5), 1e-3 * 0.5**1, rel_tol=1e-12)  # encoder phase: unchanged
    assert math.isclose(lr * lr_factor(t, warm), lr, rel_tol=1e-12)  # cos(0) = 1: the full lr
    assert math.isclose(lr * lr_factor(t, warm + 20), (lr + lr_min) / 2, rel_tol=1e-12)  # cos(pi/2) = 0
    assert math.isclose(lr * lr_factor(t, iters), lr_min, rel_tol=1e-12, abs_tol=1e-18)  # cos(pi) = -1
    quarter = lr_min + (lr - lr_min) * (1 + math.sqrt(0.5)) / 2  # cos(pi/4)
    assert math.isclose(lr * lr_factor(t, warm + 10), quarter, rel_tol=1e-12)


def test_cosine_schedule_drives_the_optimizer(tmp_path):
    images = make_image_folder(tmp_path / "hr")
    sets = [*tiny_overrides(images, tmp_path / "runs", iters=4), "train.schedule=cosine", "train.lr_min=1e-4"]
    trainer = Trainer(load_config("tiny_iso_x4_teacher", sets), progress=False)
    lrs = [trainer.train_step(i)["lr"] for i in range(4)]
    want = [1e-4 + (1e-3 - 1e-4) * (1 + math.cos(math.pi * i / 4)) / 2 for i in range(4)]
    assert all(math.isclose(a, b, rel_tol=1e-12) for a, b in zip(lrs, want, strict=True)), (lrs, want)


def test_old_format_checkpoint_resumes_bit_identically(tmp_path, one_torch_thread):
    """tests/fixtures/old_format_teacher_it3.pt: iteration 3 of a 6-iteration tiny teacher run (step
    schedule halving every 2 iterations, EMA 0.9) written by the code before issue 23, with its LambdaLR
    state; old_format_teacher_losses.json: that code's uninterrupted losses
    (fixtures/make_old_format_checkpoint.py)."""
    images = make_image_folder(tmp_path / "hr")  # the same images the fixture was trained on (seeded)
    old = ckpt_io.load_checkpoint(FIXTURES / "old_format_teacher_it3.pt")
    assert "scheduler" in old and old["iteration"] == 3
    moved = [f"data.train_dir={images}", f"logging.out_dir={tmp_path / 'resumed'}"]
    resumed = Trainer(load_config(base=old["config"], overrides=moved), resume=old, progress=False).run()
    # A fresh run of the current code is no oracle: the pixel-shuffle convs now start ICNR-initialised
    # (issue 20), so its iterations 0-2 differ. The old code's own uninterrupted losses are the oracle.
    recorded = json.loads((FIXTURES / "old_format_teacher_losses.json").read_text())["losses"]
    # the old code's own numbers (the same on this machine; a float32 tolerance elsewhere)
    assert resumed.losses == pytest.approx(recorded[3:], rel=1e-5)
    lrs = [float(r.split(",")[4]) for r in (resumed.run_dir / "train_log.csv").read_text().splitlines()[1:]]
    assert lrs == [1e-3 * 0.5 ** (i // 2) for i in range(3, 6)]
    new = ckpt_io.load_checkpoint(resumed.run_dir / "last.pt")
    assert "scheduler" not in new and isinstance(new["config"], dict)
