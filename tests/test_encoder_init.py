"""train.encoder_init: kaiming re-draws a fresh encoder so D' depends on the input (the default: barely)."""

from __future__ import annotations

import pytest
import torch
from test_training_support import make_image_folder, save_tiny_teacher, tiny_overrides

from kdsr.data.dataset import HRImageDataset
from kdsr.training.build import build_models
from kdsr.training.config import ConfigError, load_config


def _relative_spread(model, lr, hr) -> float:
    with torch.no_grad():
        _, d_prime = model.encode(lr, hr) if hr is not None else model.encode(lr)
    return (d_prime.std(0).mean() / d_prime.abs().mean()).item()


@pytest.mark.parametrize("stage", ["teacher", "student"])
def test_kaiming_encoder_init_spreads_d_prime_and_zeroes_biases(tmp_path, stage):
    images = make_image_folder(tmp_path / "hr", count=4, size=48)
    extra = [f"teacher={save_tiny_teacher(tmp_path / 't.pt', seed=2)}"] if stage == "student" else []
    base = [*tiny_overrides(images, tmp_path / "runs"), *extra]
    hr = torch.stack([HRImageDataset(images, 4, 8, augment=False)[i] for i in range(4)]).float()
    lr = torch.nn.functional.avg_pool2d(hr, 4)
    spreads = {}
    for init in ("torch", "kaiming"):
        config = load_config(f"tiny_iso_x4_{stage}", [*base, f"train.encoder_init={init}"])
        model, _ = build_models(config, torch.device("cpu"))
        spreads[init] = _relative_spread(model, lr, hr if stage == "teacher" else None)
        biases = [m.bias for m in model.encoder.modules() if getattr(m, "bias", None) is not None]
        assert biases and all(bool((b == 0).all()) == (init == "kaiming") for b in biases)
        if stage == "student":  # only the encoder is re-drawn: the SR network is still the teacher's copy
            teacher = build_models(config, torch.device("cpu"))[1]
            for name, p in teacher.sr_net.state_dict().items():
                assert torch.equal(model.sr_net.state_dict()[name], p), name
    assert spreads["kaiming"] > 5 * spreads["torch"], spreads


def test_unknown_encoder_init_is_a_config_error(tmp_path):
    images = make_image_folder(tmp_path / "hr", count=1, size=32)
    with pytest.raises(ConfigError, match="encoder_init"):
        load_config("tiny_iso_x4_teacher", [*tiny_overrides(images, tmp_path), "train.encoder_init=xavier"])


@pytest.mark.parametrize("in_channels", [3, 3 + 3 * 16])  # student, x4 teacher
def test_highpass_init_makes_laplacian_detectors(in_channels):
    from kdsr.models.encoder import KDIDE, LAPLACIAN, highpass_init_

    torch.manual_seed(0)
    enc = highpass_init_(KDIDE(in_channels, 32, 1), gain=30.0)
    w = enc.body[0].weight
    lap = 30.0 * torch.tensor(LAPLACIAN)
    n_hr = (in_channels - 3) // 3
    for c in range(3):
        torch.testing.assert_close(w[2 * c, c], lap)
        torch.testing.assert_close(w[2 * c + 1, c], -lap)
        assert int((w[2 * c].abs().sum((1, 2)) > 0).sum()) == 1  # an LR detector looks at its colour only
        if n_hr:
            hr = w[6 + 2 * c, 3 + c * n_hr : 3 + (c + 1) * n_hr]
            torch.testing.assert_close(hr, lap.expand_as(hr) / n_hr)
    detectors = 12 if n_hr else 6
    assert w[detectors:].abs().sum() > 0  # the other channels keep their kaiming draw
    # on a sharp vs a blurred image, the pooled |high-pass| maps differ strongly (the point of the init)
    x = torch.rand(1, in_channels, 24, 24)
    blurred = torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    with torch.no_grad():
        sharp_hp = torch.nn.functional.leaky_relu(enc.body[0](x), 0.1)[:, :6].mean()
        blur_hp = torch.nn.functional.leaky_relu(enc.body[0](blurred), 0.1)[:, :6].mean()
    assert sharp_hp > 2 * blur_hp


def test_highpass_init_needs_enough_features():
    from kdsr.models.encoder import KDIDE, highpass_init_

    with pytest.raises(ValueError, match="needs >= 12"):
        highpass_init_(KDIDE(51, 8, 1))
