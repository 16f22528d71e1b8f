"""Data side of kdsr: image I/O, the HR training dataset and deterministic benchmark pairs.

from kdsr import data
ds = data.HRImageDataset("shared/data/B100", scale=4, lr_patch=64)        # items: (3, 256, 256) float32
pairs = data.benchmark_pairs("shared/data/Set5", 4, kernels="gaussian8")  # [(name, lr, hr, params), ...]
"""

from .benchmark import BenchmarkPair, benchmark_kernels, benchmark_pairs, read_benchmark, write_benchmark
from .dataset import HRImageDataset
from .io import IMAGE_EXTENSIONS, list_images, modcrop, read_image, read_image_uint8, write_image

__all__ = [
    "IMAGE_EXTENSIONS",
    "BenchmarkPair",
    "HRImageDataset",
    "benchmark_kernels",
    "benchmark_pairs",
    "list_images",
    "modcrop",
    "read_benchmark",
    "read_image",
    "read_image_uint8",
    "write_benchmark",
    "write_image",
]
