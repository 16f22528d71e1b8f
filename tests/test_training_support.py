"""Helpers shared by the test_training*.py files (no tests here): tiny image folders, configs, models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

# The smallest KDSR that still has every part: 8 features, 1 IDR-DCRB, 1 encoder res-block.
TINY_MODEL = {"variant": "tiny", "scale": 4, "n_feats": 8, "n_blocks": 1, "n_encoder_res": 1}


def make_image_folder(folder: Path, count: int = 3, size: int = 48, seed: int = 0) -> Path:
    """Write `count` smooth random RGB PNGs of size x size (a gradient plus noise, so blur matters)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(count):
        base = np.stack([np.sin(6 * xx + i), np.cos(5 * yy - i), np.sin(4 * (xx + yy))], axis=-1)
        img = 0.5 + 0.35 * base + 0.1 * rng.standard_normal((size, size, 3))
        Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(folder / f"img{i}.png")
    return folder


def tiny_overrides(train_dir: Path, out_dir: Path, val_dir: Path | None = None, iters: int = 4) -> list[str]:
    """--set overrides turning any shipped config into a seconds-long CPU run on tiny images."""
    model = [f"model.{k}={v}" for k, v in TINY_MODEL.items()]
    return [
        *model,
        f"data.train_dir={train_dir}",
        f"data.val_dir={val_dir if val_dir is not None else 'null'}",
        "data.val_max_images=1",
        "data.lr_patch=8",
        "data.batch_size=4",
        "data.cache=true",
        "data.workers=0",  # no worker processes per tiny run (test_data_loader.py runs 2 on purpose)
        f"train.iters={iters}",
        "train.lr=1e-3",
        f"logging.out_dir={out_dir}",
        "logging.print_every=1",
        "logging.val_every=2",
        "logging.save_every=2",
        "logging.tensorboard=false",
        "train.encoder_init=torch",  # highpass_init_ needs >= 12 features; the tiny test model has 8
    ]


def save_tiny_teacher(path: Path, seed: int = 0, **sizes) -> Path:
    """A randomly initialised tiny KDSRTeacher saved with model.save (sizes override TINY_MODEL)."""
    import kdsr

    torch.manual_seed(seed)
    config = {**TINY_MODEL, **sizes}
    teacher = kdsr.KDSRTeacher(
        config["variant"],
        config["scale"],
        n_feats=config["n_feats"],
        n_blocks=config["n_blocks"],
        n_encoder_res=config["n_encoder_res"],
    )
    return teacher.save(path)


def free_port() -> int:
    """A free localhost TCP port for a gloo rendezvous."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def join_as_rank(rank: int, world: int, port: int) -> None:
    """Set the torchrun environment variables of `rank` of `world` processes rendezvousing on `port`."""
    import os

    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
    )
