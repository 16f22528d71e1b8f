"""σ read-out (GroupKFold by image), encoder learning-rate groups, bf16 training step, σ-R² in val_log."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from test_training_support import make_image_folder, tiny_overrides

from kdsr.training import checkpoint as ckpt_io
from kdsr.training.config import load_config
from kdsr.training.trainer import Trainer
from kdsr.training.tsne import SigmaReadout, sigma_r2

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _probe(n_images=10, crops=4, seed=0):
    rng = np.random.default_rng(seed)
    sigmas = np.repeat(rng.uniform(0.2, 4.0, n_images * crops), 1)
    groups = np.repeat(np.arange(n_images), crops)
    return rng, sigmas, groups


def test_sigma_r2_reads_a_linear_code_and_not_noise():
    rng, sigmas, groups = _probe()
    readable = np.stack(
        [2.0 * sigmas + 0.05 * rng.standard_normal(sigmas.size), rng.standard_normal(sigmas.size)], 1
    )
    assert sigma_r2(readable, sigmas, groups) > 0.98
    assert sigma_r2(rng.standard_normal((sigmas.size, 6)), sigmas, groups) < 0.1


def test_group_folds_stop_image_identity_from_leaking():
    # σ is constant per image and D only says which image it is: shuffled folds see each image in the fit
    # set and "read" σ perfectly; folds by image cannot, so the honest R² is ~0 or below.
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(12), 8)
    per_image_sigma = rng.uniform(0.2, 4.0, 12)
    sigmas = per_image_sigma[groups]
    identity = rng.standard_normal((12, 16))[groups] + 1e-3 * rng.standard_normal((groups.size, 16))
    assert sigma_r2(identity, sigmas) > 0.5
    assert sigma_r2(identity, sigmas, groups) < 0.2


def test_sigma_readout_probe_set_layout(tmp_path):
    folder = make_image_folder(tmp_path / "hr", count=3, size=48)
    probe = SigmaReadout(folder, scale=4, sigmas=(0.5, 2.0), crops_per_image=2, lr_patch=8)
    assert probe.lr.shape == (3 * 2 * 2, 3, 8, 8) and probe.hr.shape == (12, 3, 32, 32)
    assert probe.groups.tolist() == [0, 0, 1, 1, 2, 2] * 2
    assert probe.sigmas.tolist() == [0.5] * 6 + [2.0] * 6
    # blur is real: the σ = 2 copies are smoother than the σ = 0.5 copies of the same crops
    assert probe.lr[6:].diff(dim=-1).abs().mean() < probe.lr[:6].diff(dim=-1).abs().mean()


def _trainer(tmp_path, *extra, resume=None):
    train_dir = make_image_folder(tmp_path / "train", count=3, size=48)
    sets = tiny_overrides(train_dir, tmp_path / "runs", None, iters=3)
    return Trainer(load_config("tiny_iso_x4_teacher", [*sets, *extra]), progress=False, resume=resume)


def test_default_keeps_one_parameter_group_and_a_changed_multiplier_is_refused(tmp_path):
    trainer = _trainer(tmp_path)
    assert len(trainer.optimizer.param_groups) == 1  # what every checkpoint before the option holds
    trainer.train_step(0)
    trainer.iteration = 1
    path = trainer.save("last.pt")
    from kdsr.training.config import ConfigError

    with pytest.raises(ConfigError, match="lr_encoder_mult"):
        _trainer(tmp_path, "train.lr_encoder_mult=3", resume=ckpt_io.load_checkpoint(path))


def test_encoder_learning_rate_multiplier_and_resume(tmp_path):
    trainer = _trainer(tmp_path, "train.lr_encoder_mult=10", "train.lr_decay_iters=2")
    groups = trainer.optimizer.param_groups
    encoder_ids = {id(p) for p in trainer.model.encoder.parameters()}
    assert {id(p) for p in groups[1]["params"]} == encoder_ids
    assert not encoder_ids & {id(p) for p in groups[0]["params"]}
    assert groups[1]["lr"] == pytest.approx(10 * groups[0]["lr"])
    for it in range(2):
        trainer.train_step(it)
    trainer.iteration = 2
    path = trainer.save("last.pt")
    lrs = [g["lr"] for g in trainer.optimizer.param_groups]
    assert lrs[1] == pytest.approx(10 * lrs[0]) and lrs[0] == pytest.approx(0.5e-3)  # halved at 2
    resumed = _trainer(
        tmp_path, "train.lr_encoder_mult=10", "train.lr_decay_iters=2", resume=ckpt_io.load_checkpoint(path)
    )
    assert [g["lr"] for g in resumed.optimizer.param_groups] == pytest.approx(lrs)


def test_bf16_step_is_finite_and_close_to_fp32(tmp_path):
    fp32 = _trainer(tmp_path / "a")
    bf16 = _trainer(tmp_path / "b", "train.precision=bf16")
    bf16.model.load_state_dict(fp32.model.state_dict())
    lr, hr = fp32.batch_for(0)
    loss32, _ = fp32.compute_loss(lr, hr, 0)
    loss16, _ = bf16.compute_loss(lr, hr, 0)
    assert loss16.dtype == torch.float32 and torch.isfinite(loss16)
    assert abs(loss16.item() - loss32.item()) < 0.02 * loss32.item()
    loss16.backward()
    grads = [p.grad for p in bf16.model.parameters() if p.requires_grad]
    assert all(g is not None and g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)


def test_sigma_r2_is_logged_at_validation(tmp_path):
    val = make_image_folder(tmp_path / "val", count=2, size=128)  # the probe's 32-px LR crops need 128 px
    trainer = _trainer(
        tmp_path,
        f"data.val_dir={val}",
        f"data.val_sigma_dir={val}",
        "data.val_sigma_crops=2",
        "logging.val_every=3",
    )
    trainer.run()
    with (trainer.run_dir / "val_log.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert rows and np.isfinite(float(rows[-1]["sigma_r2"]))


def test_old_val_log_gets_the_new_column(tmp_path):
    from kdsr.training.run_log import VAL_FIELDS, CsvLog

    log = tmp_path / "val_log.csv"
    log.write_text("iteration,psnr,ssim\n500,26.0,0.77\n")
    csv_log = CsvLog(log, VAL_FIELDS)
    csv_log.append({"iteration": 750, "psnr": 26.5, "ssim": 0.78, "sigma_r2": 0.1})
    csv_log.close()
    with log.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["iteration"] for r in rows] == ["500", "750"]
    assert rows[0]["sigma_r2"] == "" and float(rows[1]["sigma_r2"]) == 0.1
