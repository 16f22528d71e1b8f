"""`kdsr degrade --realworld` (deterministic, params in the manifest) and `kdsr eval --lr-dir` paired mode."""

import json

from test_training_support import make_image_folder

from kdsr.cli import main
from kdsr.data import read_benchmark


def test_degrade_realworld_is_deterministic_and_eval_scores_pairs(tmp_path, capsys):
    hr = make_image_folder(tmp_path / "hr", count=2, size=66)  # 66 is modcropped to 64
    for out in ("a", "b"):
        assert (
            main(["degrade", "--hr-dir", str(hr), "--realworld", "--seed", "3", "-o", str(tmp_path / out)])
            == 0
        )
    a, b = read_benchmark(tmp_path / "a"), read_benchmark(tmp_path / "b")
    assert [p.name for p in a] == ["img0_realworld", "img1_realworld"]
    assert all(x.lr.equal(y.lr) for x, y in zip(a, b, strict=True)) and not a[0].lr.equal(a[1].lr)
    assert a[0].lr.shape == (3, 16, 16) and a[0].hr.shape == (3, 64, 64)
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    drawn = manifest["pairs"][0]["params"]["realworld"]
    assert drawn["first"]["kernel"]["type"] and 30 <= drawn["second"]["jpeg_quality"] <= 95
    capsys.readouterr()
    args = ["eval", "--checkpoint", "bicubic", "--lr-dir", str(tmp_path / "a" / "LR"), "--hr-dir", str(hr)]
    assert main(args) == 0
    assert "paired LR" in capsys.readouterr().out
    assert main([*args, "--scale", "3"]) == 2
    assert "not x3" in capsys.readouterr().err
