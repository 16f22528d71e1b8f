"""Issue 22: calibration file, degradation estimate, --blur-sigma / --strength steering (shipped student)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import kdsr
from kdsr.cli import main
from kdsr.metrics import psnr
from kdsr.steering import CalibrationError, load_calibration, read_calibration, resolve_degradation
from kdsr.steering.calibrate import degrade_setting, fit_readout, sample_crops

SET14 = Path(__file__).resolve().parents[3] / "shared" / "data" / "Set14"
if not SET14.is_dir():
    SET14 = Path("/work/shared/data/Set14")
needs_set14 = pytest.mark.skipif(not SET14.is_dir(), reason="shared/data/Set14 not available")
CAL_FILE = Path(kdsr.__file__).parent / "weights" / "iso-x4-student.calibration.safetensors"


@pytest.fixture(scope="module")
def student():
    torch.set_num_threads(1)
    return kdsr.load("iso-x4-student")


@pytest.fixture(scope="module")
def set14_crops():
    """6 Set14 HR crops of 192 px (LR 48), seeded: held out from the B100 calibration."""
    hr, _ = sample_crops(SET14, 192, 1, seed=3)
    return hr[:6]


def test_shipped_calibration_is_found_and_matches(student):
    cal = load_calibration(student)
    assert cal.fingerprint == kdsr.steering.weights_fingerprint(student)
    p = cal.parameter("blur_sigma")
    assert (p.low, p.high) == (0.2, 4.0)
    assert cal.d_mean.shape == (20, student.n_feats) and cal.pooled.shape == (20, 4 * student.n_feats)
    assert cal.config["n_images"] == 100 and 0 < p.heldout_median_ae < 0.3


def test_calibration_roundtrip_is_atomic_and_honours_umask(tmp_path):
    cal = read_calibration(CAL_FILE)
    old = os.umask(0o027)
    try:
        path = cal.save(tmp_path / "c.calibration.safetensors")
    finally:
        os.umask(old)
    assert (path.stat().st_mode & 0o777) == 0o640
    assert not list(tmp_path.glob(".tmp-*"))
    again = read_calibration(path)
    for name in ("settings", "d_mean", "pooled", "coef", "intercept", "heldout_mae"):
        assert torch.equal(getattr(again, name), getattr(cal, name))
    assert again.parameters == cal.parameters and again.fingerprint == cal.fingerprint


def test_interpolation_is_linear_between_settings_and_refuses_outside():
    cal = read_calibration(CAL_FILE)
    values, rows = cal.curve("blur_sigma")
    i = 7
    exact = cal.interpolate("blur_sigma", float(values[i]))
    assert torch.allclose(exact[0], cal.pooled[rows[i]], atol=1e-12)
    a, b = float(values[i]), float(values[i + 1])
    mid = cal.interpolate("blur_sigma", a + 0.25 * (b - a), "d_mean")[0]
    expected = 0.75 * cal.d_mean[rows[i]] + 0.25 * cal.d_mean[rows[i + 1]]
    assert torch.allclose(mid, expected, atol=1e-12)
    with pytest.raises(CalibrationError, match="0.2-4"):
        cal.interpolate("blur_sigma", 4.5)


def test_readout_folds_standardisation_into_one_linear_map():
    rng = np.random.default_rng(0)
    d = rng.normal(size=(120, 8)) * rng.uniform(0.1, 5, size=8) + rng.normal(size=8)
    w, b = rng.normal(size=8), 1.7
    target = d @ w + b  # exactly linear: a near-unregularised ridge must give back w, b
    coef, intercept, heldout = fit_readout(d, target[:, None], np.repeat(np.arange(12), 10))
    np.testing.assert_allclose(d @ coef[0] + intercept[0], target, atol=1e-2)
    np.testing.assert_allclose(heldout[:, 0], target, atol=5e-2)


def test_foreign_calibration_is_refused(tmp_path):
    other = kdsr.load("tiny-iso-x4-student")
    with pytest.raises(CalibrationError, match="another model"):
        load_calibration(other, CAL_FILE)


@needs_set14
def test_estimate_error_on_held_out_set14(student, set14_crops):
    errors = []
    for sigma in (0.8, 2.0, 3.2):
        lr = degrade_setting(set14_crops, 4, sigma, seed=5)
        errors += [abs(kdsr.estimate_degradation(student, x).blur_sigma - sigma) for x in lr]
    assert float(np.median(errors)) <= 0.3, errors


@needs_set14
def test_blur_sigma_at_truth_beats_blind_and_two_steps_off_is_worse(student, set14_crops):
    hr = set14_crops[:4]
    gains, worse = [], []
    for sigma in (1.2, 2.8):
        lr = degrade_setting(hr, 4, sigma, seed=9)

        def score(s=None, lr=lr):
            d = None if s is None else resolve_degradation(student, lr[0], blur_sigma=s)
            return float(psnr(kdsr.upscale(student, lr, degradation=d), hr).mean())

        at_true = score(sigma)
        gains.append(at_true - score())
        worse += [score(sigma - 0.8) < at_true, score(sigma + 0.8) < at_true]
    assert np.mean(gains) >= 0, gains
    assert all(worse)


@needs_set14
def test_strength_moves_the_read_sigma_and_one_is_blind(student, set14_crops):
    lr = degrade_setting(set14_crops[:1], 4, 2.0, seed=2)[0]
    cal = load_calibration(student)
    assert resolve_degradation(student, lr, strength=1.0) is None
    own = float(cal.read(student.encode(lr[None])[0])[0, 0])
    read = [float(cal.read(resolve_degradation(student, lr, strength=x))[0, 0]) for x in (0.5, 1.5)]
    assert read[0] < own - 0.5 and read[1] > own + 0.5, (own, read)
    assert abs(read[0] - 0.5 * own) < 0.3 and abs(read[1] - 1.5 * own) < 0.3


def _write_png(path: Path, seed: int = 0) -> None:
    """A 24x28 LR PNG: a Set14 crop blurred with σ 1.6 (random smooth content without Set14)."""
    from PIL import Image

    if SET14.is_dir():
        hr = sample_crops(SET14, 112, 1, seed=seed)[0][:1, :, :96, :]
    else:
        g = torch.Generator().manual_seed(seed)
        hr = torch.nn.functional.interpolate(
            torch.rand(1, 3, 24, 28, generator=g), scale_factor=4, mode="bicubic"
        )
    lr = degrade_setting(hr.clamp(0, 1), 4, 1.6)[0]
    Image.fromarray((lr.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(path)


@needs_set14
def test_cli_strength_one_is_bit_identical_and_other_strengths_differ(tmp_path):
    _write_png(tmp_path / "a.png")
    outs = {}
    for name, extra in (("plain", []), ("one", ["--strength", "1"]), ("half", ["--strength", "0.5"])):
        args = ["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / name), "--tile", "0"]
        rc = main([*args, "--checkpoint", "iso-x4-student", "--no-progress", "--threads", "1", *extra])
        assert rc == 0
        outs[name] = (tmp_path / name / "a_x4.png").read_bytes()
    assert outs["one"] == outs["plain"]
    assert outs["half"] != outs["plain"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--blur-sigma", "5"], "outside the calibrated range 0.2-4"),
        (
            ["--blur-sigma", "1", "--calibration", "{cal}", "--checkpoint", "tiny-iso-x4-student"],
            "another model",
        ),
        (["--blur-sigma", "1", "--checkpoint", "{copy}"], "has no calibration"),
        (["--blur-sigma", "1", "--strength", "2"], "not both"),
    ],
)
def test_cli_steering_errors_are_one_line_exit_2(tmp_path, capsys, extra, message):
    _write_png(tmp_path / "a.png")
    copy = tmp_path / "copy.safetensors"
    kdsr.load("iso-x4-student").save(copy)
    extra = [e.format(cal=CAL_FILE, copy=copy) for e in extra]
    if "--checkpoint" not in extra:
        extra += ["--checkpoint", "iso-x4-student"]
    rc = main(["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "o"), "--no-progress", *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and len(err.splitlines()) == 1, err


def test_cli_inspect_json(tmp_path, capsys):
    _write_png(tmp_path / "a.png")
    assert main(["inspect", str(tmp_path), "--json", "--no-progress", "--threads", "1"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["image"].endswith("a.png")
    est = row["blur_sigma"]
    assert est["low"] == 0.2 and est["high"] == 4.0 and est["heldout_error"] > 0 and "in_range" in est
    assert main(["inspect", str(tmp_path / "a.png"), "--checkpoint", "iso-x4-teacher"]) == 2


def test_onnx_runner_steers_like_pytorch(tmp_path, student):
    pytest.importorskip("onnxruntime")
    from kdsr.deploy import OnnxStudent, export_onnx

    sr_file, _ = export_onnx(student, tmp_path / "s.onnx")
    read_calibration(CAL_FILE).save(tmp_path / "s.calibration.safetensors")
    onnx = OnnxStudent(sr_file, threads=1)
    g = torch.Generator().manual_seed(4)
    lr = torch.rand(1, 3, 20, 24, generator=g)
    want = kdsr.upscale(student, lr, degradation=resolve_degradation(student, lr, blur_sigma=2.3))
    got = onnx.upscale(lr, degradation=resolve_degradation(onnx, lr, blur_sigma=2.3))
    blind = onnx.upscale(lr)
    assert (got - want).abs().max() < 1e-4
    assert (got - blind).abs().max() > 1e-2
    with pytest.raises(ValueError, match="PyTorch model"):
        resolve_degradation(onnx, lr, strength=0.5)
