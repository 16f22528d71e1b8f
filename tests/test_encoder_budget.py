"""kdsr.models.encoder_budget: tile layout and D from a budget against the pooled-features formula."""

from __future__ import annotations

import torch

import kdsr
from kdsr.models.encoder_budget import budget_tiles, covered_fraction, estimate_from_budget


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
        got = estimate_from_budget(model, image, 0.2, 12)
        whole = estimate_from_budget(model, image, 1.0, 12)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(whole, model.encode(image)[0])
    assert not torch.allclose(got, whole)
