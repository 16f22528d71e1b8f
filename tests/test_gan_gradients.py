"""The GAN stage computes the published losses (spec kdsr.md §5c): one step's gradients against
hand-written losses on tiny float64 networks, the EMA after two steps in closed form, the config's perceptual
layer weights.

Hand-written here, from the spec (not from kdsr's loss helpers):
    G:  w_l1·|SR − GT|₁ + w_kd·KL(softmax(D'_T/τ) ‖ softmax(D'_S/τ)) + w_p·P(SR, GT) + w_gan·BCE(D(SR), 1)
        (the adversarial term flows into G through D: it must not use SR.detach())
    D:  BCE(D(GT), 1) + BCE(D(SR.detach()), 0)
with BCE(x, 1) = mean softplus(−x), BCE(x, 0) = mean softplus(x) over every logit.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdsr.training.gan_stage import GANStage

try:  # the typed settings of the config rework (restructure-train); a plain dict before it
    from kdsr.training.gan_stage import GANSettings

    def _settings(**values):
        return GANSettings(**values)

    DEFAULTS = dataclasses.asdict(GANSettings())
except ImportError:
    from kdsr.training.gan_stage import GAN_DEFAULTS as DEFAULTS

    def _settings(**values):
        return values


pytestmark = pytest.mark.usefixtures("one_torch_thread")
DT = torch.float64
SCALE = 4


class TinyStudent(nn.Module):
    """encode(lr) -> (d, D'_S); sr_net(lr, d) -> ×4 SR: the interface GANStage drives."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Linear(3, 6)
        self.mod = nn.Linear(6, 3)
        self.conv = nn.Conv2d(3, 3 * SCALE * SCALE, 3, padding=1)

    def encode(self, lr):
        d_prime = self.enc(lr.mean((2, 3)) + lr.std((2, 3)))
        return torch.tanh(d_prime), d_prime

    def sr_net(self, lr, d):
        return F.pixel_shuffle(self.conv(lr * (1 + self.mod(d))[..., None, None]), SCALE)


class TinyTeacher(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Linear(3 + 3 * SCALE * SCALE, 6)

    def encode(self, lr, hr):
        feats = torch.cat([lr.mean((2, 3)), F.pixel_unshuffle(hr, SCALE).mean((2, 3))], 1)
        d_prime = self.enc(feats)
        return torch.tanh(d_prime), d_prime


PERCEPTUAL_W = torch.randn(5, 3, 3, 3, dtype=DT, generator=torch.Generator().manual_seed(0))


def tiny_perceptual(sr, gt):
    """A frozen stand-in feature loss: mean |φ(SR) − φ(GT)| with φ a fixed conv + LeakyReLU."""
    phi = lambda x: F.leaky_relu(F.conv2d(x, PERCEPTUAL_W, padding=1), 0.2)  # noqa: E731
    return (phi(sr) - phi(gt).detach()).abs().mean()


def _bce_one(x):
    return F.softplus(-x).mean()


def _bce_zero(x):
    return F.softplus(x).mean()


def _batches(n_iters: int):
    lr = [torch.rand(2, 3, 4, 4, dtype=DT) for _ in range(n_iters)]
    hr = [torch.rand(2, 3, 16, 16, dtype=DT) for _ in range(n_iters)]
    return lambda it: (lr[it], hr[it])


def _stage(settings: dict) -> tuple[GANStage, TinyStudent, TinyTeacher]:
    student, teacher = TinyStudent().to(DT), TinyTeacher().to(DT)
    tiny_d = _settings(d_num_feat=4, **settings)
    stage = GANStage(student, teacher, tiny_perceptual, _batches(2), settings=tiny_d)
    stage.disc.to(DT)  # in place: the optimizer keeps the same parameters
    return stage, student, teacher


def test_one_step_gradients_of_g_and_d_equal_the_hand_written_losses():
    w = {"l1_weight": 0.6, "kd_weight": 0.8, "perceptual_weight": 1.7, "gan_weight": 0.35, "temperature": 0.5}
    stage, student, teacher = _stage({**w, "lr": 1e-3})
    g0, d0 = copy.deepcopy(student), copy.deepcopy(stage.disc)  # the weights (and spectral-norm u) before
    lr, hr = stage.batch_for(0)
    stage.step(0)
    got_g = [p.grad.clone() for p in student.parameters()]
    got_d = [p.grad.clone() for p in stage.disc.parameters()]
    assert got_g and got_d

    # The same forwards, in the same order (D in train mode runs one power iteration per call).
    d, s_prime = g0.encode(lr)
    sr = g0.sr_net(lr, d)
    _, t_prime = teacher.encode(lr, hr)
    p_t = torch.softmax(t_prime / w["temperature"], 1)
    log_p_s = torch.log_softmax(s_prime / w["temperature"], 1)
    kd = (p_t * (torch.log(p_t) - log_p_s)).sum(1).mean()
    adv = _bce_one(d0(sr))
    loss_g = (
        w["l1_weight"] * (sr - hr).abs().mean()
        + w["kd_weight"] * kd
        + w["perceptual_weight"] * tiny_perceptual(sr, hr)
        + w["gan_weight"] * adv
    )
    want_g = torch.autograd.grad(loss_g, list(g0.parameters()), retain_graph=True)
    loss_d = _bce_one(d0(hr)) + _bce_zero(d0(sr.detach()))
    want_d = torch.autograd.grad(loss_d, list(d0.parameters()))

    # The adversarial term matters: without it G's gradient is measurably different.
    no_adv = torch.autograd.grad(loss_g - w["gan_weight"] * adv, list(g0.parameters()), allow_unused=True)
    diff = max((a - b).abs().max().item() for a, b in zip(want_g, no_adv, strict=True) if b is not None)
    assert diff > 1e-6, "test setup: D's gradient into G is negligible"
    for i, (a, b) in enumerate(zip(got_g, want_g, strict=True)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12, msg=lambda m, i=i: f"G parameter {i}: {m}")
    for i, (a, b) in enumerate(zip(got_d, want_d, strict=True)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12, msg=lambda m, i=i: f"D parameter {i}: {m}")
    assert all(p.grad is None for p in teacher.parameters())


def test_ema_after_two_steps_in_closed_form():
    """EMA with the published decay d = 0.999 after two steps: d·θ1 + (1−d)·θ2 when the first update copies
    θ1 (torch's AveragedModel), or d²·θ0 + d(1−d)·θ1 + (1−d)·θ2 when the average starts from θ0 (BasicSR).
    Both pin d; a decay written as 1 − 0.999 lands ~1e-3 away, 10⁹× the tolerance."""
    decay = 0.999
    stage, student, _ = _stage({"lr": 1e-2})
    theta = [[p.detach().clone() for p in student.parameters()]]
    for it in range(2):
        stage.step(it)
        theta.append([p.detach().clone() for p in student.parameters()])
    ema = [p.detach() for p in stage.ema.module.parameters()]
    assert len(ema) == len(theta[0]) > 0
    copy_first = [decay * a + (1 - decay) * b for a, b in zip(theta[1], theta[2], strict=True)]
    from_start = [
        decay**2 * z + decay * (1 - decay) * a + (1 - decay) * b for z, a, b in zip(*theta, strict=True)
    ]
    moved = max((a - b).abs().max().item() for a, b in zip(theta[1], theta[2], strict=True))
    assert moved > 1e-4, "test setup: the second step hardly moved G"

    def close(xs):
        return all(torch.allclose(e, x, rtol=0, atol=1e-12) for e, x in zip(ema, xs, strict=True))

    assert close(copy_first) or close(from_start), "EMA is neither closed form with decay 0.999"


def test_defaults_are_the_published_settings():
    """Spec §5c: Adam 1e-4 (0.9, 0.99) for G and D, every loss weight 1.0, τ 0.15, EMA 0.999, D width 64."""
    assert DEFAULTS == {
        "lr": 1e-4,
        "betas": (0.9, 0.99),
        "ema_decay": 0.999,
        "l1_weight": 1.0,
        "kd_weight": 1.0,
        "perceptual_weight": 1.0,
        "gan_weight": 1.0,
        "temperature": 0.15,
        "d_num_feat": 64,
    }
    stage, _, _ = _stage({})
    for opt in (stage.opt_g, stage.opt_d):
        group = opt.param_groups[0]
        assert isinstance(opt, torch.optim.Adam) and (group["lr"], group["betas"]) == (1e-4, (0.9, 0.99))


# ---- the perceptual loss uses the config's layer weights

VGG19 = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512)
LAYER_WEIGHTS = {"conv1_2": 0.35, "conv2_2": 0.0, "conv3_4": 2.5, "conv4_4": 0.125, "conv5_4": 0.75}


def _fake_torchvision_vgg19(path) -> dict[str, torch.Tensor]:
    """A torchvision-layout VGG19 ``features`` state dict with random weights (He-scaled, so features at
    conv5_4 are neither 0 nor huge), saved to ``path``."""
    g = torch.Generator().manual_seed(1)
    state, idx, cin = {}, 0, 3
    for v in VGG19:
        if v == "M":
            idx += 1
            continue
        std = (2 / (9 * cin)) ** 0.5
        state[f"features.{idx}.weight"] = torch.randn(v, cin, 3, 3, generator=g) * std
        state[f"features.{idx}.bias"] = torch.randn(v, generator=g) * 0.01
        idx, cin = idx + 2, v
    torch.save(state, path)
    return state


def _hand_vgg_features(x: torch.Tensor, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Pre-ReLU conv outputs named convB_J, float64: conv 3×3 pad 1, ReLU, 2×2 max-pool per "M"."""
    out, idx, block, j = {}, 0, 1, 0
    for v in VGG19:
        if v == "M":
            x, idx, block, j = F.max_pool2d(x, 2), idx + 1, block + 1, 0
            continue
        w, b = state[f"features.{idx}.weight"].double(), state[f"features.{idx}.bias"].double()
        j += 1
        x = F.conv2d(x, w, b, padding=1)
        out[f"conv{block}_{j}"] = x
        x, idx = F.relu(x), idx + 2
    return out


def test_perceptual_loss_uses_the_configs_layer_weights(tmp_path):
    try:  # the build step moves to kdsr.training.build with the typed config
        from kdsr.training.build import build_gan_perceptual
    except ImportError:
        from kdsr.training.trainer import build_gan_perceptual
    from kdsr.training.config import load_config

    state = _fake_torchvision_vgg19(tmp_path / "vgg19.pth")
    sets = [
        "data.train_dir=.",
        "teacher=t.pt",
        "init=s.pt",
        f"loss.perceptual.weights={tmp_path / 'vgg19.pth'}",
    ]
    sets += [f"loss.perceptual.layer_weights.{k}={v}" for k, v in LAYER_WEIGHTS.items()]
    loss = build_gan_perceptual(load_config("realworld_x4_gan", sets))
    sr, gt = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    got = loss(sr, gt).item()
    mean = torch.tensor([0.485, 0.456, 0.406], dtype=DT).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], dtype=DT).view(1, 3, 1, 1)
    f_sr = _hand_vgg_features((sr.double() - mean) / std, state)
    f_gt = _hand_vgg_features((gt.double() - mean) / std, state)
    per_layer = {k: (f_sr[k] - f_gt[k]).abs().mean().item() for k in LAYER_WEIGHTS}
    assert min(per_layer.values()) > 0
    want = sum(LAYER_WEIGHTS[k] * per_layer[k] for k in LAYER_WEIGHTS)
    published = {"conv1_2": 0.1, "conv2_2": 0.1, "conv3_4": 1.0, "conv4_4": 1.0, "conv5_4": 1.0}
    default = sum(published[k] * per_layer[k] for k in LAYER_WEIGHTS)
    assert abs(want - default) > 0.05 * want, "test setup: the weights do not change the loss"
    assert abs(got - want) < 1e-4 * want, (
        f"perceptual loss {got}, hand-computed with the config's weights {want}"
    )
