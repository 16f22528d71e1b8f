"""The encoder pixel budget (kdsr.inference.encoder_budget layout, tiling.encode_image): tile layout, and D
from a budget against the pooled-features formula."""

from __future__ import annotations

import torch

import kdsr
from kdsr.inference.encoder_budget import budget_tiles
from kdsr.inference.tiling import encode_image


def covered_fraction(height: int, width: int, tiles: list[tuple[int, int, int, int]]) -> float:
    """Share of the image's pixels inside at least one tile (a mask, counted)."""
    mask = torch.zeros(height, width, dtype=torch.bool)
    for top, left, h, w in tiles:
        mask[top : top + h, left : left + w] = True
    return float(mask.float().mean())


def test_tiles_cover_about_the_fraction_inside_the_image():
    for H, W, f in [(400, 600, 0.1), (123, 517, 0.25), (64, 64, 0.05)]:
        tiles = budget_tiles(H, W, f, 16)
        assert all(0 <= t and 0 <= l and t + h <= H and l + w <= W for t, l, h, w in tiles)
        cover = covered_fraction(H, W, tiles)
        assert f * 0.6 <= cover <= f * 1.8 + 16 * 16 / (H * W), (H, W, f, cover)


def test_budget_d_is_head_of_mean_of_tile_features_float64():
    model = kdsr.KDSRStudent("tiny", 4, n_encoder_res=1).double().eval()
    g = torch.Generator().manual_seed(7)
    image = torch.rand(1, 3, 70, 90, generator=g, dtype=torch.float64)
    with torch.no_grad():
        feats = model.encoder.features(image)  # whole image: core features equal these (receptive radius)
        tiles = budget_tiles(70, 90, 0.2, 12)
        cores = [feats[:, :, t : t + h, l : l + w] for t, l, h, w in tiles]
        pooled = torch.cat([c.flatten(2) for c in cores], dim=2).mean(dim=2)
        expected = model.encoder.head(pooled)[0]
        got = encode_image(model, image, max_pixels=int(0.2 * 70 * 90), budget_tile=12)
        whole = encode_image(model, image, max_pixels=70 * 90, budget_tile=12)
        every = encode_image(model, image, max_pixels=None)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(whole, model.encode(image)[0])
    torch.testing.assert_close(every, model.encode(image)[0])
    assert not torch.allclose(got, whole)


def test_upscale_reads_only_the_budget_of_a_large_image(monkeypatch):
    """kdsr.upscale's estimate of an image above `encoder_pixels` runs the encoder on about that many pixels
    (whole BUDGET_TILE tiles plus their context), and gives the same D as encode_image with that budget;
    encoder_pixels=None reads every pixel in one call."""
    model = kdsr.KDSRStudent("tiny", 4, n_blocks=1, n_encoder_res=1).eval()
    H, W, budget = 300, 400, 30_000
    image = torch.rand(1, 3, H, W, generator=torch.Generator().manual_seed(3))
    seen, used = [], []
    real_features, real_sr = model.encoder.features, model.sr_net.forward
    monkeypatch.setattr(
        model.encoder, "features", lambda x: seen.append(x.shape[-2] * x.shape[-1]) or real_features(x)
    )
    monkeypatch.setattr(model.sr_net, "forward", lambda x, d: used.append(d.clone()) or real_sr(x, d))
    with torch.no_grad():
        kdsr.upscale(model, image, encoder_pixels=budget)
        read = sum(seen)
        d_budget = encode_image(model, image, max_pixels=budget)
        seen.clear()
        kdsr.upscale(model, image, encoder_pixels=None)
        assert seen == [H * W]  # every pixel, one call
    context = (128 + 2 * model.encoder.receptive_radius) ** 2 / 128**2
    assert budget <= read <= 2 * budget * context and read < 0.5 * H * W, read
    torch.testing.assert_close(used[0], d_budget, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(used[0], used[1])
