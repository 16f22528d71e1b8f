"""Real-world read-out of D: targets from RealWorldParams, collapsed-encoder notice, aux targets through the
pair queue, the aux head's checkpoint, real-world validation rules (exit 2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_training_support import make_image_folder, tiny_overrides

from kdsr.cli import main
from kdsr.data.realworld import PairQueue
from kdsr.degradations.realworld import RealWorldDegradation
from kdsr.degradations.realworld_targets import REALWORLD_TARGETS, realworld_targets
from kdsr.training.readout import READOUT_COLUMNS, readout_line, score

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_targets_follow_the_recorded_draws():
    deg = RealWorldDegradation(scale=4)
    params = deg.sample(400, torch.Generator().manual_seed(7))
    t = realworld_targets(params, deg)
    assert t.shape == (400, len(REALWORLD_TARGETS))
    checked = 0
    for i in range(400):
        rec = params.record(i)
        assert t[i, 0] == pytest.approx(rec["second"]["jpeg_quality"])  # the final JPEG
        noise = rec["first"]["noise"]
        if noise["type"] == "gaussian":  # σ in [1, 30] -> [0, 1]
            assert t[i, 1] == pytest.approx((noise["sigma"] - 1) / 29)
        else:  # Poisson scale in [0.05, 3] -> [0, 1]
            assert t[i, 1] == pytest.approx((noise["scale"] - 0.05) / 2.95)
        if not rec["second"]["blur"]:
            assert t[i, 4] == 0.0
        k = rec["first"]["kernel"]
        # an iso Gaussian well inside its support has per-axis RMS width σ (closed form; 2 % for sampling)
        if k["type"] == "iso" and k["sigma_x"] >= 0.8 and k["size"] // 2 >= 4 * k["sigma_x"]:
            assert t[i, 3] == pytest.approx(k["sigma_x"], rel=0.02)
            checked += 1
    assert checked >= 5 and np.all((t[:, 1:3] >= 0) & (t[:, 1:3] <= 1))


def test_constant_d_is_reported_as_a_collapsed_encoder_not_as_r2():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(8), 6)
    targets = {k: rng.uniform(0, 1, groups.size) for k in REALWORLD_TARGETS}
    constant = np.tile(rng.standard_normal(16), (groups.size, 1))
    result = score(constant, targets, groups)
    assert result.constant and all(v is None for v in result.r2.values())
    assert "D is constant (collapsed encoder)" in result.summary()
    cells = result.columns()
    assert set(cells) <= set(READOUT_COLUMNS) and cells["r2_jpeg"] == ""
    assert "D is constant (collapsed encoder)" in readout_line(cells)
    readable = np.stack([targets["jpeg"] * 3 + 0.02 * rng.standard_normal(groups.size)] * 2, 1)
    readable[:, 1] = rng.standard_normal(groups.size)
    good = score(readable, targets, groups)
    assert not good.constant and good.r2["jpeg"] > 0.95 and good.r2["noise2"] < 0.2


def test_pair_queue_keeps_each_pairs_targets():
    queue = PairQueue(size=6, batch=2)
    gen = torch.Generator().manual_seed(0)
    for step in range(8):
        ids = torch.tensor([2 * step, 2 * step + 1], dtype=torch.float32)
        lr = (ids / 255).reshape(2, 1, 1, 1).expand(2, 3, 4, 4).contiguous()
        hr = (ids / 255).reshape(2, 1, 1, 1).expand(2, 3, 16, 16).contiguous()
        out_lr, _ = queue.push_pop(lr, hr, gen, aux=ids[:, None].repeat(1, 5))
        got = torch.round(out_lr[:, 0, 0, 0] * 255)
        assert torch.equal(queue.last_aux[:, 0], got), step  # the targets of exactly the returned pairs
    restored = PairQueue(size=6, batch=2)
    restored.load_state_dict(queue.state_dict())
    assert torch.equal(restored.aux, queue.aux)


def test_realworld_validation_rules_exit_2(tmp_path, capsys):
    train = make_image_folder(tmp_path / "train", count=2, size=48)
    val = make_image_folder(tmp_path / "val", count=1, size=48)
    sets = [*tiny_overrides(train, tmp_path / "runs", val, iters=1), "data.val_kernels=gaussian8"]
    code = main(["train", "--config", "tiny_realworld_x4_teacher", "--set", *sets])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "validates on a real-world set" in err
    code = main(
        [
            "train",
            "--config",
            "tiny_realworld_x4_teacher",
            "--set",
            *sets,
            f"data.val_lr_dir={tmp_path / 'nope'}",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "data.val_lr_dir" in err
    code = main(["train", "--config", "tiny_iso_x4_teacher", "--set", *sets, "train.readout_weight=1"])
    err = capsys.readouterr().err
    assert code == 2 and "train.readout_weight" in err and not (tmp_path / "runs").exists()


def test_aux_head_trains_is_checkpointed_and_not_exported(tmp_path):
    from kdsr.training import checkpoint as ckpt_io
    from kdsr.training.config import load_config
    from kdsr.training.trainer import Trainer

    train = make_image_folder(tmp_path / "train", count=2, size=48)
    val = make_image_folder(tmp_path / "val", count=2, size=64)
    sets = [
        *tiny_overrides(train, tmp_path / "runs", val, iters=2),
        "data.crop_size=48",
        "data.queue_size=8",
        "data.val_kernels=realworld",
        "train.readout_weight=1.0",
        "train.precision=fp32",
    ]
    trainer = Trainer(load_config("tiny_realworld_x4_teacher", sets), progress=False)
    linear = trainer.readout_aux.head[-1]
    head_before = linear.weight.detach().clone()
    result = trainer.run()
    assert all(np.isfinite(result.losses))
    assert not torch.equal(head_before, linear.weight)  # the head is in the optimizer
    assert trainer.val_pairs and trainer.val_pairs[0].params["kind"] == "realworld"
    ckpt = ckpt_io.load_checkpoint(trainer.run_dir / "last.pt")
    assert {"head.1.weight", "head.1.bias", "head.0.running_mean"} <= set(ckpt["readout_head"])
    assert not any("head.weight" == k for k in ckpt["model"]["state_dict"])
    assert (trainer.run_dir / "best.pt").is_file()  # teacher: best.pt by the real-world PSNR


def test_aux_head_ignores_the_shared_offset_of_d_prime():
    """The head reads D' after batch standardisation: adding one vector to every row of a batch, or scaling
    each dimension by a positive factor, leaves its training-mode prediction unchanged (float64)."""
    from kdsr.training.readout_aux import ReadoutAux

    torch.manual_seed(0)
    aux = ReadoutAux(16, weight=1.0).double().train()
    d = torch.randn(8, 16, dtype=torch.float64)
    offset = 10.0 * torch.randn(1, 16, dtype=torch.float64)
    scale = torch.rand(1, 16, dtype=torch.float64) + 0.5
    # BatchNorm's eps (1e-5 against a per-dimension variance >= ~0.1 here) bounds the difference by ~1e-4; an
    # unstandardised head would move by ~|offset| x |weight| ~ 1.
    torch.testing.assert_close(aux.head(d * scale + offset), aux.head(d), rtol=0, atol=1e-4)
