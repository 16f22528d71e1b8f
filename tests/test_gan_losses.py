"""GAN BCE losses vs hand computations; VGG19 perceptual loss vs a hand-written pre-ReLU extraction."""

import math

import pytest
import torch
import torch.nn.functional as F

from kdsr.training.gan_losses import discriminator_fake_loss, discriminator_real_loss, generator_gan_loss
from kdsr.training.perceptual import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MissingWeightsError,
    PerceptualLoss,
    VGG19Features,
    build_vgg19_perceptual,
)


def _hand_bce(logits, target):
    vals = []
    for z in logits.flatten().tolist():
        p = 1.0 / (1.0 + math.exp(-z))
        vals.append(-(target * math.log(p) + (1 - target) * math.log(1 - p)))
    return sum(vals) / len(vals)


def test_gan_losses_match_hand_computation():
    torch.manual_seed(0)
    logits = torch.randn(2, 1, 3, 5, dtype=torch.float64) * 2
    assert generator_gan_loss(logits).item() == pytest.approx(_hand_bce(logits, 1.0), rel=1e-12)
    assert discriminator_real_loss(logits).item() == pytest.approx(_hand_bce(logits, 1.0), rel=1e-12)
    assert discriminator_fake_loss(logits).item() == pytest.approx(_hand_bce(logits, 0.0), rel=1e-12)
    assert generator_gan_loss(logits, weight=0.1).item() == pytest.approx(
        0.1 * _hand_bce(logits, 1.0), rel=1e-12
    )
    # a single known value: z = 0 gives log 2 for either label
    assert generator_gan_loss(torch.zeros(1, 1, 2, 2)).item() == pytest.approx(math.log(2), rel=1e-6)


def test_gan_loss_gradient():
    z = torch.randn(1, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    generator_gan_loss(z).backward()
    torch.testing.assert_close(z.grad, (torch.sigmoid(z.detach()) - 1) / z.numel())


# torchvision vgg19().features indices of the conv layers we read
_TV_INDEX = {"conv1_2": 2, "conv2_2": 7, "conv3_4": 16, "conv4_4": 25, "conv5_4": 34}
_CONVS = [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]
_POOL_AFTER = {2, 7, 16, 25}


def _hand_features(state, x):
    """Pre-ReLU conv outputs written out with F.conv2d on a torchvision-keyed state dict."""
    out = {}
    for i in _CONVS:
        pre = F.conv2d(x, state[f"features.{i}.weight"], state[f"features.{i}.bias"], padding=1)
        for name, idx in _TV_INDEX.items():
            if idx == i:
                out[name] = pre
        x = F.relu(pre)
        if i in _POOL_AFTER:
            x = F.max_pool2d(x, 2)
    return out


@pytest.fixture(scope="module")
def tv_file(tmp_path_factory):
    torch.manual_seed(3)
    feats = VGG19Features()
    state = {k: v.clone() for k, v in feats.state_dict().items()}
    state["classifier.0.weight"] = torch.randn(4, 4)  # torchvision files carry the classifier too
    path = tmp_path_factory.mktemp("vgg") / "vgg19-dcbb9e9d.pth"
    torch.save(state, path)
    return path, state


def test_features_are_pre_relu_and_match_torchvision_layout(tv_file):
    path, state = tv_file
    feats = VGG19Features()
    feats.load_torchvision(path)
    x = torch.randn(1, 3, 32, 32)
    ours, ref = feats(x), _hand_features(state, x)
    for name in _TV_INDEX:
        torch.testing.assert_close(ours[name], ref[name], rtol=1e-5, atol=1e-5)
    assert (ours["conv3_4"] < 0).any()  # pre-ReLU: negatives survive


def test_perceptual_loss_value_and_gradients(tv_file):
    path, state = tv_file
    loss = build_vgg19_perceptual(path)
    sr = torch.rand(2, 3, 32, 32, requires_grad=True)
    gt = torch.rand(2, 3, 32, 32)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    fs, fg = _hand_features(state, (sr.detach() - mean) / std), _hand_features(state, (gt - mean) / std)
    weights = {"conv1_2": 0.1, "conv2_2": 0.1, "conv3_4": 1.0, "conv4_4": 1.0, "conv5_4": 1.0}
    expect = sum(w * (fs[n] - fg[n]).abs().mean() for n, w in weights.items())
    value = loss(sr, gt)
    assert value.item() == pytest.approx(expect.item(), rel=1e-5)
    value.backward()
    assert sr.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss.parameters())
    assert loss(gt, gt).item() == 0.0


def test_missing_weights_message_names_the_file(tmp_path):
    with pytest.raises(MissingWeightsError, match=r"vgg19-dcbb9e9d\.pth.*download\.pytorch\.org"):
        build_vgg19_perceptual(tmp_path / "nope.pth")
    with pytest.raises(MissingWeightsError, match="loss.perceptual.weights is not set"):
        build_vgg19_perceptual(None)


def test_wrong_file_is_rejected(tmp_path):
    p = tmp_path / "x.pth"
    torch.save({"foo": torch.zeros(1)}, p)
    with pytest.raises(ValueError, match="not a torchvision VGG19 state dict"):
        build_vgg19_perceptual(p)


def test_perceptual_loss_stays_eval():
    loss = PerceptualLoss(VGG19Features(("conv1_2",)), {"conv1_2": 1.0})
    loss.train()
    assert not loss.net.training


def test_build_perceptual_never_falls_back(tmp_path):
    from kdsr.training.perceptual import build_perceptual

    with pytest.raises(MissingWeightsError, match="vgg19-dcbb9e9d.pth"):
        build_perceptual("vgg19", tmp_path / "absent.pth")  # no silent switch to stlpips-vgg16
    with pytest.raises(ValueError, match="unknown loss.perceptual.network"):
        build_perceptual("vgg16", None)
    with pytest.raises(ValueError, match="for network vgg19"):
        build_perceptual("stlpips-vgg16", tmp_path / "x.pth")
