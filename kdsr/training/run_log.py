"""The run log: train_log.csv, val_log.csv and TensorBoard scalars (rank 0 only).

Each CSV is read once when the log opens (a resumed run drops the rows after its checkpoint; a log
written before a column was added is rewritten with the new header), then rows are appended to an open
file and flushed one by one.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import IO, Any

from kdsr.training.readout import READOUT_COLUMNS

__all__ = ["CsvLog", "RunLog", "TRAIN_FIELDS", "GAN_FIELDS", "VAL_FIELDS"]

TRAIN_FIELDS = ("iteration", "loss", "l1", "kd", "lr", "it_per_s")
GAN_FIELDS = ("percep", "gan_g", "d_real", "d_fake", "out_d_real", "out_d_fake")
VAL_FIELDS = ("iteration", "psnr", "ssim", *READOUT_COLUMNS)


class CsvLog:
    """One CSV file with a fixed header whose first column is the iteration.

    `keep_through`: drop existing rows with a later iteration (they will be logged again on resume);
    None keeps them all. Missing values are written as empty cells. The file is created at the first row.
    """

    def __init__(self, path: Path, fields: tuple[str, ...], keep_through: int | None = None):
        self.path, self.fields = Path(path), tuple(fields)
        self._prepare(keep_through)
        self._handle: IO[str] | None = None  # opened at the first row: no row, no file
        self._writer: csv.DictWriter | None = None

    def _prepare(self, keep_through: int | None) -> None:
        if not self.path.exists():
            return
        with self.path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            header = tuple(reader.fieldnames or ())
            rows = list(reader)
        kept = [
            r for r in rows if keep_through is None or (r[header[0]] and int(r[header[0]]) <= keep_through)
        ]
        if header == self.fields and len(kept) == len(rows):
            return
        with self.path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.fields, extrasaction="ignore", restval="")
            writer.writeheader()
            writer.writerows(kept)

    def append(self, row: dict[str, Any]) -> None:
        """Write one row and flush it."""
        if self._handle is None:
            new = not self.path.exists()
            self._handle = self.path.open("a", newline="")
            self._writer = csv.DictWriter(self._handle, self.fields, extrasaction="ignore", restval="")
            if new:
                self._writer.writeheader()
        self._writer.writerow(row)
        self._handle.flush()

    def close(self) -> None:
        """Close the file (a later `append` opens it again)."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class RunLog:
    """CSV + TensorBoard logging of the training and validation scalars of one run folder."""

    def __init__(self, run_dir: Path, tensorboard: bool, resume_from: int = 0, gan: bool = False):
        self.train_fields = TRAIN_FIELDS + (GAN_FIELDS if gan else ())
        self.train_csv = CsvLog(run_dir / "train_log.csv", self.train_fields, keep_through=resume_from)
        self.val_csv = CsvLog(run_dir / "val_log.csv", VAL_FIELDS, keep_through=resume_from)
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(
                log_dir=str(run_dir / "tb"), purge_step=resume_from + 1 if resume_from else None
            )

    def log_train(self, iteration: int, stats: dict[str, float]) -> None:
        """One train_log.csv row (and TensorBoard train/<key> scalars) from `stats`."""
        self.train_csv.append({"iteration": iteration, **stats})
        if self.writer is not None:
            for key in self.train_fields[1:]:
                self.writer.add_scalar(f"train/{key}", stats[key], iteration)

    def log_val(self, iteration: int, stats: dict[str, float]) -> None:
        """One val_log.csv row (and TensorBoard val/<key> scalars) from `stats`."""
        self.val_csv.append({"iteration": iteration, **stats})
        if self.writer is not None:
            for key in VAL_FIELDS[1:]:
                if isinstance(stats.get(key), float):
                    self.writer.add_scalar(f"val/{key}", stats[key], iteration)

    def close(self) -> None:
        self.train_csv.close()
        self.val_csv.close()
        if self.writer is not None:
            self.writer.close()
