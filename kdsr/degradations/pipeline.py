"""The classic degradation y = quantise((x ⊗ k)↓s + n) of spec §6a, batched on CPU or CUDA."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .kernels import anisotropic_gaussian_kernel, isotropic_gaussian_kernel
from .resize import imresize

__all__ = ["blur", "add_noise", "quantize", "degrade", "ClassicDegradation", "CLASSIC_KINDS"]

CLASSIC_KINDS = ("iso", "aniso")  # ClassicDegradation(kind=...): isotropic / anisotropic Gaussian blur


def _check_image(img: torch.Tensor, name: str = "hr") -> None:
    if not isinstance(img, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(img).__name__}")
    if not img.is_floating_point():
        raise TypeError(
            f"{name} must be a floating-point image in [0, 1], got dtype {img.dtype}; use x.float() / 255"
        )
    if img.dim() not in (3, 4):
        raise ValueError(f"{name} must be (B, C, H, W) or (C, H, W), got shape {tuple(img.shape)}")


def _batched(img: torch.Tensor) -> tuple[torch.Tensor, bool]:
    return (img, False) if img.dim() == 4 else (img.unsqueeze(0), True)


def _check_kernel(kernel: torch.Tensor, batch: int, height: int, width: int) -> torch.Tensor:
    if not isinstance(kernel, torch.Tensor):
        raise TypeError(f"kernel must be a torch.Tensor (k, k) or (B, k, k), got {type(kernel).__name__}")
    if not kernel.is_floating_point():
        raise TypeError(f"kernel must be floating point, got dtype {kernel.dtype}")
    if kernel.dim() not in (2, 3) or kernel.shape[-1] != kernel.shape[-2] or kernel.shape[-1] % 2 == 0:
        raise ValueError(
            f"kernel must be square with an odd side, (k, k) or (B, k, k), got {tuple(kernel.shape)}"
        )
    if kernel.dim() == 3 and kernel.shape[0] != batch:
        if kernel.shape[0] != 1:
            raise ValueError(f"kernel batch {kernel.shape[0]} does not match the image batch {batch}")
        kernel = kernel[0]
    k = kernel.shape[-1]
    if k > height or k > width:
        raise ValueError(
            f"kernel ({k}x{k}) is larger than the image ({height}x{width}); reflect padding needs an image "
            "at least as large as the kernel: use a larger crop or a smaller kernel"
        )
    return kernel


def _blur_conv(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    b, c, hp, wp = x.shape
    k = kernel.shape[-1]
    if kernel.dim() == 2:  # one kernel for the whole batch: every channel is an independent image
        out = F.conv2d(x.reshape(b * c, 1, hp, wp), kernel.reshape(1, 1, k, k))
    else:  # per-sample kernels: grouped (depthwise) conv over the flattened (B·C) channels
        weight = kernel.repeat_interleave(c, dim=0).unsqueeze(1)
        out = F.conv2d(x.reshape(1, b * c, hp, wp), weight, groups=b * c)
    return out.reshape(b, c, hp - k + 1, wp - k + 1)


def _blur_fft(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    hp, wp = x.shape[-2:]
    k = kernel.shape[-1]
    flipped = kernel.flip(-2, -1)  # correlation = convolution with the flipped kernel
    if flipped.dim() == 3:
        flipped = flipped[:, None]  # (B, 1, k, k) broadcasts over channels
    spectrum = torch.fft.rfft2(x, s=(hp, wp)) * torch.fft.rfft2(flipped, s=(hp, wp))
    return torch.fft.irfft2(spectrum, s=(hp, wp))[..., k - 1 :, k - 1 :]


def blur(img: torch.Tensor, kernel: torch.Tensor, method: str = "auto") -> torch.Tensor:
    """Blur each image with its own kernel: reflect padding, then cross-correlation (as the reference).

    The kernel is applied depthwise (the same kernel on R, G and B). A per-sample 21×21 kernel is one grouped
    convolution over the flattened B·C channels. ``kdsr_kernels.idr_ddc`` does the same operation for the
    network's dynamic convolutions but only for k <= 7 with zero 'same' padding, so it does not serve here.

    Args:
        img: float (B, C, H, W) or (C, H, W); H and W must be at least the kernel side.
        kernel: (k, k) shared by all images, or (B, k, k) one per image; k odd. Moved to img's device/dtype.
        method: "conv" (grouped conv), "fft" (the same linear filtering through FFTs of the padded image), or
            "auto": "fft" on CPU, where it is ~4× faster than the 21×21 conv in float32 and ~30× in float64,
            and "conv" on other devices. Both agree to float round-off.

    Returns:
        Tensor of img's shape, dtype and device.
    """
    _check_image(img, "img")
    x, squeeze = _batched(img)
    b, _, h, w = x.shape
    kernel = _check_kernel(kernel, b, h, w).to(device=x.device, dtype=x.dtype)
    if method == "auto":
        method = "fft" if x.device.type == "cpu" else "conv"
    if method not in ("conv", "fft"):
        raise ValueError(f"blur: method must be 'auto', 'conv' or 'fft', got {method!r}")
    pad = kernel.shape[-1] // 2
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    out = _blur_conv(padded, kernel) if method == "conv" else _blur_fft(padded, kernel)
    return out[0] if squeeze else out


def _noise_levels(noise_sigma, batch: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor | None:
    """Noise levels in 8-bit units as a (B, 1, 1, 1) tensor, or None when all are zero scalars."""
    if isinstance(noise_sigma, torch.Tensor):
        levels = noise_sigma.detach().to(device=device, dtype=dtype).reshape(-1)
        if levels.numel() not in (1, batch):
            raise ValueError(
                f"noise_sigma must be a scalar or have one value per image ({batch}), got {levels.numel()}"
            )
    else:
        if not isinstance(noise_sigma, (int, float)) or isinstance(noise_sigma, bool):
            raise TypeError(f"noise_sigma must be a number or a (B,) tensor, got {noise_sigma!r}")
        if noise_sigma == 0:
            return None
        levels = torch.full((1,), float(noise_sigma), device=device, dtype=dtype)
    if not bool(torch.isfinite(levels).all()) or bool((levels < 0).any()):
        raise ValueError(f"noise_sigma must be finite and >= 0 (in 0..255 pixel levels), got {noise_sigma!r}")
    return levels.reshape(-1, 1, 1, 1)


def add_noise(
    img: torch.Tensor, noise_sigma: float | torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Add white Gaussian noise, independent per pixel and channel, of std ``noise_sigma / 255``.

    Args:
        img: float (B, C, H, W) or (C, H, W).
        noise_sigma: level in 8-bit pixel units (e.g. 10), a float or a (B,) tensor (one level per image).
        generator: drawn from on its own device (then moved), so a CPU generator gives the same noise for CPU
            and CUDA images. None uses the global RNG of img's device.

    Returns:
        img + noise, not clamped.
    """
    _check_image(img, "img")
    x, squeeze = _batched(img)
    levels = _noise_levels(noise_sigma, x.shape[0], x.device, x.dtype)
    if levels is None:
        return img.clone()
    device = generator.device if generator is not None else x.device
    field = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)
    out = x + field * (levels / 255.0)
    return out[0] if squeeze else out


def quantize(img: torch.Tensor) -> torch.Tensor:
    """Round to the 256 levels of an 8-bit image: clamp(round(x·255), 0, 255) / 255 (same dtype)."""
    return (img * 255.0).round().clamp_(0.0, 255.0).div_(255.0)


def degrade(
    hr: torch.Tensor,
    kernel: torch.Tensor | None,
    scale: int = 4,
    noise_sigma: float | torch.Tensor = 0.0,
    generator: torch.Generator | None = None,
    *,
    quantize_output: bool = True,
    blur_method: str = "auto",
) -> torch.Tensor:
    """Classic degradation: blur (reflect pad) -> MATLAB bicubic ↓scale -> Gaussian noise -> 8-bit quantise.

    Args:
        hr: float (B, 3, H, W) or (3, H, W) in [0, 1], H and W multiples of ``scale`` (modcrop first).
            Computed in hr's dtype: use float64 for bit-stable benchmark sets, float32 for training.
        kernel: (k, k) for all images, (B, k, k) one per image, or None for no blur (bicubic only).
        scale: integer downscaling factor.
        noise_sigma: noise std in 8-bit levels (0..255 units), a float or a (B,) tensor.
        generator: RNG for the noise (see add_noise).
        quantize_output: round the LR to 8-bit levels (the reference always does).
        blur_method: see blur().

    Returns:
        LR (B, 3, H/scale, W/scale) or (3, H/scale, W/scale), same dtype and device as hr.
    """
    _check_image(hr, "hr")
    if not isinstance(scale, int) or isinstance(scale, bool) or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    h, w = hr.shape[-2:]
    if h % scale or w % scale:
        raise ValueError(
            f"HR size {h}x{w} is not a multiple of scale {scale}; crop it first (kdsr.data.modcrop)"
        )
    x = hr if hr.dtype in (torch.float32, torch.float64) else hr.float()  # half: compute in float32
    if kernel is not None:
        x = blur(x, kernel, method=blur_method)
    if scale > 1:
        x = imresize(x, size=(h // scale, w // scale))
    x = add_noise(x, noise_sigma, generator)
    return (quantize(x) if quantize_output else x).to(hr.dtype)


def _range(value, name: str, *, minimum: float, strict: bool) -> tuple[float, float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        lo = hi = float(value)
    elif isinstance(value, Sequence) and len(value) == 2:
        lo, hi = (float(v) for v in value)
    else:
        raise TypeError(f"{name} must be a number or a (low, high) pair, got {value!r}")
    bad_low = lo <= minimum if strict else lo < minimum
    if not (math.isfinite(lo) and math.isfinite(hi)) or bad_low or hi < lo:
        bound = f"low {'>' if strict else '>='} {minimum:g} and " if math.isfinite(minimum) else ""
        raise ValueError(f"{name} must be finite with {bound}low <= high, got {value!r}")
    return lo, hi


class ClassicDegradation:
    """Random classic degradations for training: a Gaussian kernel and noise level per sample (or batch).

    ``kind="iso"``: σ ~ U(sigma). ``kind="aniso"``: λ1, λ2 ~ U(lambdas) independently, θ ~ U(theta) radians.
    Noise level ~ U(noise) in 8-bit units; ``noise=None`` means the paper's setting for the kind: 0 for iso
    (Table 1) and (0, 25) for aniso (Table 2). Any range may be a single number to fix it.

    ``per_sample=True`` (default) draws a kernel and a noise level for every image, as DASR and KDSR's own
    ``utils/util.py`` do: every optimisation step then sees the whole degradation range, and an encoder
    trained to tell degradations apart gets contrasting samples within each batch. ``per_sample=False``
    reproduces the reference training code's quirk (spec §9.1): one draw shared by the whole batch.

    Usage::

        d = ClassicDegradation(scale=4, kind="iso")
        lr, params = d(hr_batch, generator=g)   # hr (B, 3, H, W) float in [0, 1] on any device

    ``params`` holds (B,) float32 tensors on hr's device: "sigma" (iso) or "lambda1", "lambda2", "theta"
    (aniso, radians), "noise" (8-bit units), plus "kernel" (B, k, k) and "kind".
    """

    def __init__(
        self,
        scale: int = 4,
        kind: str = "iso",
        sigma: float | tuple[float, float] = (0.2, 4.0),
        lambdas: float | tuple[float, float] = (0.2, 4.0),
        theta: float | tuple[float, float] = (0.0, math.pi),
        noise: float | tuple[float, float] | None = None,
        per_sample: bool = True,
        kernel_size: int = 21,
    ) -> None:
        if kind not in CLASSIC_KINDS:
            raise ValueError(f"kind must be 'iso' or 'aniso', got {kind!r}")
        if not isinstance(scale, int) or isinstance(scale, bool) or scale < 1:
            raise ValueError(f"scale must be a positive integer, got {scale!r}")
        if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size!r}")
        self.scale = scale
        self.kind = kind
        self.sigma = _range(sigma, "sigma", minimum=0.0, strict=True)
        self.lambdas = _range(lambdas, "lambdas", minimum=0.0, strict=True)
        self.theta = _range(theta, "theta", minimum=-math.inf, strict=False)
        if noise is None:
            noise = 0.0 if kind == "iso" else (0.0, 25.0)
        self.noise = _range(noise, "noise", minimum=0.0, strict=False)
        self.per_sample = bool(per_sample)
        self.kernel_size = kernel_size

    def __repr__(self) -> str:
        shape = f"sigma={self.sigma}" if self.kind == "iso" else f"lambdas={self.lambdas}, theta={self.theta}"
        return (
            f"ClassicDegradation(scale={self.scale}, kind={self.kind!r}, {shape}, noise={self.noise}, "
            f"per_sample={self.per_sample}, kernel_size={self.kernel_size})"
        )

    def sample(
        self, batch: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
    ) -> dict:
        """Draw the parameters (and kernels) for ``batch`` images; see the class docstring for the keys."""
        n = batch if self.per_sample else 1
        gen_device = generator.device if generator is not None else torch.device(device)

        def uniform(bounds: tuple[float, float]) -> torch.Tensor:
            u = torch.rand(n, generator=generator, device=gen_device, dtype=torch.float64).to(device)
            return (bounds[0] + (bounds[1] - bounds[0]) * u).expand(batch)

        if self.kind == "iso":
            params = {"kind": "iso", "sigma": uniform(self.sigma)}
            kernel = isotropic_gaussian_kernel(params["sigma"], self.kernel_size)
        else:
            params = {
                "kind": "aniso",
                "lambda1": uniform(self.lambdas),
                "lambda2": uniform(self.lambdas),
                "theta": uniform(self.theta),
            }
            kernel = anisotropic_gaussian_kernel(
                params["lambda1"], params["lambda2"], params["theta"], self.kernel_size
            )
        params["noise"] = uniform(self.noise)
        params["kernel"] = kernel
        return params

    @torch.no_grad()
    def __call__(
        self, hr: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict]:
        """Degrade a batch hr, float (B, 3, H, W) in [0, 1], H and W multiples of scale -> (lr, params)."""
        _check_image(hr, "hr")
        if hr.dim() != 4:
            raise ValueError(f"ClassicDegradation expects a batch (B, C, H, W), got shape {tuple(hr.shape)}")
        params = self.sample(hr.shape[0], generator, hr.device)
        kernel = params["kernel"] if self.per_sample else params["kernel"][0]
        noise = params["noise"] if self.noise[1] > 0 else 0.0
        lr = degrade(hr, kernel.to(hr.dtype), self.scale, noise, generator)
        params = {k: (v.to(torch.float32) if isinstance(v, torch.Tensor) else v) for k, v in params.items()}
        return lr, params
