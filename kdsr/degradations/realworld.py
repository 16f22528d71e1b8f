"""The Real-ESRGAN second-order degradation (spec kdsr.md §6b, ecosystem.md §1.4) with per-sample parameters.

    deg = RealWorldDegradation(scale=4)
    lr = deg(hr, generator=torch.Generator().manual_seed(0))        # (B,3,H,W) -> (B,3,H/4,W/4), 8-bit grid
    lr, params = deg(hr, generator=g, return_params=True)           # params: RealWorldParams (what was drawn)

All parameters are drawn first, batched, from ``generator`` (a fixed stream per batch size); the images are
then degraded one by one, because every sample has its own intermediate size (per-sample resize), which
Real-ESRGAN avoids by sharing the resize scale/mode across the batch.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass, field, fields

import kornia.enhance.jpeg as _kornia_jpeg
import torch
import torch.nn.functional as F
from kornia.enhance import jpeg_codec_differentiable

from .realworld_kernels import KernelParams, mixed_kernels, sample_final_sinc, sample_kernel_params
from .realworld_noise import gaussian_noise, poisson_noise

__all__ = ["RealWorldDegradation", "RealWorldParams", "StageParams", "filter2d", "jpeg"]

RESIZE_MODES = ("area", "bilinear", "bicubic")


def filter2d(img: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Per-sample depthwise filtering: reflect pad by k//2 (replicate if the image is too small), correlate.

    Args: img float (B, C, H, W); kernel (B, k, k) or (k, k). Returns img's shape.
    """
    b, c, h, w = img.shape
    if kernel.dim() == 2:
        kernel = kernel.expand(b, -1, -1)
    k = kernel.shape[-1]
    pad = k // 2
    mode = "reflect" if pad < min(h, w) else "replicate"
    x = F.pad(img, (pad, pad, pad, pad), mode=mode)
    weight = kernel.to(img).repeat_interleave(c, dim=0).unsqueeze(1)
    return F.conv2d(x.reshape(1, b * c, h + 2 * pad, w + 2 * pad), weight, groups=b * c).reshape(b, c, h, w)


_HARD_ROUNDING_LOCK = threading.Lock()


@contextmanager
def _hard_rounding():
    """Make kornia's codec round, floor and clip exactly (as libjpeg and DiffJPEG(differentiable=False)).

    kornia's ``jpeg_codec_differentiable`` keeps ``round(x) + (x - round(x))**3`` (and a soft floor / clip)
    in its forward pass, a milder codec: at q30 it behaves like libjpeg at about q41. The degradation runs
    without gradients, so the surrogates are swapped for the exact operations while the codec runs
    (kornia is pinned, see pyproject.toml; a lock keeps two threads from interleaving the swap).
    """
    names = (
        "_differentiable_polynomial_rounding",
        "_differentiable_polynomial_floor",
        "_differentiable_clipping",
    )
    exact = (
        torch.round,
        torch.floor,
        lambda input, min_val=None, max_val=None, scale=0.02: input.clamp(min_val, max_val),
    )
    with _HARD_ROUNDING_LOCK:
        saved = [getattr(_kornia_jpeg, name) for name in names]
        try:
            for name, fn in zip(names, exact, strict=True):
                setattr(_kornia_jpeg, name, fn)
            yield
        finally:
            for name, fn in zip(names, saved, strict=True):
                setattr(_kornia_jpeg, name, fn)


@torch.no_grad()
def jpeg(img: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """JPEG round trip (kornia's codec with exact rounding of the DCT coefficients); img clamped to [0, 1].

    Args: img float (B, 3, H, W); quality (B,) in [1, 100]. Returns img's shape and dtype. Not
    differentiable (the degradation needs no gradient); matches libjpeg's luma at the same quality.
    """
    q = quality.to(device=img.device, dtype=img.dtype).reshape(-1)
    with _hard_rounding():
        return jpeg_codec_differentiable(img.clamp(0, 1), q)


@dataclass
class StageParams:
    """One degradation stage's draws for a batch; every field is a (B,) CPU tensor.

    resize: 0 up, 1 down, 2 keep; resize_scale (1.0 for keep); resize_mode: index into RESIZE_MODES;
    gaussian: bool (else Poisson); noise_sigma (8-bit units); poisson_scale; gray: bool; jpeg_quality.
    """

    kernel: KernelParams
    blur: torch.Tensor
    resize: torch.Tensor
    resize_scale: torch.Tensor
    resize_mode: torch.Tensor
    gaussian: torch.Tensor
    noise_sigma: torch.Tensor
    poisson_scale: torch.Tensor
    gray: torch.Tensor
    jpeg_quality: torch.Tensor

    def record(self, i: int) -> dict:
        out = {"blur": bool(self.blur[i])}
        if out["blur"]:
            out["kernel"] = self.kernel.record(i)
        out["resize"] = ("up", "down", "keep")[int(self.resize[i])]
        out["resize_scale"] = float(self.resize_scale[i])
        out["resize_mode"] = RESIZE_MODES[int(self.resize_mode[i])]
        if bool(self.gaussian[i]):
            out["noise"] = {"type": "gaussian", "sigma": float(self.noise_sigma[i])}
        else:
            out["noise"] = {"type": "poisson", "scale": float(self.poisson_scale[i])}
        out["noise"]["gray"] = bool(self.gray[i])
        out["jpeg_quality"] = float(self.jpeg_quality[i])
        return out


@dataclass
class RealWorldParams:
    """What RealWorldDegradation drew for a batch: both stages, the final sinc and the final order.

    final_resize_mode: (B,) index into RESIZE_MODES; jpeg_first: (B,) bool (JPEG before resize + sinc).
    ``record(i)`` gives sample i as a JSON-ready dict (what ``kdsr degrade --realworld`` writes).
    """

    first: StageParams
    second: StageParams
    final_sinc: KernelParams
    final_resize_mode: torch.Tensor
    jpeg_first: torch.Tensor
    batch: int = field(default=0)

    def record(self, i: int) -> dict:
        return {
            "first": self.first.record(i),
            "second": self.second.record(i),
            "final_sinc": self.final_sinc.record(i),
            "final_resize_mode": RESIZE_MODES[int(self.final_resize_mode[i])],
            "order": "jpeg, resize+sinc" if bool(self.jpeg_first[i]) else "resize+sinc, jpeg",
        }


def _choice(n: int, probs, g) -> torch.Tensor:
    return torch.multinomial(torch.tensor(probs, dtype=torch.float64).expand(n, -1), 1, generator=g).reshape(
        -1
    )


def _uniform(n: int, bounds, g) -> torch.Tensor:
    lo, hi = bounds
    return lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)


@dataclass
class RealWorldDegradation:
    """Real-ESRGAN / KDSR-GAN second-order degradation; every field defaults to the published value.

    Call: ``deg(hr, generator=g)`` with hr float (B, 3, H, W) in [0, 1], H and W multiples of ``scale`` →
    lr (B, 3, H/scale, W/scale) on the 8-bit grid in [0, 1] (and the RealWorldParams if return_params).
    """

    scale: int = 4
    sinc_prob: float = 0.1
    blur_sigma: tuple[float, float] = (0.2, 3.0)
    betag_range: tuple[float, float] = (0.5, 4.0)
    betap_range: tuple[float, float] = (1.0, 2.0)
    resize_prob: tuple[float, float, float] = (0.2, 0.7, 0.1)
    resize_range: tuple[float, float] = (0.15, 1.5)
    gaussian_noise_prob: float = 0.5
    noise_range: tuple[float, float] = (1.0, 30.0)
    poisson_scale_range: tuple[float, float] = (0.05, 3.0)
    gray_noise_prob: float = 0.4
    jpeg_range: tuple[float, float] = (30.0, 95.0)
    second_blur_prob: float = 0.8
    sinc_prob2: float = 0.1
    blur_sigma2: tuple[float, float] = (0.2, 1.5)
    resize_prob2: tuple[float, float, float] = (0.3, 0.4, 0.3)
    resize_range2: tuple[float, float] = (0.3, 1.2)
    gaussian_noise_prob2: float = 0.5
    noise_range2: tuple[float, float] = (1.0, 25.0)
    poisson_scale_range2: tuple[float, float] = (0.05, 2.5)
    gray_noise_prob2: float = 0.4
    jpeg_range2: tuple[float, float] = (30.0, 95.0)
    final_sinc_prob: float = 0.8

    def __post_init__(self) -> None:
        if not isinstance(self.scale, int) or isinstance(self.scale, bool) or self.scale < 1:
            raise ValueError(f"RealWorldDegradation: scale must be a positive integer, got {self.scale!r}")
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):
                setattr(self, f.name, tuple(float(v) for v in value))

    def _stage(self, n: int, g, second: bool) -> StageParams:
        sfx = "2" if second else ""
        kernel = sample_kernel_params(
            n,
            generator=g,
            sinc_prob=getattr(self, "sinc_prob" + sfx),
            sigma_range=getattr(self, "blur_sigma" + sfx),
            betag_range=self.betag_range,
            betap_range=self.betap_range,
        )
        blur_u = torch.rand(n, generator=g, dtype=torch.float64)
        blur = blur_u < self.second_blur_prob if second else torch.ones(n, dtype=torch.bool)
        resize = _choice(n, getattr(self, "resize_prob" + sfx), g)
        lo, hi = getattr(self, "resize_range" + sfx)
        up, down = _uniform(n, (1.0, hi), g), _uniform(n, (lo, 1.0), g)
        scale = torch.where(resize == 0, up, torch.where(resize == 1, down, torch.ones_like(up)))
        return StageParams(
            kernel=kernel,
            blur=blur,
            resize=resize,
            resize_scale=scale,
            resize_mode=torch.randint(3, (n,), generator=g),
            gaussian=torch.rand(n, generator=g, dtype=torch.float64)
            < getattr(self, "gaussian_noise_prob" + sfx),
            noise_sigma=_uniform(n, getattr(self, "noise_range" + sfx), g),
            poisson_scale=_uniform(n, getattr(self, "poisson_scale_range" + sfx), g),
            gray=torch.rand(n, generator=g, dtype=torch.float64) < getattr(self, "gray_noise_prob" + sfx),
            jpeg_quality=_uniform(n, getattr(self, "jpeg_range" + sfx), g),
        )

    def sample(self, batch: int, generator: torch.Generator | None = None) -> RealWorldParams:
        """Draw every parameter for ``batch`` images (CPU tensors), in a fixed order from ``generator``."""
        g = generator if generator is None or generator.device.type == "cpu" else None
        if generator is not None and g is None:
            raise ValueError("RealWorldDegradation: the generator must be a CPU torch.Generator")
        return RealWorldParams(
            first=self._stage(batch, g, False),
            second=self._stage(batch, g, True),
            final_sinc=sample_final_sinc(batch, generator=g, prob=self.final_sinc_prob),
            final_resize_mode=torch.randint(3, (batch,), generator=g),
            jpeg_first=torch.rand(batch, generator=g, dtype=torch.float64) < 0.5,
            batch=batch,
        )

    @staticmethod
    def _resize(x: torch.Tensor, size: tuple[int, int], mode: int) -> torch.Tensor:
        name = RESIZE_MODES[mode]
        size = (max(1, size[0]), max(1, size[1]))
        if name == "area":
            return F.interpolate(x, size=size, mode="area")
        return F.interpolate(x, size=size, mode=name, align_corners=False)

    @staticmethod
    def _rescale(x: torch.Tensor, scale: float, mode: int) -> torch.Tensor:
        """The first-stage resize as the original: ``scale_factor=scale`` (output floor(h·s), and the
        sampling grid follows ``scale`` itself, not the rounded output size)."""
        name = RESIZE_MODES[mode]
        if min(int(x.shape[-2] * scale), int(x.shape[-1] * scale)) < 1:  # too small: keep one pixel
            return RealWorldDegradation._resize(x, (int(x.shape[-2] * scale), int(x.shape[-1] * scale)), mode)
        if name == "area":
            return F.interpolate(x, scale_factor=scale, mode="area")
        return F.interpolate(x, scale_factor=scale, mode=name, align_corners=False)

    @staticmethod
    def _noise(x: torch.Tensor, s: StageParams, i: slice, g) -> torch.Tensor:
        if bool(s.gaussian[i][0]):
            noise = gaussian_noise(x, s.noise_sigma[i], s.gray[i], g)
        else:
            noise = poisson_noise(x, s.poisson_scale[i], s.gray[i], g)
        return torch.clamp(x + noise, 0, 1)

    def _one(self, x: torch.Tensor, p: RealWorldParams, k1, k2, ks, i: int, g) -> torch.Tensor:
        h, w = x.shape[-2:]
        sl = slice(i, i + 1)
        s1, s2 = p.first, p.second
        x = filter2d(x, k1[sl])
        x = self._rescale(x, float(s1.resize_scale[i]), int(s1.resize_mode[i]))
        x = self._noise(x, s1, sl, g)
        x = jpeg(x, s1.jpeg_quality[sl])
        if bool(s2.blur[i]):
            x = filter2d(x, k2[sl])
        sc = float(s2.resize_scale[i])
        x = self._resize(x, (int(h / self.scale * sc), int(w / self.scale * sc)), int(s2.resize_mode[i]))
        x = self._noise(x, s2, sl, g)
        out_size = (h // self.scale, w // self.scale)
        mode = int(p.final_resize_mode[i])
        if bool(p.jpeg_first[i]):
            x = jpeg(x, s2.jpeg_quality[sl])
            x = filter2d(self._resize(x, out_size, mode), ks[sl])
        else:
            x = filter2d(self._resize(x, out_size, mode), ks[sl])
            x = jpeg(x, s2.jpeg_quality[sl])
        return x

    @torch.no_grad()
    def __call__(
        self, hr: torch.Tensor, generator: torch.Generator | None = None, return_params: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, RealWorldParams]:
        """Degrade hr float (B, 3, H, W) in [0, 1] → lr (B, 3, H/scale, W/scale) on the 8-bit grid."""
        if not isinstance(hr, torch.Tensor):
            raise TypeError(f"hr must be a torch.Tensor, got {type(hr).__name__}")
        if not hr.is_floating_point():
            raise TypeError(f"hr must be a float image in [0, 1], got dtype {hr.dtype}; use x.float() / 255")
        if hr.dim() != 4 or hr.shape[1] != 3:
            raise ValueError(f"hr must be an RGB batch (B, 3, H, W), got shape {tuple(hr.shape)}")
        h, w = hr.shape[-2:]
        if h % self.scale or w % self.scale:
            raise ValueError(
                f"hr height and width ({h}x{w}) must be multiples of the scale {self.scale}; crop the image"
            )
        p = self.sample(hr.shape[0], generator)
        k1 = mixed_kernels(p.first.kernel).to(hr)
        k2 = mixed_kernels(p.second.kernel).to(hr)
        ks = mixed_kernels(p.final_sinc).to(hr)
        g = generator
        lr = torch.cat([self._one(hr[i : i + 1], p, k1, k2, ks, i, g) for i in range(hr.shape[0])])
        lr = torch.clamp(torch.round(lr * 255.0), 0, 255) / 255.0
        return (lr, p) if return_params else lr
