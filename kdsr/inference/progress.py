"""Progress of one upscale in labelled stages, weighted by cost, with an ETA for the whole image.

    plan = work_plan((H, W), tile, pad, radius)          # {stage: LR pixels of each model call}
    eta = Eta(plan, {ENCODE: enc_s_per_px, RESTORE: sr_s_per_px})   # from probe.measure_speed
    eta.update(stage, done) -> seconds left (None before the first call)

Only the RATIO of the two per-pixel costs matters: the absolute speed is learnt while the image runs, from
the stage now running (its elapsed time over its predicted cost so far), so a loaded machine or a different
tile size shifts both stages alike. `TileBars` shows one tqdm bar per stage with the image's ETA beside it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable


class Eta:
    """Remaining time of a staged job whose steps have predicted costs.

    plan: {stage: [size of each step]} in run order; cost_per_unit: {stage: predicted seconds per size unit}
    (any common scale); clock: seconds (time.monotonic). `update(stage, done)` after `done` steps of `stage`.
    """

    def __init__(
        self,
        plan: dict[str, list[int]],
        cost_per_unit: dict[str, float],
        clock: Callable[[], float] = time.monotonic,
    ):
        self.clock = clock
        self.order = list(plan)
        self.cumulative: dict[str, list[float]] = {}
        before = 0.0
        for stage, sizes in plan.items():
            running, costs = before, []
            for size in sizes:
                running += cost_per_unit[stage] * size
                costs.append(running)
            self.cumulative[stage] = costs
            before = running
        self.total = before
        self.started = clock()
        self.stage_start: dict[str, tuple[float, float]] = {}  # stage -> (time, predicted cost done) at start
        self.last = (self.started, 0.0)

    def fraction(self, stage: str, done: int) -> float:
        """The predicted share of the whole job done after `done` steps of `stage`."""
        costs = self.cumulative[stage]
        start = self._cost_before(stage)
        return (costs[done - 1] if done else start) / self.total if self.total > 0 else 1.0

    def _cost_before(self, stage: str) -> float:
        i = self.order.index(stage)
        return self.cumulative[self.order[i - 1]][-1] if i and self.cumulative[self.order[i - 1]] else 0.0

    def update(self, stage: str, done: int) -> float | None:
        """Seconds left after `done` steps of `stage` (None until the rate is known)."""
        now = self.clock()
        if stage not in self.stage_start:
            self.stage_start[stage] = (self.last[0], self._cost_before(stage))
        t0, c0 = self.stage_start[stage]
        cost_done = self.cumulative[stage][done - 1] if done else c0
        self.last = (now, cost_done)
        if cost_done - c0 <= 0 or now <= t0:
            return None
        rate = (now - t0) / (cost_done - c0)  # real seconds per predicted second, in this stage
        return rate * (self.total - cost_done)


def format_eta(seconds: float | None) -> str:
    """Seconds -> "ETA 1:05" / "ETA 1:02:03" ("ETA ?" when unknown)."""
    if seconds is None:
        return "ETA ?"
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    return f"ETA {h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"ETA {rest // 60}:{rest % 60:02d}"


class TileBars:
    """A stages callback (stage, done, total) for `upscale_stream`: one tqdm bar per stage, labelled, with
    the whole image's ETA (`Eta`) as its postfix. Bars only when the image runs in several model calls."""

    def __init__(self, eta: Eta | None, enabled: bool = True):
        self.eta, self.enabled = eta, enabled
        self.bar = None
        self.stage: str | None = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        from tqdm import tqdm

        remaining = None if self.eta is None else self.eta.update(stage, done)
        if not self.enabled or total <= 1:
            return
        if stage != self.stage:
            self.close()
            self.stage = stage
            self.bar = tqdm(total=total, desc=f"  {stage}", leave=False, unit="tile", file=sys.stderr)
        self.bar.update(done - self.bar.n)
        if self.eta is not None:
            self.bar.set_postfix_str(f"image {format_eta(remaining)}", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
