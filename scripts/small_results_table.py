"""Markdown results table of the classic KD studies (issues 12 and 21), from their `kdsr eval --json` files.

    python scripts/small_results_table.py docs/results/small

Reads <dir>/{bicubic,teacher}.json, <dir>/student_<kd>_s<seed>.json and, when present, <dir>/sigma_r2.json
({label: R²} from `kdsr tsne --readout-json`) and <dir>/dprime_distance.json ({label: {"kl", "l1"}} from
experiments/student_teacher_distance.py; label student_<kd>_s<seed> or <kd>_s<seed>). Rows with several seeds
show the mean and the spread (max - min over seeds); the gap columns compare with the no-KD student's mean,
with both spreads next to it.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

DATASETS = ("Set5", "Set14")
# The Δ column compares with this row's no-KD counterpart (default: "none").
BASELINE = {"kltorch": "nonetorch"}
LABELS = {  # row key -> label, in table order
    "teacher": "Teacher (sees HR)",
    "kl": "Student, KD = KL at τ = 0.15 (the paper)",
    "klt2": "Student, KD = KL at τ = 2.0 (ours)",
    "klwarm": "Student, KD = KL after a 500-it KD-only warm-up (ours)",
    "klstd": "Student, KD = KL on standardised D′ at τ = 1.0 (ours)",
    "l1": "Student, KD = L1",
    "l2": "Student, KD = L2",
    "none": "Student, no KD",
    "kltorch": "Student, KD = KL, PyTorch-default encoder init",
    "nonetorch": "Student, no KD, PyTorch-default encoder init",
    "shipped_student": "Shipped student (no KD, 6,000 it; iso-x4-student)",
    "bicubic": "Bicubic",
}


def collect(folder: Path) -> dict[str, list[tuple[str, dict]]]:
    """{model key: [(json stem, results by dataset), ...]} for every eval JSON in `folder`."""
    found: dict[str, list[tuple[str, dict]]] = {}
    for path in sorted(folder.glob("*.json")):
        match = re.fullmatch(r"student_(\w+?)_s(\d+)", path.stem)
        key = match.group(1) if match else path.stem
        if key not in LABELS:
            continue
        found.setdefault(key, []).append((path.stem, json.loads(path.read_text())["results"]))
    return found


def _lookup(by_label: dict, stem: str) -> dict | None:
    """by_label's entry for a JSON stem "student_<kd>_s<seed>", keyed by the stem or by "<kd>_s<seed>"."""
    return by_label.get(stem, by_label.get(stem.removeprefix("student_")))


def _cell(values: list[float], digits: int) -> str:
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {(max(values) - min(values)) / 2:.{digits}f} (n={len(values)})"


def table(folder: Path) -> str:
    """The Markdown table (PSNR, SSIM per dataset, gap to no-KD on Set14, σ-R²)."""
    found = collect(folder)
    r2_path = folder / "sigma_r2.json"
    r2 = json.loads(r2_path.read_text()) if r2_path.exists() else {}
    dist_path = folder / "dprime_distance.json"
    dist = json.loads(dist_path.read_text()) if dist_path.exists() else {}
    head = ["model"] + [f"{d} PSNR / SSIM" for d in DATASETS] + ["Set14 Δ vs no-KD (dB)", "σ-R² of D"]
    head += ["D′ to teacher: L1"] if dist else []
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for key in LABELS:
        if key not in found:
            continue
        runs = found[key]
        cells = [LABELS[key]]
        for d in DATASETS:
            cells.append(
                _cell([r[d]["psnr"] for _, r in runs], 3) + " / " + _cell([r[d]["ssim"] for _, r in runs], 4)
            )
        own = [r["Set14"]["psnr"] for _, r in runs]
        base = [res["Set14"]["psnr"] for _, res in found.get(BASELINE.get(key, "none"), [])]
        if base and key != "none":
            gap = sum(own) / len(own) - sum(base) / len(base)
            spreads = [(max(v) - min(v)) / 2 for v in (own, base) if len(v) > 1]
            noise = f" (seed ± {max(spreads):.3f})" if spreads else ""
            cells.append(f"{gap:+.3f}{noise}")
        else:
            cells.append("")
        scores = [r2[stem] for stem, _ in runs if stem in r2]
        cells.append(_cell(scores, 2) if scores else "")
        if dist:
            gaps = [_lookup(dist, stem)["l1"] for stem, _ in runs if _lookup(dist, stem)]
            cells.append(_cell(gaps, 3) if gaps else "")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        "± is half the range over seeds (n = number of seeds); Δ compares seed means with the no-KD student"
        " (the PyTorch-init KL row with the PyTorch-init no-KD row)."
    )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print("usage: python scripts/small_results_table.py <folder of eval JSONs>", file=sys.stderr)
        return 2
    print(table(Path(argv[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
