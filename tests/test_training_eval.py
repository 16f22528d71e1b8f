"""`kdsr eval` / evaluate_model against a float64 Y-PSNR oracle, and the `kdsr tsne` plot."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from test_training_support import TINY_MODEL, make_image_folder, save_tiny_teacher

import kdsr
from kdsr.cli import main
from kdsr.training.evaluate import evaluate_model


@pytest.fixture(scope="module")
def hr_dir(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("eval") / "hr", count=2, size=40, seed=4)


def _oracle_y_psnr(sr: torch.Tensor, hr: torch.Tensor, shave: int) -> float:
    """Spec §7 in float64 numpy: 8-bit levels, BT.601 Y in [16, 235], `shave` pixels off each side."""
    a = np.round(np.clip(sr.double().numpy(), 0, 1) * 255)
    b = np.round(np.clip(hr.double().numpy(), 0, 1) * 255)
    weights = np.array([65.481, 128.553, 24.966]) / 255.0
    ya = np.tensordot(weights, a, axes=(0, 0)) + 16
    yb = np.tensordot(weights, b, axes=(0, 0)) + 16
    diff = (ya - yb)[shave:-shave, shave:-shave]
    return float(10 * np.log10(255.0**2 / np.mean(diff**2)))


def test_bicubic_psnr_matches_a_float64_oracle(hr_dir):
    pairs = kdsr.data.benchmark_pairs(hr_dir, 4, kernels="gaussian8")
    result = evaluate_model("bicubic", pairs, scale=4)
    assert result["count"] == 2 * 8 and len(result["per_kernel"]) == 8
    for (name, lr, hr, _), row in zip(pairs, result["per_image"], strict=True):
        sr = kdsr.degradations.imresize(lr.double().unsqueeze(0), 4)[0]
        assert row["name"] == name
        # float32 SR vs float64 oracle differ only where a value sits on an 8-bit rounding boundary
        assert row["psnr"] == pytest.approx(_oracle_y_psnr(sr, hr, 4), abs=2e-3)
    assert result["psnr"] == pytest.approx(np.mean([r["psnr"] for r in result["per_image"]]), rel=1e-12)
    sigmas = sorted(float(k.split("=")[1]) for k in result["per_kernel"])
    assert sigmas == pytest.approx([1.8, 2.0, 2.2, 2.4, 2.6, 2.8, 3.0, 3.2])
    # more blur -> lower bicubic PSNR (the kernels really differ)
    assert result["per_kernel"]["sigma=1.8"]["psnr"] > result["per_kernel"]["sigma=3.2"]["psnr"]


def test_eval_cli_writes_json_for_a_student_and_a_teacher(hr_dir, tmp_path, capsys):
    teacher_path = save_tiny_teacher(tmp_path / "teacher.pt", seed=1)
    torch.manual_seed(2)
    student = kdsr.KDSRStudent.from_teacher(kdsr.load(teacher_path))
    student_path = student.save(tmp_path / "student.pt")
    for path in (student_path, teacher_path):
        out = tmp_path / f"{path.stem}.json"
        code = main(
            [
                "eval",
                "--checkpoint",
                str(path),
                "--hr-dir",
                str(hr_dir),
                "--kernels",
                "gaussian8",
                "--scale",
                "4",
                "--json",
                str(out),
                "--max-images",
                "1",
            ]
        )
        assert code == 0
        payload = json.loads(out.read_text())
        res = payload["results"]["hr"]
        assert res["count"] == 8 and len(res["per_image"]) == 8
        assert np.isfinite(res["psnr"]) and 0 < res["ssim"] <= 1
    assert "PSNR" in capsys.readouterr().out
    assert main(["eval", "--checkpoint", str(student_path), "--hr-dir", str(hr_dir), "--scale", "2"]) == 2
    # an unreadable checkpoint is an input error: exit 2
    assert main(["eval", "--checkpoint", "no-such-model", "--hr-dir", str(hr_dir)]) == 2


def test_tsne_cli_draws_one_panel_per_model(hr_dir, tmp_path):
    teacher_path = save_tiny_teacher(tmp_path / "teacher.pt", seed=1)
    torch.manual_seed(5)
    student_path = kdsr.KDSRStudent(
        "tiny", 4, **{k: TINY_MODEL[k] for k in ("n_feats", "n_blocks", "n_encoder_res")}
    ).save(tmp_path / "student.pt")
    out = tmp_path / "tsne.png"
    code = main(
        [
            "tsne",
            "--checkpoint",
            str(teacher_path),
            str(student_path),
            "--label",
            "T",
            "S",
            "--hr-dir",
            str(hr_dir),
            "-o",
            str(out),
            "--crops",
            "4",
            "--lr-patch",
            "8",
            "--sigmas",
            "1.8",
            "2.6",
            "3.2",
        ]
    )
    assert code == 0
    with Image.open(out) as img:
        width, height = img.size
    assert width > 1.5 * height  # two panels side by side


def test_sigma_r2_separates_informative_from_random_features():
    from kdsr.training.tsne import sigma_r2

    rng = np.random.default_rng(0)
    sigmas = np.repeat([1.8, 2.2, 2.6, 3.0], 20)
    informative = np.stack([sigmas + 0.05 * rng.standard_normal(80), rng.standard_normal(80)], axis=1)
    assert sigma_r2(informative, sigmas) > 0.95
    assert sigma_r2(rng.standard_normal((80, 2)), sigmas) < 0.2
