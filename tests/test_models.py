"""KDSR teacher / student networks: sizes, shapes, fused vs grouped-conv IDR-DDC, from_teacher, save/load."""

from __future__ import annotations

import math
import os

import pytest
import torch
import torch.nn.functional as F

import kdsr
import kdsr_kernels
from kdsr.models import PAPER_PARAMS_M, VARIANTS, count_macs, count_parameters, kdsr_model

SCALES = (2, 3, 4)


def on_meta(cls, *args, **kwargs):
    """Build a model without allocating or initialising weights (for the big variants)."""
    with torch.device("meta"):
        model = cls(*args, **kwargs)
    model.validate_inputs = False
    return model


def smooth_image(batch: int, h: int, w: int, dtype=torch.float32, seed: int = 0) -> torch.Tensor:
    """Random but image-like input: bicubic-upsampled noise, clamped to [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, max(h // 3, 2), max(w // 3, 2), generator=g, dtype=torch.float64)
    return F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1).to(dtype)


# ----------------------------------------------------------------------------------------------------
# sizes
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "variant, total, encoder, sr_net",
    [
        ("M", 5_795_099, 1_331_136, 4_463_963),
        ("L", 14_191_003, 4_135_808, 10_055_195),
        ("GAN", 18_846_107, 4_430_976, 14_415_131),
    ],
)
def test_student_parameter_counts_match_the_paper(variant, total, encoder, sr_net):
    counts = count_parameters(on_meta(kdsr.KDSRStudent, variant))
    assert counts == {"total": total, "trainable": total - 24, "encoder": encoder, "sr_net": sr_net}
    assert round(counts["total"] / 1e6, 2) == PAPER_PARAMS_M[variant]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_teacher_differs_from_student_only_in_the_first_encoder_conv(variant):
    s, t = on_meta(kdsr.KDSRStudent, variant), on_meta(kdsr.KDSRTeacher, variant)
    C = VARIANTS[variant]["n_feats"]
    assert t.encoder.body[0].in_channels == 51  # 3 + 3 * 4^2 at x4
    extra = count_parameters(t)["total"] - count_parameters(s)["total"]
    assert extra == 48 * C * 9  # 28 K (M), 55 K (L, GAN)


def test_macs_reproduce_the_paper_for_kdsr_s_l():
    macs = count_macs(on_meta(kdsr.KDSRStudent, "L"), (180, 320))
    assert f"{macs['total'] / 1e9:.2f}" == "623.61"
    assert macs["total"] == macs["encoder"] + macs["sr_net"]
    with_dynamic = count_macs(on_meta(kdsr.KDSRStudent, "L"), (180, 320), include_dynamic=True)["total"]
    assert with_dynamic - macs["total"] == 28 * 9 * 128 * 180 * 320


def test_size_overrides_and_variant_names():
    m = kdsr.KDSRStudent("tiny", n_blocks=2, n_feats=16, n_encoder_res=0)
    assert (m.n_feats, m.n_blocks, m.n_encoder_res) == (16, 2, 0)
    assert len(m.sr_net.blocks) == 2 and m.config["n_blocks"] == 2
    assert on_meta(kdsr.KDSRStudent, "gan").variant == "GAN"
    assert VARIANTS["tiny"] == {"n_feats": 32, "n_blocks": 4, "n_encoder_res": 2}
    assert VARIANTS["small"] == {"n_feats": 48, "n_blocks": 8, "n_encoder_res": 3}


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"variant": "XL"}, ValueError),
        ({"scale": 8}, ValueError),
        ({"scale": True}, ValueError),
        ({"n_blocks": 0}, ValueError),
        ({"n_feats": 2.5}, ValueError),
        ({"depth": 3}, TypeError),
        ({"fused_kernels": "fast"}, ValueError),
    ],
)
def test_bad_constructor_arguments(kwargs, error):
    kwargs = {"variant": "tiny", **kwargs}
    with pytest.raises(error):
        kdsr.KDSRStudent(**kwargs)


# ----------------------------------------------------------------------------------------------------
# shapes
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("scale", SCALES)
def test_shapes_for_every_variant_and_scale(variant, scale):
    s, t = on_meta(kdsr.KDSRStudent, variant, scale), on_meta(kdsr.KDSRTeacher, variant, scale)
    C = VARIANTS[variant]["n_feats"]
    lr = torch.empty(2, 3, 5, 7, device="meta")
    hr = torch.empty(2, 3, 5 * scale, 7 * scale, device="meta")
    s.set_fused_kernels(False)  # kdsr_kernels does not run meta tensors; shapes are the same
    t.set_fused_kernels(False)
    assert s(lr).shape == (2, 3, 5 * scale, 7 * scale)
    assert t(lr, hr).shape == (2, 3, 5 * scale, 7 * scale)
    assert [x.shape for x in s.encode(lr)] == [(2, C), (2, 4 * C)]
    assert [x.shape for x in t.encode(lr, hr)] == [(2, C), (2, 4 * C)]
    assert t.encoder.body[0].in_channels == 3 + 3 * scale * scale


@pytest.mark.parametrize("variant, scale", [("tiny", 2), ("tiny", 3), ("small", 4), ("M", 4)])
def test_real_forward_on_tiny_inputs(variant, scale):
    torch.manual_seed(0)
    s = kdsr.KDSRStudent(variant, scale)
    lr = smooth_image(1, 5, 6)
    sr = s(lr)
    assert sr.shape == (1, 3, 5 * scale, 6 * scale) and sr.dtype == torch.float32
    assert torch.isfinite(sr).all()


def test_same_output_in_train_and_eval_mode():
    torch.manual_seed(0)
    s, t = kdsr.KDSRStudent("tiny"), kdsr.KDSRTeacher("tiny")
    lr, hr = smooth_image(2, 8, 8), smooth_image(2, 32, 32, seed=1)
    s.train(), t.train()
    train_s, train_t = s(lr), t(lr, hr)
    assert isinstance(train_s, torch.Tensor) and isinstance(train_t, torch.Tensor)
    s.eval(), t.eval()
    torch.testing.assert_close(s(lr), train_s, rtol=0, atol=0)
    torch.testing.assert_close(t(lr, hr), train_t, rtol=0, atol=0)


def test_teacher_input_is_lr_then_pixel_unshuffled_hr():
    t = kdsr.KDSRTeacher("tiny", scale=4)
    lr, hr = torch.rand(2, 3, 5, 6), torch.rand(2, 3, 20, 24)
    x = t.teacher_input(lr, hr)
    assert x.shape == (2, 51, 5, 6)
    torch.testing.assert_close(x[:, :3], lr, rtol=0, atol=0)
    c, i, j, y, xx = 2, 1, 3, 4, 5  # channel c*s^2 + i*s + j holds hr[c, s*y + i, s*x + j]
    torch.testing.assert_close(x[:, 3 + c * 16 + i * 4 + j, y, xx], hr[:, c, 4 * y + i, 4 * xx + j])


def test_encode_returns_d_from_d_prime():
    torch.manual_seed(0)
    s = kdsr.KDSRStudent("tiny")
    lr = smooth_image(2, 9, 8)
    d, d_prime = s.encode(lr)
    torch.testing.assert_close(d, s.encoder.compress(d_prime))
    torch.testing.assert_close(s(lr), s.sr_net(lr, d))


def test_sr_network_receptive_radius_bounds_what_a_pixel_sees():
    torch.manual_seed(0)
    s = kdsr.KDSRStudent("tiny", scale=2, n_blocks=2)
    r = s.sr_net.receptive_radius
    lr = smooth_image(1, 2 * r + 8, 2 * r + 8)
    d = s.encode(lr)[0]
    far = lr.clone()
    far[..., -1, -1] = 1 - far[..., -1, -1]  # change one corner pixel
    delta = (s.sr_net(lr, d) - s.sr_net(far, d)).abs()[0].amax(0)
    y, x = torch.nonzero(delta > 0).min(0).values.tolist()
    assert min(y, x) >= 2 * (lr.shape[-1] - 1 - r)  # nothing changes farther than r LR pixels away


# ----------------------------------------------------------------------------------------------------
# fused kernels vs the grouped-conv formulation
# ----------------------------------------------------------------------------------------------------
def _cpu_backends() -> list[str]:
    names = ["auto", *kdsr_kernels.available_backends("cpu")]
    return list(dict.fromkeys(names))


@pytest.mark.parametrize("backend", _cpu_backends())
@pytest.mark.parametrize("cls", [kdsr.KDSRStudent, kdsr.KDSRTeacher])
def test_fused_matches_grouped_conv_outputs_and_every_gradient(cls, backend):
    torch.manual_seed(0)
    n_blocks = 2 if backend == "triton" else 4  # the Triton interpreter is slow
    model = cls("tiny", scale=2, fused_kernels=False, n_blocks=n_blocks).double()
    lr = smooth_image(2, 7, 9, torch.float64).requires_grad_()
    inputs = (lr,) if cls is kdsr.KDSRStudent else (lr, smooth_image(2, 14, 18, torch.float64, seed=1))
    probe = torch.randn(2, 3, 14, 18, dtype=torch.float64)

    def run():
        model.zero_grad(set_to_none=True)
        lr.grad = None
        out = model(*inputs)
        (out * probe).sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        return out.detach(), grads, lr.grad.clone()

    ref_out, ref_grads, ref_lr_grad = run()
    model.set_fused_kernels(True if backend == "auto" else backend)
    assert model.fused_kernels
    out, grads, lr_grad = run()
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-10)
    assert grads.keys() == ref_grads.keys() and len(grads) > 20
    for name in ref_grads:
        assert ref_grads[name].abs().sum() > 0, name  # every parameter gets a gradient
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-9, atol=1e-10, msg=name)
    torch.testing.assert_close(lr_grad, ref_lr_grad, rtol=1e-9, atol=1e-10)


def test_fused_switch_keeps_state_dict_keys_and_calls_kdsr_kernels(monkeypatch):
    model = kdsr.KDSRStudent("tiny", fused_kernels=True)
    keys = list(model.state_dict())
    calls = []
    real = kdsr_kernels.idr_ddc

    def spy(x, w, negative_slope=None, backend="auto"):
        calls.append((tuple(w.shape), negative_slope, backend))
        return real(x, w, negative_slope=negative_slope, backend=backend)

    monkeypatch.setattr(kdsr_kernels, "idr_ddc", spy)
    model(smooth_image(2, 6, 6))
    assert calls == [((2, 32, 3, 3), 0.1, "auto")] * 4
    calls.clear()
    model.set_fused_kernels(False)
    assert not model.fused_kernels and model.idr_ddc_mode == "pytorch"
    model(smooth_image(2, 6, 6))
    assert calls == []
    assert (
        list(model.state_dict()) == keys == list(kdsr.KDSRStudent("tiny", fused_kernels=False).state_dict())
    )


def test_bfloat16_model_tracks_float32():
    torch.manual_seed(0)
    model = kdsr.KDSRStudent("tiny")
    lr = smooth_image(1, 8, 8)
    ref = model(lr)
    out = model.to(torch.bfloat16)(lr.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16
    assert (out.float() - ref).abs().max() < 0.05


# ----------------------------------------------------------------------------------------------------
# from_teacher
# ----------------------------------------------------------------------------------------------------
def test_from_teacher_copies_the_sr_network_exactly_and_starts_a_fresh_encoder():
    torch.manual_seed(0)
    t = kdsr.KDSRTeacher("tiny", scale=3, n_blocks=3)
    torch.manual_seed(1)
    s = kdsr.KDSRStudent.from_teacher(t)
    assert isinstance(s, kdsr.KDSRStudent) and s.config == t.config
    t_sr, s_sr = t.sr_net.state_dict(), s.sr_net.state_dict()
    assert t_sr.keys() == s_sr.keys()
    for key in t_sr:
        torch.testing.assert_close(s_sr[key], t_sr[key], rtol=0, atol=0)
        assert s_sr[key].data_ptr() != t_sr[key].data_ptr()  # a copy, not shared storage
    assert s.encoder.body[0].in_channels == 3
    fresh = kdsr.KDSRStudent("tiny", scale=3, n_blocks=3).encoder.body[2].conv1.weight.detach()
    student_w = s.encoder.body[2].conv1.weight.detach()
    assert not torch.equal(student_w, t.encoder.body[2].conv1.weight.detach())
    assert student_w.std().item() == pytest.approx(fresh.std().item(), rel=0.2)  # default init
    lr = smooth_image(1, 6, 6)
    d = s.encode(lr)[0]
    torch.testing.assert_close(s.sr_net(lr, d), t.sr_net(lr, d), rtol=0, atol=0)
    with torch.no_grad():
        s.sr_net.head.weight.add_(1.0)
    assert not torch.equal(s.sr_net.head.weight, t.sr_net.head.weight)
    with pytest.raises(TypeError):
        kdsr.KDSRStudent.from_teacher(s)


def test_from_teacher_follows_dtype_and_kernel_mode():
    t = kdsr.KDSRTeacher("tiny", fused_kernels=False).double()
    s = kdsr.KDSRStudent.from_teacher(t)
    assert s.sr_net.head.weight.dtype == torch.float64 and s.idr_ddc_mode == "pytorch"
    assert kdsr.KDSRStudent.from_teacher(t, fused_kernels=True).fused_kernels


# ----------------------------------------------------------------------------------------------------
# save / load
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [kdsr.KDSRStudent, kdsr.KDSRTeacher])
def test_save_load_round_trip(tmp_path, cls):
    torch.manual_seed(0)
    model = cls("tiny", scale=2, n_blocks=3)
    path = model.save(tmp_path / "sub" / "model.pt", metadata={"note": "x"})
    assert sorted(os.listdir(path.parent)) == ["model.pt"]  # no temp file left behind
    blob = torch.load(path, weights_only=True)
    assert blob["format"] == "kdsr-model" and blob["version"] == 1 and blob["class"] == cls.__name__
    assert blob["config"] == {"variant": "tiny", "scale": 2, "n_feats": 32, "n_blocks": 3, "n_encoder_res": 2}
    assert blob["metadata"] == {"note": "x"}
    loaded = kdsr.load(path)
    assert type(loaded) is cls and not loaded.training and loaded.fused_kernels
    assert loaded.config == model.config
    lr = smooth_image(1, 6, 5)
    inputs = (lr,) if cls is kdsr.KDSRStudent else (lr, smooth_image(1, 12, 10, seed=3))
    torch.testing.assert_close(loaded(*inputs), model(*inputs), rtol=0, atol=0)
    assert kdsr.load(str(path), fused_kernels=False).idr_ddc_mode == "pytorch"


def test_load_training_checkpoint_dict_and_map_location(tmp_path):
    torch.manual_seed(0)
    model = kdsr.KDSRStudent("tiny")
    ckpt = {"model": model.checkpoint(), "optimizer": {"state": {}}, "iteration": 7}
    torch.save(ckpt, tmp_path / "last.pt")
    loaded = kdsr.load(tmp_path / "last.pt", map_location="cpu")
    assert loaded.sr_net.head.weight.device.type == "cpu"
    torch.testing.assert_close(loaded.sr_net.head.weight, model.sr_net.head.weight, rtol=0, atol=0)
    assert kdsr.load(ckpt).config == model.config  # an already loaded dict works too


def test_load_shipped_name(tmp_path, monkeypatch):
    monkeypatch.setattr(kdsr_model, "WEIGHTS_DIR", tmp_path)
    model = kdsr.KDSRStudent("tiny")
    model.save(tmp_path / "tiny-test-x4.safetensors")
    assert kdsr_model.shipped_names() == ["tiny-test-x4"]
    monkeypatch.chdir(tmp_path.parent)  # the bare name is not a path from here
    assert kdsr.load("tiny-test-x4").config == model.config
    with pytest.raises(FileNotFoundError, match="tiny-test-x4"):  # the message lists what exists
        kdsr.load("no-such-model")


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="shipped models"):
        kdsr.load(tmp_path / "missing.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read"):
        kdsr.load(tmp_path / "garbage.pt")
    torch.save({"state_dict": {}}, tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="not a kdsr model file"):
        kdsr.load(tmp_path / "plain.pt")
    blob = kdsr.KDSRStudent("tiny").checkpoint()
    blob["version"] = 99
    with pytest.raises(ValueError, match="version"):
        kdsr.load(blob)
    blob = kdsr.KDSRStudent("tiny").checkpoint()
    blob["config"]["n_feats"] = 16
    with pytest.raises(ValueError, match="do not fit"):
        kdsr.load(blob)


# ----------------------------------------------------------------------------------------------------
# bad inputs
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: torch.rand(1, 1, 8, 8), ValueError, "3 channels"),
        (lambda: torch.rand(1, 4, 8, 8), ValueError, "alpha"),
        (lambda: torch.rand(3, 8, 8), ValueError, "unsqueeze"),
        (lambda: (torch.rand(1, 3, 8, 8) * 255).to(torch.uint8), TypeError, "float"),
        (lambda: torch.rand(1, 3, 3, 8), ValueError, "at least 4x4"),
        (lambda: torch.rand(1, 3, 8, 8).index_fill_(2, torch.tensor([2]), float("nan")), ValueError, "NaN"),
        (lambda: torch.rand(1, 3, 8, 8, dtype=torch.float64), TypeError, "dtype"),
        (lambda: [[0.5]], TypeError, "Tensor"),
    ],
)
def test_bad_student_inputs(make, error, match):
    model = kdsr.KDSRStudent("tiny")
    with pytest.raises(error, match=match):
        model(make())
    with pytest.raises(error, match=match):
        model.encode(make())


def test_bad_teacher_inputs():
    t = kdsr.KDSRTeacher("tiny", scale=4)
    lr = torch.rand(2, 3, 6, 6)
    with pytest.raises(ValueError, match="x4 image"):
        t(lr, torch.rand(2, 3, 23, 24))
    with pytest.raises(ValueError, match="x4 image"):
        t(lr, torch.rand(1, 3, 24, 24))
    hr = torch.rand(2, 3, 24, 24)
    hr[1, 0, 3, 3] = float("inf")
    with pytest.raises(ValueError, match="hr contains 1 NaN/Inf"):
        t(lr, hr)
    with pytest.raises(ValueError, match="hr must have 3 channels"):
        t(lr, torch.rand(2, 1, 24, 24))


def test_validation_can_be_switched_off_for_speed():
    model = kdsr.KDSRStudent("tiny")
    model.validate_inputs = False
    out = model(torch.full((1, 3, 6, 6), float("nan")))
    assert torch.isnan(out).all()
    assert math.isclose(model.sr_net.receptive_radius, 13)
