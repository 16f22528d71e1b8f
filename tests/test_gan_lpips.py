"""Our LPIPS against the formula written out independently (lpips's shipped heads, a random backbone)."""

import importlib.util

import pytest
import torch
import torch.nn.functional as F

from kdsr.metrics.lpips_net import LPIPS, LPIPSUnavailable, lpips_heads_path

HAVE_LPIPS = importlib.util.find_spec("lpips") is not None
NEED_LPIPS = pytest.mark.skipif(
    not HAVE_LPIPS, reason="needs lpips's heads: pip install --no-deps lpips==0.1.4"
)
# torchvision features layouts: conv index -> (stride, padding); pools after these conv indices
_VGG_CONVS = {i: (1, 1) for i in (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)}
_VGG_POOL_AFTER = {2, 7, 14, 21}
_VGG_TAPS = {2, 7, 14, 21, 28}
_ALEX_CONVS = {0: (4, 2), 3: (1, 2), 6: (1, 1), 8: (1, 1), 10: (1, 1)}
_ALEX_POOL_AFTER = {0, 3}
_ALEX_TAPS = {0, 3, 6, 8, 10}


def _formula(state, heads, x, y, net):
    """LPIPS written out in float64 from the paper's definition."""
    convs, pools, taps = (
        (_VGG_CONVS, _VGG_POOL_AFTER, _VGG_TAPS)
        if net == "vgg"
        else (_ALEX_CONVS, _ALEX_POOL_AFTER, _ALEX_TAPS)
    )
    shift = torch.tensor([-0.030, -0.088, -0.188], dtype=torch.float64).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450], dtype=torch.float64).view(1, 3, 1, 1)

    def feats(img):
        h = ((2 * img.double() - 1) - shift) / scale
        out = []
        for i in sorted(convs):
            s, p = convs[i]
            h = F.relu(
                F.conv2d(h, state[f"{i}.weight"].double(), state[f"{i}.bias"].double(), stride=s, padding=p)
            )
            if i in taps:
                out.append(h)
            if i in pools:
                h = F.max_pool2d(h, 2) if net == "vgg" else F.max_pool2d(h, 3, 2)
        return out

    total = torch.zeros(x.shape[0], dtype=torch.float64)
    for k, (a, b) in enumerate(zip(feats(x), feats(y), strict=True)):
        na = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        nb = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        w = heads[f"lin{k}.model.1.weight"].double().view(1, -1, 1, 1)
        total += ((na - nb).pow(2) * w).sum(1).mean(dim=(1, 2))
    return total


@NEED_LPIPS
@pytest.mark.parametrize("net,size", [("vgg", 32), ("alex", 67)])
def test_lpips_matches_formula(tmp_path, net, size):
    torch.manual_seed(5)
    model = LPIPS(net)  # random backbone, lpips's heads
    state = {k: v.clone() for k, v in model.features.state_dict().items()}
    tv = {f"features.{k}": v for k, v in state.items()}
    tv["classifier.1.weight"] = torch.zeros(2, 2)
    path = tmp_path / "backbone.pth"
    torch.save(tv, path)
    loaded = LPIPS(net, backbone=path).double()
    heads = torch.load(lpips_heads_path(net), map_location="cpu", weights_only=True)
    x, y = torch.rand(2, 3, size, size + 3), torch.rand(2, 3, size, size + 3)
    ours = loaded(x.double(), y.double())
    ref = _formula(state, heads, x, y, net)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)
    assert (ref > 0).all()
    assert loaded(x.double(), x.double()).abs().max() == 0
    assert loaded(x, y).dtype == torch.float64  # float32 path also works


@NEED_LPIPS
def test_missing_backbone_names_the_file(tmp_path):
    with pytest.raises(LPIPSUnavailable, match=r"vgg16-397923af\.pth"):
        LPIPS("vgg", backbone=tmp_path / "none.pth")


def test_skip_reason_names_the_extra():
    assert "pip install --no-deps lpips==0.1.4" in NEED_LPIPS.kwargs["reason"]


def test_missing_package_message(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(LPIPSUnavailable, match=r"pip install --no-deps lpips==0\.1\.4"):
        lpips_heads_path("vgg")
