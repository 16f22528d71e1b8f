"""Print a Markdown table (Set5 / Set14 PSNR and SSIM) from `kdsr eval --json` files.

python docs/make_results_table.py "Bicubic=docs/results/tiny_iso_x4_bicubic.json" "KL=docs/results/...json"
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def table(rows: list[tuple[str, Path]], datasets: tuple[str, ...] = ("Set5", "Set14")) -> str:
    """Markdown table with one row per (label, json path) and a PSNR / SSIM cell per dataset."""
    lines = ["| model | " + " | ".join(f"{d} PSNR / SSIM" for d in datasets) + " |"]
    lines.append("|---" * (len(datasets) + 1) + "|")
    for label, path in rows:
        results = json.loads(Path(path).read_text())["results"]
        cells = [f"{results[d]['psnr']:.3f} / {results[d]['ssim']:.4f}" for d in datasets]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    rows = [tuple(arg.rsplit("=", 1)) for arg in argv]  # labels may contain "="
    print(table([(label, Path(path)) for label, path in rows]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
