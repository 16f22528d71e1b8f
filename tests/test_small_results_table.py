"""scripts/small_results_table.py: the issue-12 table is built from eval JSONs with seed means and spreads."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "small_results_table.py"


def _load_table_module():
    spec = importlib.util.spec_from_file_location("small_results_table", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(folder: Path, stem: str, set5: float, set14: float) -> None:
    results = {"Set5": {"psnr": set5, "ssim": 0.8}, "Set14": {"psnr": set14, "ssim": 0.7}}
    (folder / f"{stem}.json").write_text(json.dumps({"results": results}))


def test_table_means_spreads_gaps_and_extra_rows(tmp_path: Path) -> None:
    _write(tmp_path, "bicubic", 25.0, 24.0)
    _write(tmp_path, "teacher", 28.0, 26.5)
    _write(tmp_path, "student_none_s1", 28.2, 26.30)
    _write(tmp_path, "student_none_s2", 28.4, 26.20)
    _write(tmp_path, "student_kl_s1", 28.1, 26.10)
    _write(tmp_path, "student_klt2_s1", 28.3, 26.40)
    _write(tmp_path, "student_nonetorch_s1", 28.0, 26.00)
    _write(tmp_path, "student_kltorch_s1", 28.0, 26.03)
    _write(tmp_path, "unrelated", 1.0, 1.0)
    (tmp_path / "sigma_r2.json").write_text(json.dumps({"teacher": 0.9, "student_none_s1": 0.6}))
    rows = {
        line.split(" | ")[0].lstrip("| "): line for line in _load_table_module().table(tmp_path).splitlines()
    }
    none = rows["Student, no KD"]
    assert "26.250 ± 0.050 (n=2)" in none and "28.300 ± 0.100 (n=2)" in none
    # 26.10 against the no-KD mean 26.25
    assert "-0.150 (seed ± 0.050)" in rows["Student, KD = KL at τ = 0.15 (the paper)"]
    assert "+0.150 (seed ± 0.050)" in rows["Student, KD = KL at τ = 2.0 (ours)"]
    assert "+0.030" in rows["Student, KD = KL, PyTorch-default encoder init"]  # against its own no-KD row
    assert "-0.250 (seed ± 0.050)" in rows["Student, no KD, PyTorch-default encoder init"]
    assert rows["Teacher (sees HR)"].rstrip(" |").endswith("0.90")
    assert not any("unrelated" in line or "1.000" in line for line in rows.values())
