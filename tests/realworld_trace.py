"""Record what each call of the real-world degradation receives: blur kernels, resizes, noise, JPEG quality.

``trace(monkeypatch, stub=True)`` replaces the module-level ``filter2d``, ``jpeg``, ``gaussian_noise`` and
``poisson_noise`` of ``kdsr.degradations.realworld`` and ``torch.nn.functional.interpolate`` with spies that
append one event per call (calls made inside another spied call, e.g. kornia's codec resizing chroma, are
not recorded). With ``stub=True`` the filters, noise and JPEG are skipped (identity / zero noise), so
thousands of samples trace in a second; resizes always run, so the sizes are real.

``expected_events(params, kernels, i, hw, scale)`` is the call sequence the published pipeline (spec kdsr.md
§6b) makes for sample ``i``, built from the JSON record ``params.record(i)`` that ``kdsr degrade --realworld``
writes: blur(k1), resize(floor(H·s1)), noise1, JPEG(q1), [blur(k2) with p 0.8], resize(floor(H/scale·s2)),
noise2, then resize(H/scale) + sinc before or after JPEG(q2). No-op events (a same-size resize, a delta
kernel) are dropped on both sides, so an implementation may skip them.
"""

from __future__ import annotations

import math
import sys

import torch
import torch.nn.functional as F

from kdsr.degradations.realworld import RealWorldDegradation

Event = tuple


class Trace:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.depth = 0

    def record(self, event: Event) -> None:
        if self.depth == 0:
            self.events.append(event)


def _one_sample(img: torch.Tensor, what: str) -> None:
    assert img.shape[0] == 1, (
        f"{what} got a batch of {img.shape[0]}: the trace assumes the samples are degraded one by one "
        "(update tests/realworld_trace.py if the pipeline now batches them)"
    )


def trace(monkeypatch, stub: bool) -> Trace:
    """Install the spies for the rest of the test; returns the Trace whose ``events`` fill up."""
    mod = sys.modules[RealWorldDegradation.__module__]
    t = Trace()
    orig_filter, orig_jpeg = mod.filter2d, mod.jpeg
    orig_gauss, orig_poisson, orig_interp = mod.gaussian_noise, mod.poisson_noise, F.interpolate

    def run(fn, *args, **kwargs):
        t.depth += 1
        try:
            return fn(*args, **kwargs)
        finally:
            t.depth -= 1

    def filter_spy(img, kernel):
        _one_sample(img, "filter2d")
        k = kernel.reshape(-1, *kernel.shape[-2:])[0]
        t.record(("filter", k.detach().double().cpu().clone()))
        return img if stub else run(orig_filter, img, kernel)

    def jpeg_spy(img, quality):
        _one_sample(img, "jpeg")
        t.record(("jpeg", float(quality.reshape(-1)[0])))
        return img.clamp(0, 1) if stub else run(orig_jpeg, img, quality)

    def noise_spy(kind, orig):
        def spy(img, value, gray, generator=None):
            _one_sample(img, f"{kind} noise")
            t.record(("noise", kind, float(value.reshape(-1)[0]), bool(gray.reshape(-1)[0])))
            return torch.zeros_like(img) if stub else run(orig, img, value, gray, generator)

        return spy

    def interp_spy(x, *args, **kwargs):
        out = run(orig_interp, x, *args, **kwargs)
        if t.depth == 0:
            _one_sample(x, "interpolate")
            mode = kwargs.get("mode", args[2] if len(args) > 2 else "nearest")
            t.record(("resize", tuple(x.shape[-2:]), tuple(out.shape[-2:]), mode))
        return out

    monkeypatch.setattr(mod, "filter2d", filter_spy)
    monkeypatch.setattr(mod, "jpeg", jpeg_spy)
    monkeypatch.setattr(mod, "gaussian_noise", noise_spy("gaussian", orig_gauss))
    monkeypatch.setattr(mod, "poisson_noise", noise_spy("poisson", orig_poisson))
    monkeypatch.setattr(F, "interpolate", interp_spy)
    return t


def _is_delta(k: torch.Tensor) -> bool:
    c = k.shape[-1] // 2
    return abs(float(k[c, c]) - 1.0) < 1e-9 and float(k.abs().sum()) - 1.0 < 1e-9


def drop_no_ops(events: list[Event]) -> list[Event]:
    """Leave out same-size resizes and delta-kernel blurs (an implementation may skip them)."""
    return [
        e
        for e in events
        if not (e[0] == "resize" and e[1] == e[2]) and not (e[0] == "filter" and _is_delta(e[1]))
    ]


def expected_events(params, kernels: dict[str, torch.Tensor], i: int, hw: tuple[int, int], scale: int):
    """The published call sequence for sample i (see the module docstring). kernels: (B, 21, 21) float64 for
    "first", "second" and "final"."""
    h, w = hw
    rec = params.record(i)
    events: list[Event] = []
    cur = (h, w)
    for stage in ("first", "second"):
        r = rec[stage]
        if r["blur"]:
            events.append(("filter", kernels[stage][i]))
        s = r["resize_scale"]
        base = (h, w) if stage == "first" else (h / scale, w / scale)
        out = (max(1, math.floor(base[0] * s)), max(1, math.floor(base[1] * s)))
        events.append(("resize", cur, out, r["resize_mode"]))
        cur = out
        n = r["noise"]
        value = n["sigma"] if n["type"] == "gaussian" else n["scale"]
        events.append(("noise", n["type"], value, n["gray"]))
        if stage == "first":
            events.append(("jpeg", r["jpeg_quality"]))
    final = (h // scale, w // scale)
    resize_sinc = [("resize", cur, final, rec["final_resize_mode"])]
    if rec["final_sinc"]["type"] != "pulse":
        resize_sinc.append(("filter", kernels["final"][i]))
    jpeg2 = [("jpeg", rec["second"]["jpeg_quality"])]
    events += jpeg2 + resize_sinc if rec["order"].startswith("jpeg") else resize_sinc + jpeg2
    return drop_no_ops(events)


def same_event(got: Event, want: Event) -> bool:
    if got[0] != want[0]:
        return False
    if got[0] == "filter":
        return torch.allclose(got[1], want[1], rtol=0, atol=1e-6)  # applied in float32
    if got[0] == "resize":
        return got[1:] == want[1:]
    if got[0] == "noise":
        return got[1] == want[1] and got[3] == want[3] and math.isclose(got[2], want[2], rel_tol=1e-6)
    return math.isclose(got[1], want[1], rel_tol=1e-6)  # jpeg quality


def describe(e: Event) -> str:
    if e[0] == "filter":
        k = e[1]
        return f"filter(kernel sum {float(k.sum()):.3f}, centre {float(k[10, 10]):.5f})"
    return repr(e)


def assert_trace_matches(events: list[Event], params, kernels, batch: int, hw, scale: int) -> None:
    """The recorded events, split per sample, equal each sample's expected_events (a clear message if not)."""
    got = drop_no_ops(events)
    pos = 0
    for i in range(batch):
        want = expected_events(params, kernels, i, hw, scale)
        mine = got[pos : pos + len(want)]
        for j, (a, b) in enumerate(zip(mine, want, strict=False)):
            assert same_event(a, b), (
                f"sample {i}, call {j}: the pipeline did {describe(a)}, its record says {describe(b)}\n"
                f"whole sample: got {[describe(e) for e in mine]}\nwant {[describe(e) for e in want]}"
            )
        assert len(mine) == len(want), f"sample {i}: {len(mine)} calls recorded, {len(want)} expected"
        pos += len(want)
    assert pos == len(got), f"{len(got) - pos} calls after the last sample's"
