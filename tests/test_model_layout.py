"""SRNetwork's fused / folded forward (MeanShift in the tail conv, in-place residuals, channels_last
upsampler) against a hand-written float64 forward of the paper's layer list, in both memory formats."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import kdsr
from kdsr.device import reuse_freed_memory
from kdsr.models.sr_network import SRNetwork, make_upsampler


def _oracle(net: SRNetwork, lr: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """The unfused network, layer by layer as spec kdsr.md §3-4 lists it (MeanShift as 1x1 convs)."""
    x = F.conv2d(lr, net.sub_mean.weight, net.sub_mean.bias)
    h = F.conv2d(x, net.head.weight, net.head.bias, padding=1)
    x = h
    B, C, H, W = h.shape
    for block in net.blocks:
        w = block.ddc.kernel(d).view(B * C, 1, 3, 3)
        y = F.conv2d(x.reshape(1, B * C, H, W), w, padding=1, groups=B * C).view(B, C, H, W)
        y = F.leaky_relu(y, 0.1)
        x = F.conv2d(y, block.conv.weight, block.conv.bias, padding=1) + x
    x = F.conv2d(x, net.body_conv.weight, net.body_conv.bias, padding=1) + h
    for conv, shuffle in zip(net.upsample[::2], net.upsample[1::2], strict=True):
        x = F.pixel_shuffle(F.conv2d(x, conv.weight, conv.bias, padding=1), shuffle.upscale_factor)
    x = F.conv2d(x, net.tail.weight, net.tail.bias, padding=1)
    return F.conv2d(x, net.add_mean.weight, net.add_mean.bias)


def _random_shift(net: SRNetwork, generator: torch.Generator) -> None:
    """Non-trivial MeanShifts (std != 1) so a wrong fold of the scale cannot pass."""
    with torch.no_grad():
        for shift in (net.sub_mean, net.add_mean):
            scale = 0.5 + torch.rand(3, generator=generator, dtype=shift.weight.dtype)
            shift.weight.copy_(torch.diag(scale).view(3, 3, 1, 1))
            shift.bias.copy_(torch.randn(3, generator=generator, dtype=shift.bias.dtype))


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_sr_network_matches_unfused_float64(scale, layout):
    g = torch.Generator().manual_seed(scale)
    net = SRNetwork(8, 2, scale, mode="reference").double().eval()
    _random_shift(net, g)
    lr = torch.rand(2, 3, 9, 11, generator=g, dtype=torch.float64)
    d = torch.randn(2, 8, generator=g, dtype=torch.float64)
    with torch.no_grad():
        expected = _oracle(net, lr, d)
        got = net.to(memory_format=layout)(lr.contiguous(memory_format=layout), d)
    assert got.shape == expected.shape == (2, 3, 9 * scale, 11 * scale)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_channels_last_upsampler_equals_pixel_shuffle(scale):
    g = torch.Generator().manual_seed(10 + scale)
    up = make_upsampler(6, scale).double()
    x = torch.randn(2, 6, 5, 7, generator=g, dtype=torch.float64)
    with torch.no_grad():
        expected = up(x)
        got = up(x.contiguous(memory_format=torch.channels_last))
    assert got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_channels_last_gradients_match():
    g = torch.Generator().manual_seed(3)
    net = SRNetwork(8, 2, 4, mode="reference").double()
    lr = torch.rand(1, 3, 8, 8, generator=g, dtype=torch.float64)
    d = torch.randn(1, 8, generator=g, dtype=torch.float64)
    grads = []
    for layout in (torch.contiguous_format, torch.channels_last):
        net.zero_grad()
        net.to(memory_format=layout)(lr.contiguous(memory_format=layout), d).square().sum().backward()
        grads.append([p.grad.clone() for p in net.parameters() if p.requires_grad])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_non_diagonal_mean_shift_is_refused():
    net = SRNetwork(4, 1, 2)
    state = net.state_dict()
    state["sub_mean.weight"] = torch.rand(3, 3, 1, 1) + 0.1
    with pytest.raises(ValueError, match="diagonal"):
        net.load_state_dict(state)


def test_channels_last_model_matches_nchw_and_returns_nchw():
    model = kdsr.load("tiny-iso-x4-student").double().to(memory_format=torch.channels_last)
    nchw = kdsr.KDSRStudent("tiny", 4).double().eval()
    nchw.load_state_dict(model.state_dict())
    assert model.sr_net.head.weight.is_contiguous(memory_format=torch.channels_last)
    lr = torch.rand(1, 3, 12, 10, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    with torch.no_grad():
        got, expected = model(lr), nchw(lr)
    assert got.is_contiguous()
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_reuse_freed_memory_is_idempotent(monkeypatch):
    import kdsr.device as device

    first = reuse_freed_memory()
    assert first in ("raised", "default", "failed")
    assert reuse_freed_memory() == first
    monkeypatch.setattr(device, "_malloc_state", None)
    monkeypatch.setenv("KDSR_MALLOC", "default")
    assert reuse_freed_memory() == "default"


def test_reuse_freed_memory_gives_way_to_an_address_space_limit():
    """Under a finite RLIMIT_AS freed memory must go back to the system: a process that raised the thresholds
    restores glibc's defaults at the next call after a limit appears, and one started under a limit never
    raises them (a fresh process each, glibc Linux only)."""
    import subprocess
    import sys

    if not sys.platform.startswith("linux"):
        pytest.skip("glibc malloc thresholds are Linux-only")
    child = r"""
import resource, sys
from kdsr.device import reuse_freed_memory
from kdsr.inference.probe import _status_bytes
first = reuse_freed_memory()
limit = _status_bytes("VmSize") + (8 << 30)
resource.setrlimit(resource.RLIMIT_AS, (limit, resource.RLIM_INFINITY))
print(first, reuse_freed_memory())
"""
    run = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    first, after = run.stdout.split()
    assert after == "default" and first in ("raised", "failed")
    capped = (
        "import resource; resource.setrlimit(resource.RLIMIT_AS, (1 << 40, resource.RLIM_INFINITY)); "
        "from kdsr.device import reuse_freed_memory; print(reuse_freed_memory())"
    )
    run = subprocess.run([sys.executable, "-c", capped], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "default", run.stderr


SET5 = "/work/shared/data/Set5"


@pytest.mark.skipif(not __import__("os").path.isdir(SET5), reason="needs the Set5 images")
def test_bf16_path_within_one_level_on_a_real_crop():
    """Quality bound of the bf16 path (issue 24): <= 0.1 % of 8-bit values off fp32 by more than one level."""
    from kdsr.data.io import list_images, read_image
    from kdsr.degradations.pipeline import degrade
    from kdsr.models.roofline import student_forward

    hr = read_image(list_images(SET5)[0])[:, :192, :192].unsqueeze(0)
    lr = degrade(hr.double(), None, 4).float()  # 48 x 48 bicubic LR of a real photo
    model = kdsr.load("iso-x4-student")
    model.validate_inputs = False
    with torch.no_grad():
        fp32 = (model(lr).clamp(0, 1) * 255).round()
        bf16 = (student_forward(model, "bf16")(lr).float().clamp(0, 1) * 255).round()
    off = (fp32 - bf16).abs() > 1
    assert float(off.float().mean()) <= 1e-3, f"{int(off.sum())} of {off.numel()} values off by > 1 level"


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_roofline_times_the_layout_upscale_feeds(precision):
    """The roofline benchmark's forward hands the network the memory format `kdsr upscale` does (channels_last
    on the CPU, fp32 too), and its output is the model's own."""
    from kdsr.inference.runners import torch_runner
    from kdsr.models.roofline import student_forward

    torch.manual_seed(0)
    model = kdsr.load(kdsr.KDSRStudent("tiny", 2).checkpoint())
    seen = []
    model.encoder.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    lr = torch.rand(1, 3, 20, 24)
    want = torch_runner(model).to_input(lr)
    with torch.no_grad():
        out = student_forward(model, precision)(lr)
        ref = model(want)
    assert seen[0].is_contiguous(memory_format=torch.channels_last)
    assert seen[0].is_contiguous(memory_format=torch.channels_last) == want.is_contiguous(
        memory_format=torch.channels_last
    )
    tol = 1e-5 if precision == "fp32" else 0.05
    assert out.shape == (1, 3, 40, 48) and torch.allclose(out.float(), ref, atol=tol)
