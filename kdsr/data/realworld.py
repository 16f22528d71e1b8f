"""Real-world training batches as Real-ESRGAN builds them (spec kdsr.md §6b): GT crops → degrade → queue.

    batches = RealWorldBatches("DF2K/HR", scale=4, gt_size=256, batch=9)
    lr, hr = batches.next(generator=g, device=dev)     # (9,3,64,64), (9,3,256,256) float32 in [0, 1]
    ckpt["pair_queue"] = batches.queue.state_dict()    # the queue travels with the checkpoint

Per sample: random image, h-flip (p 0.5, no rotation), reflect-101 pad (bottom/right) or random crop to
crop_size×crop_size, then RealWorldDegradation of that sample. Then one paired random crop for the batch
(GT gt_size / LR gt_size/scale) is taken, and the pair goes through the training-pair queue.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F

from kdsr.degradations.realworld import RealWorldDegradation
from kdsr.degradations.realworld_targets import realworld_targets

from .cache import ImageStore, cache_mode, copy_samples, default_cache_dir
from .io import SAMPLE_DTYPES, list_images, samples_to_float

__all__ = ["PairQueue", "RealWorldBatches", "crop_or_pad"]


class PairQueue:
    """Real-ESRGAN's training-pair pool: fill with the first batches, then swap a shuffled batch out.

    While filling, a batch is stored and returned unchanged. Once full, the pool is permuted (from the
    caller's generator), its first ``b`` pairs are returned and replaced by the incoming batch. Pairs are
    stored as integer levels, so the pool is exact and small in a checkpoint: LR as uint8 (it is on the
    8-bit grid), GT as ``hr_dtype`` (uint8, or uint16 for 16-bit GT images, which are not on that grid).
    """

    def __init__(self, size: int, batch: int, hr_dtype: torch.dtype = torch.uint8) -> None:
        if not isinstance(size, int) or size < 1 or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"queue size and batch must be positive ints, got {size!r} and {batch!r}")
        if size % batch:
            raise ValueError(
                f"data.queue_size {size} must be a multiple of the per-rank batch {batch}; "
                f"use e.g. --set data.queue_size={max(batch, size - size % batch)}"
            )
        if hr_dtype not in SAMPLE_DTYPES:
            raise ValueError(f"hr_dtype must be torch.uint8 or torch.uint16, got {hr_dtype}")
        self.size, self.batch, self.hr_dtype = size, batch, hr_dtype
        self.lr: torch.Tensor | None = None
        self.hr: torch.Tensor | None = None
        self.aux: torch.Tensor | None = None  # per-pair float targets (RealWorldParams summaries), if pushed
        self.last_aux: torch.Tensor | None = None  # the aux rows of the pairs the last push_pop returned
        self.filled = 0

    @staticmethod
    def _levels(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """[0, 1] floats -> rounded levels of ``dtype`` (uint8: 0..255, uint16: 0..65535) on the CPU."""
        top = SAMPLE_DTYPES[dtype]
        return torch.round(x.detach().cpu() * top).clamp(0, top).to(dtype)

    def push_pop(
        self,
        lr: torch.Tensor,
        hr: torch.Tensor,
        generator: torch.Generator | None = None,
        aux: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store (lr, hr), float (b,3,h,w)/(b,3,H,W) on the queue's levels; return the pair to train on.

        ``aux`` (b, T) float32, optional, travels with its pairs (exactly); the rows that belong to the
        returned pairs are left in ``last_aux`` (None when no aux was pushed).
        """
        b = lr.shape[0]
        if b != self.batch:
            raise ValueError(f"PairQueue: batch {b} differs from the configured {self.batch}")
        if self.lr is None:
            self.lr = torch.zeros((self.size, *lr.shape[1:]), dtype=torch.uint8)
            self.hr = torch.zeros((self.size, *hr.shape[1:]), dtype=self.hr_dtype)
        aux = None if aux is None else aux.detach().to("cpu", torch.float32)
        if aux is not None and self.aux is None:
            self.aux = torch.zeros((self.size, aux.shape[1]), dtype=torch.float32)
        if self.filled < self.size:
            self.lr[self.filled : self.filled + b] = self._levels(lr, self.lr.dtype)
            self.hr[self.filled : self.filled + b] = self._levels(hr, self.hr.dtype)
            if aux is not None:
                self.aux[self.filled : self.filled + b] = aux
            self.filled += b
            self.last_aux = aux
            return lr, hr
        perm = torch.randperm(self.size, generator=generator)
        self.lr, self.hr = self.lr[perm], self.hr[perm]
        out_lr = samples_to_float(self.lr[:b], lr.dtype, lr.device)
        out_hr = samples_to_float(self.hr[:b], hr.dtype, hr.device)
        self.lr[:b], self.hr[:b] = self._levels(lr, self.lr.dtype), self._levels(hr, self.hr.dtype)
        self.last_aux = None
        if aux is not None:
            self.aux = self.aux[perm]
            self.last_aux = self.aux[:b].clone()
            self.aux[:b] = aux
        return out_lr, out_hr

    def state_dict(self) -> dict:
        """{"size", "batch", "filled", "lr", "hr"} (uint8 / uint16 CPU tensors or None): plain tensors, no
        pickling. A loaded queue keeps the dtypes it was saved with."""
        state = {"size": self.size, "batch": self.batch, "filled": self.filled, "lr": self.lr, "hr": self.hr}
        if self.aux is not None:
            state["aux"] = self.aux
        return state

    def load_state_dict(self, state: dict) -> None:
        if state["size"] != self.size or state["batch"] != self.batch:
            raise ValueError(
                f"checkpoint pair queue is size {state['size']} / batch {state['batch']}, the config says "
                f"{self.size} / {self.batch}; resume with the same data.queue_size and batch size"
            )
        self.filled, self.lr, self.hr = int(state["filled"]), state["lr"], state["hr"]
        self.aux = state.get("aux")  # absent in checkpoints written before the aux targets


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
    """Builds each real-world training batch from a folder of GT images; see the module docstring.

    ``cache``: how the decoded GT images are kept (kdsr.data.cache: "ram", the default, decodes all of them
    at construction; "disk" memory-maps .npy files in ``cache_dir``, default ``<folder>/.kdsr_cache``;
    "none" decodes on every access).
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        scale: int = 4,
        gt_size: int = 256,
        batch: int = 9,
        crop_size: int = 400,
        queue_size: int = 180,
        degradation: RealWorldDegradation | None = None,
        cache: bool | str = "ram",
        cache_dir: str | os.PathLike | None = None,
        progress: bool = True,
    ) -> None:
        if gt_size % scale or crop_size % scale or gt_size > crop_size:
            raise ValueError(
                f"gt_size {gt_size} and crop_size {crop_size} must be multiples of the scale {scale}, "
                "with gt_size <= crop_size"
            )
        self.files = list_images(folder)
        mode = cache_mode(cache)
        if mode == "disk" and cache_dir is None:
            cache_dir = default_cache_dir(folder)
        self.store = ImageStore(self.files, mode, cache_dir, progress=progress)
        self.files = self.store.files
        self.scale, self.gt_size, self.batch, self.crop_size = scale, gt_size, batch, crop_size
        self.degradation = degradation or RealWorldDegradation(scale=scale)
        self.queue = PairQueue(queue_size, batch, hr_dtype=self.store.dtype)

    def gt_crop(self, generator: torch.Generator | None) -> torch.Tensor:
        """(3, crop, crop) GT crop of ``store.dtype``: random image, h-flip p 0.5, then crop or pad
        (crop_or_pad).

        Draw order: image index, flip, top, left. Only the crop is copied out of the stored image (flips are
        numpy views: torch has no uint16 flip).
        """
        index = int(torch.randint(len(self.store), (), generator=generator))
        flip = bool(torch.rand((), generator=generator) < 0.5)
        img = self.store.array(index)
        _, h, w = img.shape
        size = self.crop_size
        out = torch.empty((3, size, size), dtype=self.store.dtype)
        if h < size or w < size:
            full = torch.from_numpy(np.array(img[:, :, ::-1] if flip else img))  # a writable copy
            copy_samples(out.numpy(), crop_or_pad(full, size, generator).numpy())
            return out
        top = int(torch.randint(0, h - size + 1, (), generator=generator))
        left = int(torch.randint(0, w - size + 1, (), generator=generator))
        if flip:  # the crop at `left` of the flipped image is the flipped crop at w - size - left
            left = w - size - left
        view = img[:, top : top + size, left : left + size]
        copy_samples(out.numpy(), view[:, :, ::-1] if flip else view)
        return out

    def pairs(
        self,
        gt_u8: torch.Tensor,
        generators: list[torch.Generator | None],
        batch_generator: torch.Generator | None,
        device: torch.device | str = "cpu",
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Degrade GT crops (b, 3, crop, crop) uint8 / uint16 sample by sample (sample j with
        ``generators[j]``), take one paired random crop and pass the queue (both with ``batch_generator``).

        Returns (lr (b,3,gt/scale,gt/scale), hr (b,3,gt,gt)) float32 on ``device``; the read-out targets
        (kdsr.degradations.realworld_targets) of the returned pairs are in ``queue.last_aux`` (b, 5).
        """
        gt = samples_to_float(gt_u8, torch.float32, device)
        degraded = [
            self.degradation(gt[j : j + 1], generator=g, return_params=True) for j, g in enumerate(generators)
        ]
        lq = torch.cat([lr for lr, _ in degraded])
        aux = None  # a stand-in degradation (tests) records no parameters
        if all(params is not None for _, params in degraded):
            aux = torch.from_numpy(
                np.concatenate([realworld_targets(params, self.degradation) for _, params in degraded])
            )
        p, s = self.gt_size // self.scale, self.scale
        top = int(torch.randint(0, lq.shape[-2] - p + 1, (), generator=batch_generator))
        left = int(torch.randint(0, lq.shape[-1] - p + 1, (), generator=batch_generator))
        lq = lq[..., top : top + p, left : left + p]
        gt = gt[..., top * s : (top + p) * s, left * s : (left + p) * s]
        return self.queue.push_pop(lq.contiguous(), gt.contiguous(), batch_generator, aux=aux)

    def next(
        self, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch with every draw from ``generator``: (lr (b,3,gt/scale,gt/scale), hr (b,3,gt,gt)).

        The trainer instead gives every sample its own generator (kdsr.data.loader.RealWorldSource).
        """
        gt = torch.stack([self.gt_crop(generator) for _ in range(self.batch)])
        return self.pairs(gt, [generator] * self.batch, generator, device)
