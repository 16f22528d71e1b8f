"""The KDSR SR network (spec kdsr.md §3-4): IDR-DDC, IDR-DCRB and the upsampling network driven by D."""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn

import kdsr_kernels
from kdsr_kernels import reference

from .checks import _autocast_on
from .encoder import NEGATIVE_SLOPE, conv3x3

# DIV2K RGB mean used by EDSR/DASR/KDSR (rgb_range 1).
RGB_MEAN = (0.4488, 0.4371, 0.4040)
SUPPORTED_SCALES = (2, 3, 4)
KERNEL_SIZE = 3

# IDR-DDC execution modes: a kdsr_kernels backend name ("auto" = fastest usable) or PYTORCH, the plain grouped
# convolution + LeakyReLU the reference code uses, run by PyTorch's own autograd.
PYTORCH = "pytorch"


class MeanShift(nn.Conv2d):
    """Frozen 1x1 conv adding sign*RGB_MEAN (identity weights, std 1). Its 12 parameters have
    requires_grad=False but are counted, as the paper's parameter counts do.

    The reference's MeanShift weight is eye(3) / std, always diagonal, so it runs as the per-channel affine
    x * diag(weight) + bias (the same numbers as the 1x1 conv: the off-diagonal terms are exact zeros) and
    folds into a neighbouring conv (`ShiftedConv`). Loading a non-diagonal weight raises ValueError.
    """

    def __init__(self, sign: int):
        super().__init__(3, 3, kernel_size=1)
        with torch.no_grad():
            self.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            self.bias.copy_(sign * torch.tensor(RGB_MEAN))
        self.weight.requires_grad_(False)
        self.bias.requires_grad_(False)
        self.register_load_state_dict_post_hook(_check_diagonal)

    def scale(self) -> torch.Tensor:
        """(3,) the diagonal of the 1x1 weight: 1 / std per channel."""
        return torch.diagonal(self.weight.view(3, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 3, H, W) -> x * scale + bias per channel, same dtype and memory format."""
        return torch.addcmul(self.bias.view(1, 3, 1, 1), x, self.scale().view(1, 3, 1, 1))


def _check_diagonal(module: MeanShift, incompatible_keys) -> None:
    weight = module.weight.detach().view(3, 3)
    if weight.device.type != "meta" and bool((weight - torch.diag(torch.diagonal(weight))).any()):
        raise ValueError(
            "MeanShift weight must be diagonal (eye / std, as the reference's); got " + str(weight)
        )


class ShiftedConv(nn.Conv2d):
    """A 3x3 conv (the SR tail) that can absorb the MeanShift after it: `tail(x, add_mean)` ==
    add_mean(tail(x)) up to fp rounding, with no extra pass over the output (weights and bias rescaled by
    the shift's per-channel scale, its bias added to the conv's)."""

    def forward(self, x: torch.Tensor, shift: MeanShift | None = None) -> torch.Tensor:
        """x (B, Cin, H, W) -> (B, Cout, H, W); with `shift`, the shifted output."""
        if shift is None:
            return super().forward(x)
        if torch.onnx.is_in_onnx_export():  # the ONNX exporter needs a constant kernel shape: shift after
            return shift(super().forward(x))
        scale = shift.scale().to(self.weight.dtype)
        weight = self.weight * scale.view(-1, 1, 1, 1)
        return self._conv_forward(x, weight, torch.addcmul(shift.bias.to(self.bias.dtype), self.bias, scale))


class IDRDDC(nn.Module):
    """IDR-based depthwise dynamic convolution followed by the LeakyReLU(0.1) IDR-DCRB applies to it.

    Kernel generator: Linear(C, C, no bias) -> LeakyReLU(0.1) -> Linear(C, 9C, no bias), giving one 3x3
    kernel per sample and channel (channel-major, row-major taps). Execution: per-sample depthwise
    cross-correlation with zero padding, then LeakyReLU -- through `kdsr_kernels.idr_ddc` (any other mode)
    or a grouped `F.conv2d` + `F.leaky_relu` run by PyTorch autograd (mode "pytorch").
    """

    def __init__(self, n_feats: int, mode: str = "auto"):
        super().__init__()
        self.n_feats = n_feats
        self.kernel = nn.Sequential(
            nn.Linear(n_feats, n_feats, bias=False),
            nn.LeakyReLU(NEGATIVE_SLOPE),
            nn.Linear(n_feats, n_feats * KERNEL_SIZE * KERNEL_SIZE, bias=False),
        )
        self.mode = mode

    def forward(self, x: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W), d (B, C) -> LeakyReLU(dynamic_conv(x)) (B, C, H, W), x's dtype."""
        B, C, H, W = x.shape
        k = KERNEL_SIZE
        if _autocast_on(x.device.type):  # a custom op is not autocast: take conv's dtype
            x = x.to(torch.get_autocast_dtype(x.device.type))
        weight = self.kernel(d).to(x.dtype).view(B, C, k, k)
        if self.mode == PYTORCH:  # the grouped-conv formulation, differentiated by PyTorch's autograd
            out = reference.forward(x, weight, NEGATIVE_SLOPE)
        else:
            out = kdsr_kernels.idr_ddc(x, weight, negative_slope=NEGATIVE_SLOPE, backend=self.mode)
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            out = out.contiguous(memory_format=torch.channels_last)  # keep the layout the network runs in
        return out

    def extra_repr(self) -> str:
        return f"n_feats={self.n_feats}, kernel_size={KERNEL_SIZE}, mode={self.mode!r}"


class IDRDCRB(nn.Module):
    """IDR-DCRB: out = conv3x3(LeakyReLU(IDR_DDC(x, D))) + x (no activation after the add)."""

    def __init__(self, n_feats: int, mode: str = "auto"):
        super().__init__()
        self.ddc = IDRDDC(n_feats, mode)
        self.conv = conv3x3(n_feats, n_feats)

    def forward(self, x: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W), d (B, C) -> (B, C, H, W)."""
        return _add_residual(self.conv(self.ddc(x, d)), x)


def icnr_(conv: nn.Conv2d, factor: int) -> nn.Conv2d:
    """ICNR init (Aitken et al. 2017) of a conv feeding PixelShuffle(factor), in place: draw PyTorch's
    default init for C_out / factor² filters and give each one to all factor² sub-pixel positions, so the
    conv + shuffle starts as a nearest-neighbour upsampler (no checkerboard). Returns conv."""
    sub = nn.Conv2d(conv.in_channels, conv.out_channels // factor**2, conv.kernel_size, padding=conv.padding)
    with torch.no_grad():
        conv.weight.copy_(sub.weight.repeat_interleave(factor**2, dim=0))
        conv.bias.copy_(sub.bias.repeat_interleave(factor**2, dim=0))
    return conv


def _add_residual(out: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """out + residual, in place into `out` (a fresh conv output) when that keeps the result's dtype: no new
    buffer. Under autocast the conv output is low precision and the residual stream is not: add out of
    place, so the stream keeps its dtype (SRNetwork.forward's body_dtype)."""
    if out.dtype == torch.promote_types(out.dtype, residual.dtype) and out.shape == residual.shape:
        return out.add_(residual)
    return out + residual


class Upsampler(nn.Sequential):
    """conv(C -> r²C) + PixelShuffle(r) stages (x2: one, x4: two, x3: one with r = 3); no activations.

    On channels_last input each stage permutes its conv's output channels to (i, j, c) order, so the pixel
    shuffle copies runs of r*C contiguous values instead of single ones; same numbers as the NCHW path
    (the same products, summed in the same order), same parameters.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W) -> (B, C, rH, rW) per stage; keeps x's memory format."""
        if x.is_contiguous() or not x.is_contiguous(memory_format=torch.channels_last):
            return super().forward(x)
        for conv, shuffle in zip(self[::2], self[1::2], strict=True):
            x = _conv_pixel_shuffle_nhwc(x, conv, shuffle.upscale_factor)
        return x


def _conv_pixel_shuffle_nhwc(x: torch.Tensor, conv: nn.Conv2d, r: int) -> torch.Tensor:
    """PixelShuffle(r)(conv(x)) for channels_last x, as a channels_last tensor."""
    C = conv.out_channels // (r * r)
    weight = conv.weight.view(C, r * r, *conv.weight.shape[1:]).transpose(0, 1).reshape(conv.weight.shape)
    bias = conv.bias.view(C, r * r).t().reshape(-1)
    y = conv._conv_forward(x, weight, bias)  # (B, r*r*C, H, W) channels_last, channels in (i, j, c) order
    B, _, H, W = y.shape
    y = y.permute(0, 2, 3, 1).view(B, H, W, r, r, C).permute(0, 1, 3, 2, 4, 5)
    return y.reshape(B, H * r, W * r, C).permute(0, 3, 1, 2)


def make_upsampler(n_feats: int, scale: int) -> Upsampler:
    """x2: conv(C->4C)+PixelShuffle(2); x4: that twice; x3: conv(C->9C)+PixelShuffle(3). No activations.
    The convs start ICNR-initialised (icnr_)."""
    if scale not in SUPPORTED_SCALES:
        raise ValueError(f"scale must be one of {SUPPORTED_SCALES}, got {scale!r}")
    layers: list[nn.Module] = []
    if scale == 3:
        layers += [icnr_(conv3x3(n_feats, 9 * n_feats), 3), nn.PixelShuffle(3)]
    else:
        for _ in range(scale.bit_length() - 1):
            layers += [icnr_(conv3x3(n_feats, 4 * n_feats), 2), nn.PixelShuffle(2)]
    return Upsampler(*layers)


class SRNetwork(nn.Module):
    """The SR network G(LR, D) of KDSR.

    sub_mean -> head conv(3->C) -> n_blocks IDR-DCRBs (all fed D) -> conv(C->C) + head output (global
    residual) -> upsampler -> conv(C->3) -> add_mean. Input LR (B, 3, H, W) in [0, 1]; output
    (B, 3, sH, sW), not clamped.
    """

    def __init__(self, n_feats: int, n_blocks: int, scale: int, mode: str = "auto"):
        super().__init__()
        if n_feats < 1 or n_blocks < 1:
            raise ValueError(f"SRNetwork: n_feats and n_blocks must be >= 1, got {n_feats}, {n_blocks}")
        self.n_feats = n_feats
        self.n_blocks = n_blocks
        self.scale = scale
        self.sub_mean = MeanShift(-1)
        self.head = conv3x3(3, n_feats)
        self.blocks = nn.ModuleList(IDRDCRB(n_feats, mode) for _ in range(n_blocks))
        self.body_conv = conv3x3(n_feats, n_feats)
        self.upsample = make_upsampler(n_feats, scale)
        self.tail = ShiftedConv(n_feats, 3, kernel_size=3, padding=1)
        self.add_mean = MeanShift(+1)

    @property
    def receptive_radius(self) -> int:
        """An upper bound, in LR pixels, on how far an output pixel sees: one per 3x3 conv (upsampler convs
        run at higher resolution and see less, but count as one). Tiles with this much context are exact."""
        n_upsample_convs = sum(isinstance(m, nn.Conv2d) for m in self.upsample)
        return 1 + 2 * self.n_blocks + 1 + n_upsample_convs + 1

    def set_mode(self, mode: str) -> None:
        """Run every IDR-DDC with `mode`: a kdsr_kernels backend name ("auto", ...) or "pytorch"."""
        for block in self.blocks:
            block.ddc.mode = mode

    def forward(
        self, lr: torch.Tensor, d: torch.Tensor, body_dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """lr (B, 3, H, W), d (B, C) -> sr (B, 3, scale*H, scale*W).

        body_dtype (e.g. torch.bfloat16): run the IDR-DCRBs and the upsampler under autocast to that dtype;
        the residual stream, head, body conv and tail stay in the input's dtype (a fully bf16 network moves
        ~0.5% of 8-bit output values by more than one level on Set5; this keeps them all within one).
        """
        h = self.head(self.sub_mean(lr))
        x = h
        body = nullcontext() if body_dtype is None else torch.autocast(lr.device.type, dtype=body_dtype)
        with body:  # no autocast region at all by default (torch.export would wrap one in a sub-graph)
            for block in self.blocks:
                x = block(x, d)
        x = _add_residual(self.body_conv(x), h)
        if body_dtype is not None:
            with torch.autocast(lr.device.type, dtype=body_dtype):
                x = self.upsample(x)
            return self.tail(x.to(lr.dtype), self.add_mean)
        return self.tail(self.upsample(x), self.add_mean)
