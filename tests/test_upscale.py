"""kdsr.upscale (kdsr/inference/tiling.py): untiled, one tile, blended tiles, one D per image, bounded."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import kdsr
from kdsr.inference.tiling import _axis_weights, encode_image, window_starts

# Stated tolerance for tiles with less context than the network's receptive field (random-weight tiny model,
# tile 12, tile_pad 4 < radius 7): measured max |diff| ~2.5e-3, mean ~6e-5 on outputs with std ~0.07.
TILED_MAX_ABS = 1e-2
TILED_MEAN_ABS = 3e-4


def smooth_image(batch: int, h: int, w: int, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, max(h // 4, 2), max(w // 4, 2), generator=g, dtype=torch.float64)
    return F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1).to(dtype)


@pytest.fixture(scope="module")
def model() -> kdsr.KDSRStudent:
    torch.manual_seed(0)
    return kdsr.KDSRStudent("tiny", scale=4, n_blocks=1)  # SR receptive radius 7 LR pixels


def nhwc(x: torch.Tensor) -> torch.Tensor:
    """The layout kdsr.upscale feeds the network on the CPU (channels_last, issue 24): the reference output
    of the model is its output on that layout (NCHW differs by float rounding, tests/test_model_layout.py)."""
    return x.contiguous(memory_format=torch.channels_last)


def test_untiled_is_the_clamped_model_output(model):
    lr = smooth_image(2, 20, 17)
    out = kdsr.upscale(model, lr)
    assert out.shape == (2, 3, 80, 68) and out.dtype == torch.float32
    with torch.no_grad():
        torch.testing.assert_close(out, model(nhwc(lr)).clamp(0, 1), rtol=0, atol=0)
        torch.testing.assert_close(out, model(lr).clamp(0, 1), rtol=0, atol=1e-5)
    assert out.min() >= 0 and out.max() <= 1


def test_one_tile_covering_the_image_is_identical(model):
    lr = smooth_image(1, 20, 17)
    untiled = kdsr.upscale(model, lr)
    assert torch.equal(kdsr.upscale(model, lr, tile=20, tile_pad=10), untiled)
    assert torch.equal(kdsr.upscale(model, lr, tile=8, tile_pad=6), untiled)  # 8 + 2*6 >= 20: one window


def test_tiles_with_enough_context_equal_the_untiled_result(model):
    # tile_pad >= 2 x receptive radius: blended pixels all come from tiles that saw their whole context.
    r = model.sr_net.receptive_radius
    lr = smooth_image(1, 64, 60)
    untiled = kdsr.upscale(model, lr)
    for tile, pad in [(28, 2 * r), (8, 2 * r + 1)]:
        tiled = kdsr.upscale(model, lr, tile=tile, tile_pad=pad)
        torch.testing.assert_close(tiled, untiled, rtol=0, atol=2e-6)


def test_tiles_with_little_context_agree_within_the_stated_tolerance(model):
    lr = smooth_image(1, 48, 40, seed=1)
    untiled = kdsr.upscale(model, lr)
    tiled = kdsr.upscale(model, lr, tile=12, tile_pad=4)
    diff = (tiled - untiled).abs()
    assert diff.max() > 0  # really tiled
    assert diff.max() < TILED_MAX_ABS and diff.mean() < TILED_MEAN_ABS
    pasted = kdsr.upscale(model, lr, tile=12, tile_pad=0)  # no context, no blending: visibly worse
    assert (pasted - untiled).abs().mean() > 5 * diff.mean()


def test_degradation_is_estimated_once_for_the_whole_image(model, monkeypatch):
    lr = smooth_image(2, 40, 36, seed=2)
    d_whole = model.encode(lr)[0]
    torch.testing.assert_close(encode_image(model, lr, tile=8), d_whole, rtol=1e-5, atol=1e-6)
    seen = []
    real_forward = model.sr_net.forward
    monkeypatch.setattr(model.sr_net, "forward", lambda x, d: seen.append(d.clone()) or real_forward(x, d))
    kdsr.upscale(model, lr, tile=10, tile_pad=3, tile_batch=2)
    assert len(seen) > 3
    for d in seen:  # every tile batch runs under the whole-image D (repeated per tile)
        torch.testing.assert_close(d, d_whole.repeat(d.shape[0] // 2, 1), rtol=1e-5, atol=1e-6)


def test_explicit_degradation_is_used(model):
    lr = smooth_image(1, 16, 16)
    other = model.encode(smooth_image(1, 16, 16, seed=5) * 0.2)[0]
    with torch.no_grad():
        expected = model.sr_net(nhwc(lr), other).clamp(0, 1)
    torch.testing.assert_close(kdsr.upscale(model, lr, degradation=other), expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match="degradation"):
        kdsr.upscale(model, lr, degradation=torch.zeros(1, 7))


def test_device_memory_is_bounded_by_the_tile_size(model, monkeypatch):
    lr = smooth_image(1, 64, 56)
    tile, pad = 16, 5
    shapes = {"sr": [], "enc": []}
    real_sr, real_enc = model.sr_net.forward, model.encoder.features
    monkeypatch.setattr(model.sr_net, "forward", lambda x, d: shapes["sr"].append(x.shape) or real_sr(x, d))
    monkeypatch.setattr(model.encoder, "features", lambda x: shapes["enc"].append(x.shape) or real_enc(x))
    kdsr.upscale(model, lr, tile=tile, tile_pad=pad)
    radius = model.encoder.receptive_radius
    assert len(shapes["sr"]) == len(window_starts(64, 26, 10)) * len(window_starts(56, 26, 10))
    assert all(s[-2] <= tile + 2 * pad and s[-1] <= tile + 2 * pad for s in shapes["sr"])
    assert shapes["enc"], "the encoder never ran: the all(...) below would be vacuous"
    assert all(s[-2] <= tile + 2 * radius and s[-1] <= tile + 2 * radius for s in shapes["enc"])


def test_tile_batch_and_progress(model):
    lr = smooth_image(1, 40, 30, seed=3)
    calls = []
    one = kdsr.upscale(
        model, lr, tile=10, tile_pad=3, progress=lambda done, total: calls.append((done, total))
    )
    assert calls[-1][0] == calls[-1][1] and [c[0] for c in calls] == list(range(1, len(calls) + 1))
    three = kdsr.upscale(model, lr, tile=10, tile_pad=3, tile_batch=3)
    torch.testing.assert_close(three, one, rtol=0, atol=1e-6)


def test_unbatched_input_and_dtypes(model):
    lr = smooth_image(1, 12, 10, dtype=torch.float64)
    out = kdsr.upscale(model, lr[0])
    assert out.shape == (1, 3, 48, 40) and out.dtype == torch.float64
    torch.testing.assert_close(out, kdsr.upscale(model, lr.float()).double(), rtol=0, atol=0)


def test_blend_weights_cover_every_pixel_and_sum_to_one():
    for length, window, overlap in [(100, 30, 10), (57, 20, 8), (40, 36, 28), (9, 9, 4)]:
        starts = window_starts(length, window, overlap)
        assert starts[0] == 0 and starts[-1] + window == length
        assert all(a + window - b >= overlap for a, b in zip(starts, starts[1:], strict=False))
        total = torch.zeros(2 * length)
        for start, w in zip(starts, _axis_weights(starts, window, length, 2), strict=True):
            total[2 * start : 2 * (start + window)] += w
        if all(b - a >= window / 2 for a, b in zip(starts, starts[1:], strict=False)):
            torch.testing.assert_close(total, torch.ones_like(total))  # a partition of unity
        assert total.min() > 0


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"image": torch.rand(1, 4, 8, 8)}, ValueError, "3 channels"),
        ({"image": torch.randint(0, 255, (1, 3, 8, 8), dtype=torch.uint8)}, TypeError, "float"),
        ({"image": torch.rand(1, 3, 2, 8)}, ValueError, "at least"),
        ({"image": torch.full((1, 3, 8, 8), float("nan"))}, ValueError, "NaN"),
        ({"tile": 2}, ValueError, "tile"),
        ({"tile_pad": -1}, ValueError, "tile_pad"),
        ({"tile_batch": 0}, ValueError, "tile_batch"),
    ],
)
def test_bad_arguments(model, kwargs, error, match):
    args = {"image": torch.rand(1, 3, 8, 8), **kwargs}
    with pytest.raises(error, match=match):
        kdsr.upscale(model, **args)


def test_teacher_is_rejected():
    with pytest.raises(TypeError, match="KDSRStudent"):
        kdsr.upscale(kdsr.KDSRTeacher("tiny"), torch.rand(1, 3, 8, 8))


# ----------------------------------------------------------------------------------------------------
# streaming and the memory budget (kdsr upscale --tile auto)
# ----------------------------------------------------------------------------------------------------
def test_stream_hands_every_output_row_once_in_order(model):
    from kdsr.inference.tiling import runner_for, upscale_stream

    lr = smooth_image(1, 40, 30, seed=4)
    whole = kdsr.upscale(model, lr, tile=12, tile_pad=4)
    for tile in (12, None):
        blocks = []
        upscale_stream(runner_for(model), lr, lambda y, b, seen=blocks: seen.append((y, b.clone())), tile, 4)
        starts = [y for y, _ in blocks]
        assert starts[0] == 0 and starts == sorted(starts)
        assert all(y + b.shape[2] == nxt for (y, b), nxt in zip(blocks, starts[1:], strict=False))
        assert blocks[-1][0] + blocks[-1][1].shape[2] == 4 * 40
        assert all(b.dtype == torch.float32 and b.shape[3] == 4 * 30 for _, b in blocks)
        if tile is not None:
            assert len(blocks) > 2  # really streamed in bands
            torch.testing.assert_close(torch.cat([b for _, b in blocks], dim=2), whole, rtol=0, atol=0)


def hand_counted_host_bytes(s: int, win_h: int, win_w: int, width: int) -> int:
    """The blending's float32 host buffers at batch 1, written out by hand (not from the code's helper):
    the band (3 x s*win_h x s*W) and its shifted copy, one window's output (3 x s*win_h x s*win_w) and its
    weighted product, and three 64-row flush temporaries (3 x 64 x s*W)."""
    band = 3 * (s * win_h) * (s * width) * 4
    window = 3 * (s * win_h) * (s * win_w) * 4
    flush = 3 * (3 * 64 * (s * width) * 4)
    return 2 * band + 2 * window + flush


def test_plan_tile_fits_the_budget():
    from kdsr.inference.memory import MIN_AUTO_TILE, MemoryModel, plan_tile

    mem = MemoryModel(encoder_per_px=1000.0, sr_per_px=5000.0, overhead=0)
    hw, s, pad, radius = (300, 400), 4, 10, 6
    untiled_flush = 3 * (3 * 64 * (s * 400) * 4)
    assert plan_tile(mem, hw, s, pad, radius, budget=5000 * 300 * 400 + untiled_flush) is None  # fits
    assert plan_tile(mem, hw, s, pad, radius, budget=5000 * 300 * 400 + untiled_flush - 1) is not None
    budget, fixed = 200 * 2**20, 50 * 2**20
    tile = plan_tile(mem, hw, s, pad, radius, budget, fixed)
    assert MIN_AUTO_TILE <= tile < 400

    def cost(t):
        win = (min(t + 2 * pad, 300), min(t + 2 * pad, 400))
        return fixed + 5000 * win[0] * win[1] + hand_counted_host_bytes(s, *win, 400)

    assert cost(tile) <= budget < cost(tile + 1)  # the largest tile that fits
    # CUDA: the device budget bounds the network, the host budget the band and the arrays
    dev = plan_tile(mem, hw, s, pad, radius, 5000 * 100**2, fixed, host_budget=2**40)
    assert dev == 100 - 2 * pad
    with pytest.raises(MemoryError, match="--max-memory"):
        plan_tile(mem, hw, s, pad, radius, budget=fixed, fixed=fixed)


def test_the_streamer_allocates_what_the_planner_counts():
    """upscale_stream's measured host peak (torch's allocator, profiled) with a runner that allocates only its
    output lies between the band alone and the planner's count of every buffer (both hand-counted)."""
    from kdsr.inference.memory import StreamBuffers
    from kdsr.inference.probe import _profiled_peak
    from kdsr.inference.tiling import TileRunner, upscale_stream

    s, H, W, tile, pad = 4, 70, 90, 24, 4
    runner = TileRunner(
        features=lambda x: x,
        head=lambda pooled: pooled.float(),
        sr=lambda x, d: F.interpolate(x, scale_factor=s, mode="nearest"),
        encoder_radius=0,
        scale=s,
    )
    image = torch.rand(1, 3, H, W)
    peak = _profiled_peak(lambda: upscale_stream(runner, image, lambda y, b: None, tile, pad))
    win = tile + 2 * pad
    band = 3 * (s * win) * (s * W) * 4
    assert StreamBuffers(1, s, win, win, W).peak_bytes() == hand_counted_host_bytes(s, win, win, W)
    assert band <= peak <= hand_counted_host_bytes(s, win, win, W) + 64 * 1024, (band, peak)


def test_measured_peak_bounds_a_real_run():
    """The probe's bytes per pixel x a large window's pixels >= the resident-set growth of running that
    window, in a fresh process set up as `kdsr upscale` sets it up: model loaded, the probe measured first,
    then the allocator kept for reuse (encoder and SR network of the shipped tiny model, fp32 and bf16)."""
    import json
    import subprocess
    import sys

    child = r"""
import json, sys, torch
torch.set_num_threads(1)
import kdsr
from kdsr.device import reuse_freed_memory
from kdsr.inference.probe import _rss_peak, measure_memory
from kdsr.inference.tiling import runner_for
m = kdsr.load("tiny-iso-x4-student")
r = runner_for(m, sys.argv[1])
mem = measure_memory(r, torch.device("cpu"))
reuse_freed_memory()
with torch.no_grad():
    small = r.to_input(torch.rand(1, 3, 16, 16))
    d = r.head(r.features(small).double().mean(dim=(2, 3)))
    x = r.to_input(torch.rand(1, 3, 192, 192))
    real = [_rss_peak(lambda: r.features(x)), _rss_peak(lambda: r.sr(x, d))]
print(json.dumps({"real": real, "bound": [mem.window_bytes(k, 192**2) for k in ("encoder", "sr")],
                  "sr_per_px": mem.sr_per_px}))
"""
    for precision in ("fp32", "bf16"):
        run = subprocess.run(
            [sys.executable, "-c", child, precision], capture_output=True, text=True, timeout=300
        )
        assert run.returncode == 0, run.stderr
        out = json.loads(run.stdout.strip().splitlines()[-1])
        (enc, sr), (enc_bound, sr_bound) = out["real"], out["bound"]
        assert sr >= 3 * (4 * 192) ** 2 * 4  # the measurement saw the run at all: at least its float32 output
        assert enc <= enc_bound, (precision, out)
        assert sr <= sr_bound, (precision, out)


def test_parse_size():
    from kdsr.inference.memory import parse_size

    assert parse_size("2GiB") == 2 * 1024**3 and parse_size("800MB") == 800 * 1000**2
    assert parse_size("1.5 gb") == 1_500_000_000 and parse_size("4096") == 4096
    for bad in ("", "lots", "-1GB", "2 GiBs", "0"):
        with pytest.raises(ValueError, match="2GiB"):
            parse_size(bad)


def test_default_budget_is_half_the_free_memory_capped_beyond_the_arrays():
    from kdsr.inference.memory import DEFAULT_WORK_CAP, default_budget

    free = 10 * 2**30  # the machine's free memory is an input: no monkeypatching of /proc readers
    assert default_budget("cpu", free, fixed=0) == DEFAULT_WORK_CAP == 2**30
    assert default_budget("cpu", free, fixed=3 * 2**30) == 4 * 2**30  # arrays + 1 GiB
    assert default_budget("cpu", free, fixed=9 * 2**30) == 5 * 2**30  # half of what is free
    assert default_budget("cuda", 40 * 2**30, fixed=0) == 32 * 2**30  # 80% of free VRAM, no cap
    assert default_budget("cpu", None, fixed=5) == 5 + 2**30
