"""UNetDiscriminatorSN: parameter count, odd-size output shapes, spectral norm active, gradients."""

import pytest
import torch

from kdsr.models import UNetDiscriminatorSN


def test_parameter_count_matches_reference():
    d = UNetDiscriminatorSN(3, num_feat=64, skip_connection=True)
    assert sum(p.numel() for p in d.parameters()) == 4_376_897


@pytest.mark.parametrize("hw", [(17, 23), (32, 32), (9, 13)])
def test_output_shape_odd_sizes(hw):
    torch.manual_seed(0)
    d = UNetDiscriminatorSN(3, num_feat=8)
    out = d(torch.rand(2, 3, *hw))
    assert out.shape == (2, 1, *hw)
    assert torch.isfinite(out).all()


def test_spectral_norm_active():
    torch.manual_seed(1)
    d = UNetDiscriminatorSN(3, num_feat=8)
    d.train()
    for _ in range(30):  # power iterations run in train-mode forwards
        d(torch.rand(1, 3, 16, 16))
    d.eval()
    sn = [f"conv{i}" for i in range(1, 9)]
    for name in sn:
        conv = getattr(d, name)
        assert hasattr(conv, "parametrizations"), name
        w = conv.weight.detach().flatten(1)  # normalised weight
        assert torch.linalg.matrix_norm(w, ord=2).item() == pytest.approx(1.0, abs=2e-2), name
        raw = conv.parametrizations.weight.original.detach().flatten(1)
        assert abs(torch.linalg.matrix_norm(raw, ord=2).item() - 1.0) > 0.05, name  # SN did something
    for name in ("conv0", "conv9"):
        assert not hasattr(getattr(d, name), "parametrizations"), name


def test_gradients_flow_to_input_and_weights():
    torch.manual_seed(2)
    d = UNetDiscriminatorSN(3, num_feat=8)
    x = torch.rand(1, 3, 15, 15, requires_grad=True)
    d(x).sum().backward()
    assert x.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in d.parameters())
