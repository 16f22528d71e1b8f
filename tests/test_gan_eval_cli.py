"""`kdsr eval --lpips` with a missing backbone file: one line, exit code 2, before any work."""

import subprocess
import sys


def test_lpips_missing_backbone_exits_2(tmp_path):
    missing = tmp_path / "vgg16.pth"
    proc = subprocess.run(
        [sys.executable, "-m", "kdsr", "eval", "--checkpoint", "bicubic", "--hr-dir", str(tmp_path),
         "--lpips", str(missing)],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "vgg16-397923af.pth" in proc.stderr
    assert "Traceback" not in proc.stderr
