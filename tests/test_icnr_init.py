"""ICNR init of the pixel-shuffle convs: at init a constant image upsamples without a period-2/4 pattern."""

import pytest
import torch
from torch import nn

from kdsr.models.sr_network import SRNetwork, icnr_


def _interior_spread(net: SRNetwork, scale: int) -> float:
    """Std over the interior of the SR of a constant LR image (borders see the zero padding)."""
    torch.manual_seed(11)
    lr = torch.full((1, 3, 24, 24), 0.2 + 0.6 * torch.rand(()).item())
    with torch.no_grad():
        sr = net(lr, torch.randn(1, net.n_feats))
    margin = scale * (net.receptive_radius + 2)
    inner = sr[..., margin:-margin, margin:-margin]
    assert inner.numel() > 0
    return float(inner.std(dim=(-2, -1)).max())


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_constant_input_has_no_subpixel_pattern_at_init(scale):
    torch.manual_seed(0)
    net = SRNetwork(n_feats=8, n_blocks=2, scale=scale, mode="pytorch")
    spread = _interior_spread(net, scale)
    for module in net.upsample:  # the same network with PyTorch's default init of the upsampler convs
        if isinstance(module, nn.Conv2d):
            module.reset_parameters()
    default = _interior_spread(net, scale)
    assert spread < 1e-6, spread  # float32 round-off only: every sub-pixel gets the same value
    assert default > 1e-3, default  # the default init does leave a checkerboard, so the test can fail


def test_icnr_repeats_each_filter_over_the_subpixels():
    conv = icnr_(nn.Conv2d(4, 16, 3, padding=1), 2)
    w = conv.weight.reshape(4, 4, 4, 3, 3)  # (out channel, sub-pixel, in, kh, kw): PixelShuffle's layout
    assert torch.equal(w, w[:, :1].expand_as(w))
    assert torch.equal(conv.bias.reshape(4, 4), conv.bias.reshape(4, 4)[:, :1].expand(4, 4))
    assert w[:, 0].std() > 0  # not a constant init
