"""Issue-10 demonstration figure and table: tiny real-world student vs its GAN stage on real-world Set14.

Reads the eval JSONs that scripts/realworld_demo.sh writes (bicubic, student, GAN; PSNR/SSIM/ST-LPIPS on the
paired real-world Set14 benchmark) and writes docs/results/realworld/table.md, and draws one side-by-side PNG
(LR nearest x4, bicubic, student, GAN, HR) of a crop of one benchmark image to docs/realworld_gan_demo.png.

    python scripts/realworld_demo.py --bench runs/realworld_set14 --student S.pt --gan G.pt --image zebra
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import kdsr  # noqa: E402
from kdsr.data.io import read_image  # noqa: E402
from kdsr.degradations.resize import imresize  # noqa: E402

ROWS = (("bicubic", "Bicubic (MATLAB)"), ("student", "KDSR_S tiny, L1 + KD"), ("gan", "KDSR_S-GAN tiny"))


def table(results: Path) -> str:
    """Markdown table of the three eval JSONs in `results` (means over the 14 images)."""
    lines = ["| model | PSNR (Y) | SSIM (Y) | ST-LPIPS (lower is better) |", "|---|---|---|---|"]
    for key, label in ROWS:
        (res,) = json.loads((results / f"{key}.json").read_text())["results"].values()
        lines.append(f"| {label} | {res['psnr']:.3f} | {res['ssim']:.4f} | {res['st-lpips']:.4f} |")
    return "\n".join(lines) + "\n"


@torch.no_grad()
def figure(bench: Path, student: str, gan: str, image: str, box: tuple[int, int, int], out: Path) -> None:
    """LR (nearest), bicubic, student, GAN and HR crops side by side; box = (top, left, size) in HR pixels."""
    lr = read_image(bench / "LR" / f"{image}_realworld.png")[None]
    hr = read_image(bench / "HR" / f"{image}.png")
    scale = hr.shape[-1] // lr.shape[-1]
    views = {
        "LR (nearest)": F.interpolate(lr, scale_factor=scale, mode="nearest")[0],
        "Bicubic": imresize(lr[0].double(), scale).float().clamp(0, 1),
        "Student (L1 + KD)": kdsr.load(student).eval()(lr)[0].clamp(0, 1),
        "GAN stage": kdsr.load(gan).eval()(lr)[0].clamp(0, 1),
        "HR": hr,
    }
    top, left, size = box
    fig, axes = plt.subplots(1, len(views), figsize=(3 * len(views), 3.3))
    for ax, (title, img) in zip(axes, views.items(), strict=True):
        ax.imshow(
            img[:, top : top + size, left : left + size].permute(1, 2, 0).numpy(), interpolation="nearest"
        )
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bench", type=Path, required=True, help="kdsr degrade --realworld output folder")
    parser.add_argument(
        "--results", type=Path, default=Path("docs/results/realworld"), help="eval JSON folder"
    )
    parser.add_argument("--student", required=True, help="student checkpoint or weights")
    parser.add_argument("--gan", required=True, help="GAN-stage checkpoint or weights")
    parser.add_argument("--image", default="zebra", help="benchmark image name for the figure")
    parser.add_argument("--box", type=int, nargs=3, default=(120, 180, 128), metavar=("TOP", "LEFT", "SIZE"))
    parser.add_argument("-o", "--out", type=Path, default=Path("docs/realworld_gan_demo.png"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    md = table(args.results)
    (args.results / "table.md").write_text(md)
    print(md)
    figure(args.bench, args.student, args.gan, args.image, tuple(args.box), args.out)
    print(f"wrote {args.results / 'table.md'} and {args.out}")


if __name__ == "__main__":
    main()
