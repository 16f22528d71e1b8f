"""Progress that tells the truth: labelled stages weighted by cost, and an ETA within ±30% from 10% onward,
on a run whose per-tile cost is controlled (a fake clock advanced by each model call)."""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F

from kdsr.inference.probe import measure_speed
from kdsr.inference.progress import Eta
from kdsr.inference.tiling import ENCODE, RESTORE, TileRunner, upscale_stream, work_plan


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def controlled_runner(clock: FakeClock, enc_cost: float, sr_cost: float, jitter: float, rng: random.Random):
    """A TileRunner whose encoder / SR calls cost enc_cost / sr_cost seconds per LR pixel (x 1 ± jitter)."""

    def features(x):
        clock.now += enc_cost * x.shape[-2] * x.shape[-1] * (1 + rng.uniform(-jitter, jitter))
        return x

    def sr(x, d):
        clock.now += sr_cost * x.shape[0] * x.shape[-2] * x.shape[-1] * (1 + rng.uniform(-jitter, jitter))
        return F.interpolate(x, scale_factor=2, mode="nearest")

    return TileRunner(features, lambda p: p.float(), sr, encoder_radius=3, scale=2)


def test_eta_holds_within_30_percent_after_10_percent():
    rng = random.Random(torch.randint(0, 2**31, (1,)).item())
    clock = FakeClock()
    # the SR network costs several times the encoder per pixel: counting tiles alike misleads (issue 26)
    enc_cost, sr_cost = 1e-4, rng.uniform(3e-4, 8e-4)
    runner = controlled_runner(clock, enc_cost, sr_cost, jitter=0.1, rng=rng)
    speed = measure_speed(runner, clock=clock)
    H, W, tile, pad = 90, 110, 16, 4
    plan = work_plan((H, W), tile, pad, runner.encoder_radius)
    assert len(plan[ENCODE]) > 10 and len(plan[RESTORE]) > 10
    eta = Eta(plan, {ENCODE: speed[0], RESTORE: speed[1]}, clock=clock)
    start = clock()
    seen: list[tuple[float, float, float | None, str]] = []  # (time, fraction, eta, stage)

    def stages(stage: str, done: int, total: int) -> None:
        seen.append((clock(), eta.fraction(stage, done), eta.update(stage, done), stage))

    upscale_stream(runner, torch.rand(1, 3, H, W), lambda y, b: None, tile, pad, stages=stages)
    end = clock()
    assert {s for *_, s in seen} == {ENCODE, RESTORE}
    checked = 0
    for now, fraction, left, _stage in seen:
        actual = end - now
        if (now - start) / (end - start) < 0.10 or actual <= 0:
            continue
        assert left is not None and abs(left - actual) <= 0.30 * actual, (fraction, left, actual)
        checked += 1
    assert checked > 10


def test_tile_counting_eta_would_fail_the_same_bound():
    """The check above can fail: the old single bar (every tile alike) misses by far more than 30%."""
    clock = FakeClock()
    runner = controlled_runner(clock, 1e-4, 8e-4, jitter=0.0, rng=random.Random(0))
    H, W, tile, pad = 90, 110, 16, 4
    plan = work_plan((H, W), tile, pad, runner.encoder_radius)
    flat = Eta({"all": [1] * sum(len(v) for v in plan.values())}, {"all": 1.0}, clock=clock)
    log = []
    counter = {"n": 0}

    def stages(stage: str, done: int, total: int) -> None:
        counter["n"] += 1
        log.append((clock(), flat.update("all", counter["n"])))

    upscale_stream(runner, torch.rand(1, 3, H, W), lambda y, b: None, tile, pad, stages=stages)
    end = clock()
    errors = [abs(left - (end - t)) / (end - t) for t, left in log if left is not None and end > t]
    assert max(errors) > 0.3
