"""Real-world training side: the pair queue, its config error, and exact resume of a tiny real-world run."""

from __future__ import annotations

import pytest
import torch
from test_training_support import make_image_folder, tiny_overrides

import kdsr
from kdsr.data.realworld import PairQueue, crop_or_pad
from kdsr.training import checkpoint as ckpt_io
from kdsr.training.config import ConfigError, load_config
from kdsr.training.trainer import Trainer


def _pair(b: int, fill: int):
    lr = torch.full((b, 3, 4, 4), fill / 255.0)
    return lr, torch.full((b, 3, 16, 16), fill / 255.0)


def test_queue_fills_then_swaps_shuffled_pairs():
    q = PairQueue(size=6, batch=2)
    g = torch.Generator().manual_seed(0)
    for fill in (10, 20, 30):  # filling: the batch passes through unchanged
        lr, hr = q.push_pop(*_pair(2, fill), g)
        assert torch.equal(lr, _pair(2, fill)[0])
    seen = set()
    for fill in (40, 50, 60, 70):
        lr, hr = q.push_pop(*_pair(2, fill), g)
        assert torch.equal(lr[:, :, 0, 0], hr[:, :, 0, 0])  # pairs stay paired
        seen |= set(torch.round(lr[:, 0, 0, 0] * 255).int().tolist())
    assert seen <= {10, 20, 30, 40, 50, 60} and len(seen) >= 3  # older pairs come out, mixed
    state = q.state_dict()
    other = PairQueue(size=6, batch=2)
    other.load_state_dict(state)
    out_a = q.push_pop(*_pair(2, 80), torch.Generator().manual_seed(5))
    out_b = other.push_pop(*_pair(2, 80), torch.Generator().manual_seed(5))
    assert all(torch.equal(x, y) for x, y in zip(out_a, out_b, strict=True))


def test_queue_size_must_divide_by_the_batch():
    with pytest.raises(ValueError, match="multiple of the per-rank batch 4"):
        PairQueue(size=10, batch=4)


def test_crop_or_pad_reflect101():
    img = torch.arange(9, dtype=torch.uint8).reshape(1, 3, 3).expand(3, -1, -1)
    out = crop_or_pad(img, 5)
    assert out.shape == (3, 5, 5)
    assert torch.equal(out[0, :3, :3], img[0])  # top-left kept, bottom/right padded
    assert torch.equal(out[0, 3, :3], img[0, 1]) and torch.equal(out[0, 4, :3], img[0, 0])  # reflect-101


@pytest.fixture(scope="module")
def train_dir(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("rw") / "hr", count=3, size=48)


def _overrides(train_dir, out, n, queue=4):
    return [
        *tiny_overrides(train_dir, out, None, n),
        "degradation.kind=realworld",
        "data.crop_size=48",
        f"data.queue_size={queue}",
        "train.ema_decay=0.9",
    ]


def test_queue_config_error_is_a_config_error(train_dir, tmp_path):
    cfg = load_config("tiny_realworld_x4_teacher", _overrides(train_dir, tmp_path, 2, queue=10))
    with pytest.raises(ConfigError, match="queue_size 10 must be a multiple"):
        Trainer(cfg, progress=False)


def test_realworld_resume_gives_identical_losses(train_dir, tmp_path):
    n = 4  # batch 4, queue 4: the queue is full after 1 iteration and swaps across the resume point
    full = Trainer(
        load_config("tiny_realworld_x4_teacher", _overrides(train_dir, tmp_path / "a", n)), progress=False
    )
    full = full.run()
    cfg = load_config("tiny_realworld_x4_teacher", _overrides(train_dir, tmp_path / "b", n))
    first = Trainer(cfg, progress=False).run(stop_after=n // 2)
    torch.manual_seed(99)
    ckpt = ckpt_io.load_checkpoint(first.run_dir / "last.pt")
    assert ckpt["pair_queue"]["filled"] == 4 and ckpt["pair_queue"]["hr"].dtype == torch.uint8
    second = Trainer(ckpt["config"], resume=ckpt, progress=False).run()
    assert first.losses + second.losses == full.losses
    a = kdsr.load(full.run_dir / "last.pt").state_dict()
    b = kdsr.load(second.run_dir / "last.pt").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
