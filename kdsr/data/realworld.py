"""Real-world training batches as Real-ESRGAN builds them (spec kdsr.md §6b): GT crops → degrade → queue.

    batches = RealWorldBatches("DF2K/HR", scale=4, gt_size=256, batch=9)
    lr, hr = batches.next(generator=g, device=dev)     # (9,3,64,64), (9,3,256,256) float32 in [0, 1]
    ckpt["pair_queue"] = batches.queue.state_dict()    # the queue travels with the checkpoint

Per sample: random image, h-flip (p 0.5, no rotation), reflect-101 pad (bottom/right) or random crop to
crop_size×crop_size. The batch is degraded by RealWorldDegradation, then one paired random crop
(GT gt_size / LR gt_size/scale) is taken, and the pair goes through the training-pair queue.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from kdsr.degradations.realworld import RealWorldDegradation

from .io import list_images, read_image_uint8

__all__ = ["PairQueue", "RealWorldBatches", "crop_or_pad"]


class PairQueue:
    """Real-ESRGAN's training-pair pool: fill with the first batches, then swap a shuffled batch out.

    While filling, a batch is stored and returned unchanged. Once full, the pool is permuted (from the
    caller's generator), its first ``b`` pairs are returned and replaced by the incoming batch. Pairs are
    stored as uint8 (both LR and GT are on the 8-bit grid), so the pool is exact and small in a checkpoint.
    """

    def __init__(self, size: int, batch: int) -> None:
        if not isinstance(size, int) or size < 1 or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"queue size and batch must be positive ints, got {size!r} and {batch!r}")
        if size % batch:
            raise ValueError(
                f"data.queue_size {size} must be a multiple of the per-rank batch {batch}; "
                f"use e.g. --set data.queue_size={max(batch, size - size % batch)}"
            )
        self.size, self.batch = size, batch
        self.lr: torch.Tensor | None = None
        self.hr: torch.Tensor | None = None
        self.filled = 0

    @staticmethod
    def _u8(x: torch.Tensor) -> torch.Tensor:
        return torch.round(x.detach().cpu() * 255).clamp(0, 255).to(torch.uint8)

    def push_pop(
        self, lr: torch.Tensor, hr: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store (lr, hr), float (b,3,h,w)/(b,3,H,W) on the 8-bit grid; return the pair to train on."""
        b = lr.shape[0]
        if b != self.batch:
            raise ValueError(f"PairQueue: batch {b} differs from the configured {self.batch}")
        if self.lr is None:
            self.lr = torch.zeros((self.size, *lr.shape[1:]), dtype=torch.uint8)
            self.hr = torch.zeros((self.size, *hr.shape[1:]), dtype=torch.uint8)
        if self.filled < self.size:
            self.lr[self.filled : self.filled + b] = self._u8(lr)
            self.hr[self.filled : self.filled + b] = self._u8(hr)
            self.filled += b
            return lr, hr
        perm = torch.randperm(self.size, generator=generator)
        self.lr, self.hr = self.lr[perm], self.hr[perm]
        out_lr = self.lr[:b].to(lr.device, lr.dtype) / 255
        out_hr = self.hr[:b].to(hr.device, hr.dtype) / 255
        self.lr[:b], self.hr[:b] = self._u8(lr), self._u8(hr)
        return out_lr, out_hr

    def state_dict(self) -> dict:
        """{"size", "batch", "filled", "lr", "hr"} (uint8 CPU tensors or None): plain tensors, no pickling."""
        return {"size": self.size, "batch": self.batch, "filled": self.filled, "lr": self.lr, "hr": self.hr}

    def load_state_dict(self, state: dict) -> None:
        if state["size"] != self.size or state["batch"] != self.batch:
            raise ValueError(
                f"checkpoint pair queue is size {state['size']} / batch {state['batch']}, the config says "
                f"{self.size} / {self.batch}; resume with the same data.queue_size and batch size"
            )
        self.filled, self.lr, self.hr = int(state["filled"]), state["lr"], state["hr"]


def crop_or_pad(img: torch.Tensor, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(3, H, W) -> (3, size, size): reflect-101 pad bottom/right where smaller, random crop where larger."""
    _, h, w = img.shape
    pad_h, pad_w = max(0, size - h), max(0, size - w)
    if pad_h or pad_w:
        x = img[None].float()
        while pad_h or pad_w:  # reflect padding needs pad < dim: grow in steps for tiny images
            ph, pw = min(pad_h, x.shape[-2] - 1), min(pad_w, x.shape[-1] - 1)
            x = F.pad(x, (0, pw, 0, ph), mode="reflect")
            pad_h, pad_w = pad_h - ph, pad_w - pw
        img = x[0].to(img.dtype)
    _, h, w = img.shape
    top = int(torch.randint(0, h - size + 1, (), generator=generator))
    left = int(torch.randint(0, w - size + 1, (), generator=generator))
    return img[:, top : top + size, left : left + size]


class RealWorldBatches:
    """Builds each real-world training batch from a folder of GT images; see the module docstring."""

    def __init__(
        self,
        folder: str | os.PathLike,
        scale: int = 4,
        gt_size: int = 256,
        batch: int = 9,
        crop_size: int = 400,
        queue_size: int = 180,
        degradation: RealWorldDegradation | None = None,
    ) -> None:
        if gt_size % scale or crop_size % scale or gt_size > crop_size:
            raise ValueError(
                f"gt_size {gt_size} and crop_size {crop_size} must be multiples of the scale {scale}, "
                "with gt_size <= crop_size"
            )
        self.files = list_images(folder)
        if not self.files:
            raise ValueError(f"no images in {folder}")
        self.images = [read_image_uint8(p) for p in self.files]
        self.scale, self.gt_size, self.batch, self.crop_size = scale, gt_size, batch, crop_size
        self.degradation = degradation or RealWorldDegradation(scale=scale)
        self.queue = PairQueue(queue_size, batch)

    def gt_crops(self, generator: torch.Generator | None) -> torch.Tensor:
        """(batch, 3, crop, crop) float32 GT crops: random image, h-flip p 0.5, crop or pad."""
        idx = torch.randint(len(self.images), (self.batch,), generator=generator).tolist()
        flips = (torch.rand(self.batch, generator=generator) < 0.5).tolist()
        crops = []
        for i, flip in zip(idx, flips, strict=True):
            img = self.images[i].flip(-1) if flip else self.images[i]
            crops.append(crop_or_pad(img, self.crop_size, generator))
        return torch.stack(crops).float() / 255

    def next(
        self, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(lr, hr) float32 on ``device``: lr (b,3,gt/scale,gt/scale), hr (b,3,gt,gt)."""
        gt = self.gt_crops(generator).to(device)
        lq = self.degradation(gt, generator=generator)
        p, s = self.gt_size // self.scale, self.scale
        top = int(torch.randint(0, lq.shape[-2] - p + 1, (), generator=generator))
        left = int(torch.randint(0, lq.shape[-1] - p + 1, (), generator=generator))
        lq = lq[..., top : top + p, left : left + p]
        gt = gt[..., top * s : (top + p) * s, left * s : (left + p) * s]
        return self.queue.push_pop(lq.contiguous(), gt.contiguous(), generator)
