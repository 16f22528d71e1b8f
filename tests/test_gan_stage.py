"""GAN stage: a few iterations (small VGG19 slice, offline ST-LPIPS net), bit-identical resume, V2."""

import copy
import importlib.util
import io

import pytest
import torch

import kdsr
from kdsr.training.checkpoint import capture_rng_state, restore_rng_state
from kdsr.training.gan_stage import GANSettings, GANStage
from kdsr.training.perceptual import PerceptualLoss, VGG19Features

SCALE = 4


def _batch_for(iteration):
    g = torch.Generator().manual_seed(1000 + iteration)
    hr = torch.rand(2, 3, 32, 32, generator=g)
    lr = torch.nn.functional.avg_pool2d(hr, SCALE) + 0.01 * torch.randn(2, 3, 8, 8, generator=g)
    return lr.clamp(0, 1), hr


def _models():
    torch.manual_seed(0)
    teacher = kdsr.KDSRTeacher("tiny", scale=SCALE, n_blocks=1)
    student = kdsr.KDSRStudent.from_teacher(teacher)
    return student, teacher


def _stage(perceptual, teacher_hr=None):
    student, teacher = _models()
    torch.manual_seed(1)
    return GANStage(
        student, teacher, perceptual, _batch_for, GANSettings(d_num_feat=8), teacher_hr=teacher_hr
    )


def _small_vgg():
    torch.manual_seed(2)
    return PerceptualLoss(VGG19Features(("conv1_2", "conv2_2")), {"conv1_2": 0.1, "conv2_2": 0.1})


def _flat(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def _assert_equal(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_equal(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_equal(x, y)
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    else:
        assert a == b


def test_few_iterations_train_g_and_d():
    stage = _stage(_small_vgg())
    g0 = copy.deepcopy(stage.student.state_dict())
    d0 = copy.deepcopy(stage.disc.state_dict())
    teacher0 = copy.deepcopy(stage.teacher.state_dict())
    for it in range(2):
        stats = stage.step(it)
    assert all(torch.isfinite(torch.tensor(v)) for v in stats.values())
    assert stats["d_real"] > 0 and stats["d_fake"] > 0 and stats["percep"] > 0
    assert any(not torch.equal(g0[k], v) for k, v in stage.student.state_dict().items())
    assert any(not torch.equal(d0[k], v) for k, v in stage.disc.state_dict().items())
    _assert_equal(teacher0, stage.teacher.state_dict())  # frozen
    assert stage.opt_g.param_groups[0]["lr"] == 1e-4 and stage.opt_g.param_groups[0]["betas"] == (0.9, 0.99)
    assert stage.opt_d.param_groups[0]["lr"] == 1e-4 and stage.opt_d.param_groups[0]["betas"] == (0.9, 0.99)


def test_resume_is_bit_identical():
    straight = _stage(_small_vgg())
    for it in range(3):
        straight.step(it)

    first = _stage(_small_vgg())
    first.step(0)
    saved = _flat({"stage": first.state(), "rng": capture_rng_state()})
    torch.manual_seed(12345)  # disturb the RNG: the resume must restore it
    resumed = _stage(_small_vgg())
    resumed.load_state(saved["stage"])
    restore_rng_state(saved["rng"])
    for it in (1, 2):
        resumed.step(it)
    _assert_equal(_flat(straight.state()), _flat(resumed.state()))


def test_v2_teacher_sees_sharpened_gt_losses_use_plain_gt():
    seen = []

    def sharpen(hr):
        seen.append(hr.clone())
        return (hr * 1.5 - 0.25).clamp(0, 1)

    targets = []

    def perceptual(sr, gt):
        targets.append(gt.clone())
        return (sr - gt).abs().mean()

    stage = _stage(perceptual, teacher_hr=sharpen)
    stage.step(0)
    _, hr = _batch_for(0)
    assert len(seen) == 1 and torch.equal(seen[0], hr)
    assert torch.equal(targets[0], hr)  # the loss target is the plain GT


@pytest.mark.skipif(
    importlib.util.find_spec("stlpips_pytorch") is None,
    reason='needs the [gan] extra: pip install --no-deps stlpips-pytorch==0.0.2 (or pip install -e ".[gan]")',
)
def test_offline_network_iteration():
    from kdsr.metrics.stlpips_net import STLPIPSVGG16

    net = STLPIPSVGG16()
    stage = _stage(lambda sr, gt: net(sr, gt).mean())
    stats = stage.step(0)
    assert stats["percep"] > 0
