"""Deterministic training batches through a torch DataLoader: item i is the whole batch of iteration i.

    source = ClassicBatches(dataset, degradation, batch=64, seed=1, rank=0, length=iters)
    loader = TrainLoader(source, workers=4, pin_memory=True)
    loader.start(begin=it0, end=iters)                 # one DataLoader iterator over iterations [it0, iters)
    lr, hr = source.finish(loader.get(it0), device)    # (64,3,64,64), (64,3,256,256) float32 on device
    loader.close()                                     # stops the worker processes

Randomness: sample j of iteration i on rank r draws everything it needs (image, crop position, flips, and the
classic degradation's kernel parameters, noise level and noise field; for real-world batches the GT crop, then
the whole Real-ESRGAN degradation of that sample) from its own CPU ``torch.Generator`` seeded by
``sample_seed(seed, i, r, j)``. What a batch shares (the kernel when ``degradation.per_sample`` is false;
the real-world paired crop and pair-queue shuffle) comes from a generator seeded by
``iteration_seed(seed, i, r)``.
No global RNG is read or reseeded, so a batch depends on (seed, iteration, rank) only: it is bit-identical for
any number of workers, in the training process or not, and after ``--resume``.

Workers only crop and draw (integer copies and RNG draws, exact in any process); ``finish`` runs in the
training process and does the floating-point work on the training device: the classic blur/bicubic/noise, or
the real-world degradation per sample (continuing that sample's generator, whose state the worker sends) and
the pair queue, which is sequential and stays in the training process (its state is checkpointed).
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from kdsr.degradations.pipeline import ClassicDegradation, degrade, quantize

from .dataset import HRImageDataset
from .io import samples_to_float
from .realworld import RealWorldBatches

__all__ = [
    "ClassicBatches",
    "IterationSampler",
    "RealWorldSource",
    "TrainLoader",
    "auto_workers",
    "iteration_seed",
    "sample_generator",
    "sample_seed",
]


def iteration_seed(seed: int, iteration: int, rank: int) -> int:
    """A 63-bit seed that depends on (seed, iteration, rank) only: the batch-level generator's."""
    words = np.random.SeedSequence([seed, iteration, rank]).generate_state(2, dtype=np.uint64)
    return int(words[0]) >> 1


def sample_seed(seed: int, iteration: int, rank: int, index: int) -> int:
    """A 63-bit seed that depends on (seed, iteration, rank, index in the batch) only."""
    words = np.random.SeedSequence([seed, iteration, rank, index]).generate_state(2, dtype=np.uint64)
    return int(words[0]) >> 1


def sample_generator(seed: int, iteration: int, rank: int, index: int) -> torch.Generator:
    """The CPU generator of sample ``index`` of ``iteration`` on ``rank``."""
    return torch.Generator().manual_seed(sample_seed(seed, iteration, rank, index))


def auto_workers(local_world_size: int | None = None) -> int:
    """`data.workers: auto`: 0 when a rank has at most 2 CPUs, else min(8, CPUs per rank - 1).

    CPUs: those this process may run on (sched_getaffinity), divided among the ranks on this machine
    (torchrun's LOCAL_WORLD_SIZE). One CPU is left for the training process itself.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS / Windows
        cpus = os.cpu_count() or 1
    if local_world_size is None:
        local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    per_rank = cpus // max(1, local_world_size)
    return 0 if per_rank <= 2 else min(8, per_rank - 1)


def _batch_buffer(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An empty batch tensor; in a DataLoader worker it lives in shared memory from the start, so sending it
    to the training process copies nothing more (what default_collate does for its batches)."""
    out = torch.empty(shape, dtype=dtype)
    return out.share_memory_() if get_worker_info() is not None else out


class IterationSampler(Sampler[int]):
    """Yields the iterations start, start + 1, ..., stop - 1 (set the bounds before each iter())."""

    def __init__(self, start: int = 0, stop: int = 0) -> None:
        self.start, self.stop = start, stop

    def __iter__(self):
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


class ClassicBatches(Dataset):
    """Item i: the CPU half of the classic batch of iteration i; ``finish`` degrades it on the device.

    Item: {"iteration": int, "hr": (b, 3, P, P) uint8 (uint16 when the folder has 16-bit images),
    "kernel": (b, k, k) float64 ((1, k, k) when the degradation is per batch), "noise": (b,) float64 noise
    levels (8-bit units), "field": (b, 3, P/s, P/s) float32 standard-normal noise (shape (0,) when
    degradation.noise is 0)}. Per-sample draw order: image index, crop (top, left, flips), kernel
    parameters, noise level, noise field.
    """

    def __init__(
        self,
        dataset: HRImageDataset,
        degradation: ClassicDegradation,
        batch: int,
        seed: int,
        rank: int = 0,
        length: int = 1,
    ) -> None:
        self.dataset, self.degradation = dataset, degradation
        self.batch, self.seed, self.rank, self.length = batch, seed, rank, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, iteration: int) -> dict[str, Any]:
        deg, b = self.degradation, self.batch
        lr_side = self.dataset.patch // deg.scale
        shared = None
        if not deg.per_sample:
            batch_g = torch.Generator().manual_seed(iteration_seed(self.seed, iteration, self.rank))
            shared = deg.sample(1, batch_g)
        p = self.dataset.patch
        hr = _batch_buffer((b, 3, p, p), self.dataset.dtype)
        kernels, levels, fields = [], [], []
        for j in range(b):
            g = sample_generator(self.seed, iteration, self.rank, j)
            index = int(torch.randint(len(self.dataset), (), generator=g))
            self.dataset.crop(index, g, out=hr[j])
            params = shared if shared is not None else deg.sample(1, g)
            if shared is None or j == 0:
                kernels.append(params["kernel"])
            levels.append(params["noise"][:1])
            if deg.noise[1] > 0:
                fields.append(torch.randn((3, lr_side, lr_side), generator=g, dtype=torch.float32))
        return {
            "iteration": iteration,
            "hr": hr,
            "kernel": torch.cat(kernels),
            "noise": torch.cat(levels),
            "field": torch.stack(fields) if fields else torch.zeros(0),
        }

    @torch.no_grad()
    def finish(self, item: dict[str, Any], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(lr (b,3,P/s,P/s), hr (b,3,P,P)) float32 on ``device``: blur -> bicubic ↓s -> + noise -> 8-bit.

        hr keeps the source depth (samples / 255 or / 65535); the LR is rounded to 8 bits (spec §6a).
        """
        hr = samples_to_float(item["hr"], torch.float32, device)
        kernel = item["kernel"].to(device, non_blocking=True).to(torch.float32)
        if kernel.shape[0] == 1:
            kernel = kernel[0]  # one kernel for the batch: the cheaper shared convolution
        lr = degrade(hr, kernel, self.degradation.scale, 0.0, quantize_output=False)
        if item["field"].numel():
            levels = item["noise"].to(device, non_blocking=True).to(torch.float32).reshape(-1, 1, 1, 1)
            lr = lr + item["field"].to(device, non_blocking=True) * (levels / 255.0)
        return quantize(lr), hr


class RealWorldSource(Dataset):
    """Item i: the GT crops of the real-world batch of iteration i and each sample's generator state.

    Item: {"iteration": int, "gt": (b, 3, crop, crop) uint8 (uint16 for 16-bit data), "states": (b, S) uint8
    generator states after the crop draws}. ``finish`` degrades each sample with its generator on the device,
    then takes the paired crop and goes through the pair queue with the batch generator
    (RealWorldBatches.pairs).
    """

    def __init__(self, batches: RealWorldBatches, seed: int, rank: int = 0, length: int = 1) -> None:
        self.batches, self.seed, self.rank, self.length = batches, seed, rank, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, iteration: int) -> dict[str, Any]:
        gens = [sample_generator(self.seed, iteration, self.rank, j) for j in range(self.batches.batch)]
        size = self.batches.crop_size
        gt = _batch_buffer((len(gens), 3, size, size), self.batches.store.dtype)
        for j, g in enumerate(gens):
            gt[j] = self.batches.gt_crop(g)
        return {"iteration": iteration, "gt": gt, "states": torch.stack([g.get_state() for g in gens])}

    def finish(self, item: dict[str, Any], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(lr, hr) float32 on ``device`` after the pair queue (see RealWorldBatches.pairs)."""
        gens = []
        for state in item["states"]:
            g = torch.Generator()
            g.set_state(state.clone())  # a tensor with its own storage (a row view crashed set_state)
            gens.append(g)
        batch_g = torch.Generator().manual_seed(iteration_seed(self.seed, item["iteration"], self.rank))
        return self.batches.pairs(item["gt"], gens, batch_g, device)


def _fork_context():
    """Forked workers share the decoded RAM cache pages (copy-on-write); spawn would copy the dataset."""
    if sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return None


class TrainLoader:
    """A DataLoader over the iterations of a batch source (ClassicBatches / RealWorldSource).

    ``workers`` processes (0: in this process), ``pin_memory`` for fast host-to-GPU copies, ``prefetch``
    batches queued per worker, persistent workers (they outlive one ``start`` for the next one). ``get(i)``
    returns the next item of the running iterator when it is positioned at i, and otherwise builds item i
    here, which gives the same result.
    """

    def __init__(self, source: Dataset, workers: int = 0, pin_memory: bool = False, prefetch: int = 2):
        self.source, self.workers, self.pin_memory, self.prefetch = source, workers, pin_memory, prefetch
        self.sampler = IterationSampler()
        self._loader: DataLoader | None = None
        self._iter = None
        self._next = self._end = 0

    def start(self, begin: int, end: int) -> None:
        """Start (or restart) the iterator at iteration ``begin``; it yields items up to ``end`` - 1."""
        self.sampler.start, self.sampler.stop = begin, end
        if self._loader is None:
            self._loader = DataLoader(
                self.source,
                batch_size=None,
                sampler=self.sampler,
                num_workers=self.workers,
                pin_memory=self.pin_memory,
                prefetch_factor=self.prefetch if self.workers else None,
                persistent_workers=self.workers > 0,
                multiprocessing_context=_fork_context() if self.workers else None,
                generator=torch.Generator().manual_seed(0),  # the workers' base seed: not the global RNG
            )
        self._iter = iter(self._loader)
        self._next, self._end = begin, end

    def get(self, iteration: int) -> dict[str, Any]:
        """Item ``iteration`` (a dict of CPU tensors, pinned when pin_memory)."""
        if self._iter is not None and iteration == self._next < self._end:
            item = next(self._iter)
            self._next += 1
            if int(item["iteration"]) != iteration:  # an internal error, never bad input
                raise RuntimeError(f"TrainLoader: got iteration {int(item['iteration'])}, wanted {iteration}")
            return item
        return self.source[iteration]

    def close(self) -> None:
        """Stop the worker processes (a later ``start`` starts new ones)."""
        shutdown = getattr(self._iter, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        self._iter = self._loader = None
