"""The shipped models: what each was trained on, its measured scores, when to use it, and the default per job.

    DEFAULT_MODEL                      # what `kdsr upscale` runs without --model / --checkpoint
    for m in CATALOG: print(m.name, m.trained_on, m.scores, m.use_for, parameter_count(m.name))

Scores are Y-channel PSNR (dB) / SSIM with a 4-pixel border at x4, as `kdsr eval` prints them:
"Gaussian8" is Set5 / Set14 blurred with the 8 isotropic test kernels (clean, synthetic); "real-world" is
Set14 degraded once per image by the Real-ESRGAN second-order pipeline (`kdsr degrade --realworld --seed 0`:
blur, resize, noise, JPEG -- the closest we have to camera photos), plus ST-LPIPS (lower is better). Sources:
kdsr/weights/README.md, docs/results/ (model_choice/: the cross-measurements that chose the default) and
docs/cli.md. Bicubic: Gaussian8 Set5 25.869 / 0.7301, Set14 24.298 / 0.6253; real-world 22.037 / 0.5271,
ST-LPIPS 0.677.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ShippedModel:
    """One file of kdsr/weights/: name (for `kdsr.load` / --model), role ("student": upscales from the LR
    image alone; "teacher": needs the HR image), what it was trained on, measured scores, when to use it."""

    name: str
    role: str
    trained_on: str
    scores: str
    use_for: str


CATALOG: tuple[ShippedModel, ...] = (
    ShippedModel(
        "tiny-realworld-x4-student",
        "student",
        "B100, Real-ESRGAN second-order degradation (blur, noise, JPEG), L1 + KD, 3,000 iterations",
        "real-world 22.136 / 0.5403, ST-LPIPS 0.694; Gaussian8 Set5 25.231 / 0.6996, Set14 23.830 / 0.5976",
        "camera photos, phone pictures, scans, web JPEGs: the default for `kdsr upscale`",
    ),
    ShippedModel(
        "tiny-realworld-x4-gan",
        "student",
        "the real-world student + 800 GAN iterations (perceptual ST-LPIPS + adversarial loss)",
        "real-world 22.005 / 0.5105, ST-LPIPS 0.544 (best); "
        "Gaussian8 Set5 25.495 / 0.6674, Set14 24.101 / 0.5862",
        "photos when sharper texture matters more than fidelity (shows a checkerboard pattern up close)",
    ),
    ShippedModel(
        "iso-x4-student",
        "student",
        "B100, isotropic Gaussian blur only (sigma 0.2-4.0, no noise, no JPEG), L1, 6,000 iterations",
        "Gaussian8 Set5 29.411 / 0.8261, Set14 26.713 / 0.7186; real-world 21.234 / 0.4791, ST-LPIPS 0.555",
        "clean images that are only blurred (synthetic blur, renders, benchmark LR sets); not for photos",
    ),
    ShippedModel(
        "tiny-iso-x4-student",
        "student",
        "B100, isotropic Gaussian blur only, L1 + KL KD, 1,000 iterations (the first demonstration)",
        "Gaussian8 Set5 27.22, Set14 25.25",
        "tests and quick demonstrations; iso-x4-student is better at the same size",
    ),
    ShippedModel(
        "iso-x4-teacher",
        "teacher",
        "B100, isotropic Gaussian blur only, L1, 4,000 iterations",
        "Gaussian8 Set5 29.155 / 0.8184, Set14 26.560 / 0.7222 (sees the HR image)",
        "`kdsr eval` upper bound and training students; cannot upscale (needs the HR image)",
    ),
    ShippedModel(
        "tiny-iso-x4-teacher",
        "teacher",
        "B100, isotropic Gaussian blur only, L1, 700 iterations",
        "see docs/reproduction.md",
        "the teacher of tiny-iso-x4-student; cannot upscale (needs the HR image)",
    ),
)

DEFAULT_MODEL = "tiny-realworld-x4-student"
DEFAULT_REASON = (
    "the default model is tiny-realworld-x4-student: on real-world-degraded Set14 (blur, noise, JPEG, as in "
    "camera photos) it scores 22.14 dB against 21.23 for iso-x4-student, the only shipped student that "
    "beats bicubic (22.04) there on PSNR and SSIM; use --model iso-x4-student for images that are only "
    "blurred, tiny-realworld-x4-gan for sharper texture (`kdsr models` lists all)"
)


def find(name: str) -> ShippedModel | None:
    """The catalog entry of a shipped name, or None."""
    return next((m for m in CATALOG if m.name == name), None)


def parameter_count(name: str) -> int:
    """Parameters in the shipped file `name` (its tensors' elements, read from the safetensors header)."""
    from safetensors import safe_open

    from kdsr.models.kdsr_model import SAFETENSORS_SUFFIX, WEIGHTS_DIR

    path = Path(WEIGHTS_DIR) / (name + SAFETENSORS_SUFFIX)
    total = 0
    with safe_open(str(path), framework="pt") as handle:
        for key in handle.keys():
            n = 1
            for size in handle.get_slice(key).get_shape():
                n *= size
            total += n
    return total


def scale_of(name: str) -> int:
    """The upscaling factor saved in the shipped file's metadata (its config)."""
    import json

    from safetensors import safe_open

    from kdsr.models.kdsr_model import SAFETENSORS_SUFFIX, WEIGHTS_DIR

    with safe_open(str(Path(WEIGHTS_DIR) / (name + SAFETENSORS_SUFFIX)), framework="pt") as handle:
        meta = handle.metadata() or {}
    for value in meta.values():
        try:
            config = json.loads(value)
        except (TypeError, ValueError):
            continue
        if isinstance(config, dict) and "scale" in config:
            return int(config["scale"])
    return 4
