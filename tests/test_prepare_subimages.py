"""`kdsr prepare-subimages`: BasicSR's tile positions, exact pixels, atomic PNGs, one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from kdsr.cli import main
from kdsr.data.io import Pixels, read_pixels, write_pixels
from kdsr.data.subimages import tile_starts


def test_tile_starts_follow_basicsr():
    assert tile_starts(70, 40, 20) == [0, 20, 30]  # 10 px left uncovered > 0: one edge-flush tile
    assert tile_starts(70, 40, 20, thresh_size=15) == [0, 20]  # 10 px <= 15: dropped, as in BasicSR
    assert tile_starts(100, 40, 20) == [0, 20, 40, 60]  # the last tile already ends at the edge
    assert tile_starts(1356, 480, 240) == [0, 240, 480, 720, 876]
    assert tile_starts(30, 40, 20) == []


def test_prepare_subimages_writes_exact_tiles(tmp_path, capsys):
    src, out = tmp_path / "hr", tmp_path / "sub"
    src.mkdir()
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (70, 100, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(src / "big.png")
    Image.fromarray(pixels[:30, :30]).save(src / "small.png")
    deep = rng.integers(0, 65536, (50, 45, 3), dtype=np.uint16)
    write_pixels(src / "deep.png", Pixels(deep, bits=16))  # 16-bit RGB keeps its 16 bits
    args = ["prepare-subimages", str(src), str(out), "--crop", "40", "--step", "20", "--no-progress"]
    assert main(args) == 0
    line = capsys.readouterr().out.strip()
    assert (
        line.startswith("wrote 16 sub-images of 3 images")
        and "skipped 1 smaller than 40x40: small.png" in line
    )
    names = sorted(p.name for p in out.iterdir())
    assert len(names) == 16 and names[0] == "big_s001.png" and not any(n.startswith(".tmp") for n in names)
    rows, cols = [0, 20, 30], [0, 20, 40, 60]
    tiles = [(t, left) for t in rows for left in cols]
    for k, (top, left) in enumerate(tiles, start=1):
        tile = np.asarray(Image.open(out / f"big_s{k:03d}.png"))
        assert np.array_equal(tile, pixels[top : top + 40, left : left + 40])
    deep_tile = read_pixels(out / "deep_s004.png")  # rows [0, 10] x cols [0, 5]: tile 4 = (10, 5)
    assert deep_tile.bits == 16 and np.array_equal(deep_tile.rgb, deep[10:50, 5:45])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--step", "0"], "--step >= 1"),
        (["--crop", "0"], "--crop >= 1"),
        (["--crop", "8", "SAME"], "OUT_DIR must differ"),
    ],
)
def test_prepare_subimages_bad_arguments_are_one_line(tmp_path, capsys, extra, message):
    src = tmp_path / "hr"
    src.mkdir()
    Image.new("RGB", (16, 16)).save(src / "a.png")
    out = str(src) if "SAME" in extra else str(tmp_path / "out")
    argv = ["prepare-subimages", str(src), out, *[e for e in extra if e != "SAME"], "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err


def test_prepare_subimages_missing_folder_and_bad_image(tmp_path, capsys):
    assert main(["prepare-subimages", str(tmp_path / "nope"), str(tmp_path / "o"), "--no-progress"]) == 2
    assert "not found" in capsys.readouterr().err
    src = tmp_path / "hr"
    src.mkdir()
    (src / "broken.png").write_bytes(b"not a png")
    assert main(["prepare-subimages", str(src), str(tmp_path / "o"), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "broken.png does not decode" in err
