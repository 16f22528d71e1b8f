"""The offline ST-LPIPS VGG16 network, loaded by path from the stlpips-pytorch wheel (never imported)."""

import importlib.util
import sys

import pytest
import torch

from kdsr.metrics.stlpips_net import STLPIPS_INSTALL, STLPIPSVGG16, STLPIPSUnavailable, stlpips_weights_path

NEED_STLPIPS = pytest.mark.skipif(
    importlib.util.find_spec("stlpips_pytorch") is None, reason=f"needs {STLPIPS_INSTALL}"
)


@pytest.fixture(scope="module")
def net():
    return STLPIPSVGG16()


@NEED_STLPIPS
def test_loads_strictly_without_importing_the_package(net):
    assert sum(p.numel() for p in net.parameters()) == 14_716_160
    assert "stlpips_pytorch" not in sys.modules


@NEED_STLPIPS
def test_distance_properties_and_gradient(net):
    torch.manual_seed(0)
    # a smooth image (white noise decorrelates under a 1-pixel shift)
    x = torch.nn.functional.interpolate(torch.rand(2, 3, 6, 6), size=(40, 44), mode="bicubic").clamp(0, 1)
    noisy = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    shifted = torch.nn.functional.pad(x, (1, 0, 0, 0), mode="replicate")[..., :-1]
    assert net(x, x).abs().max() == 0
    d_noise, d_shift = net(x, noisy), net(x, shifted)
    assert (d_noise > 0).all() and (d_shift > 0).all()
    assert (d_shift < d_noise).all()  # a 1-pixel shift is far less perceptible than strong noise
    sr = noisy.clone().requires_grad_(True)
    net(sr, x).sum().backward()
    assert sr.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.parameters())
    net.train()
    assert not net.training


def test_skip_reason_names_the_extra():
    assert "[gan]" in NEED_STLPIPS.kwargs["reason"]
    assert "stlpips-pytorch==0.0.2" in NEED_STLPIPS.kwargs["reason"]


def test_missing_package_message(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(STLPIPSUnavailable, match=r"\[gan\] extra"):
        stlpips_weights_path()
