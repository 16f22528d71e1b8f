"""kdsr.data.io: the one image I/O module -- 8/16-bit read and write, bit depth kept, atomic writes."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from kdsr.data.io import Pixels, read_image, read_image_uint8, read_pixels, write_image, write_pixels


def noise(h: int, w: int, c: int, dtype=np.uint16, seed: int = 0) -> np.ndarray:
    top = np.iinfo(dtype).max
    return (np.random.default_rng(seed).random((h, w, c)) * top).round().astype(dtype)


@pytest.mark.parametrize("alpha", [False, True])
def test_16_bit_colour_png_round_trips_exactly(tmp_path, alpha):
    rgb = noise(9, 7, 3, seed=1)
    a = noise(9, 7, 1, seed=2)[..., 0] if alpha else None
    write_pixels(tmp_path / "x.png", Pixels(rgb, a, False, 16))
    back = read_pixels(tmp_path / "x.png")
    assert back.bits == 16 and back.rgb.dtype == np.uint16 and not back.grayscale
    np.testing.assert_array_equal(back.rgb, rgb)  # not truncated to 8 bits (Pillow alone would)
    if alpha:
        np.testing.assert_array_equal(back.alpha, a)
    else:
        assert back.alpha is None
    # the float view keeps all 16 bits
    torch.testing.assert_close(
        read_image(tmp_path / "x.png"), torch.from_numpy(rgb.transpose(2, 0, 1) / 65535.0).float()
    )
    assert torch.equal(
        read_image_uint8(tmp_path / "x.png"),
        torch.from_numpy(np.round(rgb.transpose(2, 0, 1) * (255 / 65535)).astype(np.uint8)),
    )


def test_16_bit_grayscale_and_tensor_writer(tmp_path):
    gray = noise(6, 5, 1, seed=3)
    write_pixels(tmp_path / "g.png", Pixels(np.repeat(gray, 3, axis=2), None, True, 16))
    assert Image.open(tmp_path / "g.png").mode.startswith("I")  # one 16-bit channel on disk
    back = read_pixels(tmp_path / "g.png")
    assert back.grayscale and back.bits == 16
    np.testing.assert_array_equal(back.rgb[..., 0], gray[..., 0])
    img = torch.from_numpy(noise(5, 8, 3, seed=4).transpose(2, 0, 1) / 65535.0).float()
    write_image(tmp_path / "t.png", img, bits=16)
    assert read_pixels(tmp_path / "t.png").bits == 16
    torch.testing.assert_close(read_image(tmp_path / "t.png"), img, rtol=0, atol=0.5 / 65535)
    with pytest.raises(ValueError, match="png"):
        write_image(tmp_path / "t.jpg", img, bits=16)


def test_16_bit_tiff_is_read_at_16_bits(tmp_path):
    import kornia_rs.io as krs

    rgb = noise(4, 6, 3, seed=5)
    krs.write_image_tiff_u16(str(tmp_path / "x.tiff"), rgb, "rgb")
    back = read_pixels(tmp_path / "x.tiff")
    assert back.bits == 16
    np.testing.assert_array_equal(back.rgb, rgb)


def test_8_bit_formats_alpha_icc_and_16_to_8_bit(tmp_path):
    rgb8 = noise(8, 8, 3, np.uint8, seed=6)
    icc = b"not a real profile, kept byte for byte"
    for name in ("a.png", "a.bmp", "a.webp"):
        write_pixels(tmp_path / name, Pixels(rgb8))
    np.testing.assert_array_equal(read_pixels(tmp_path / "a.png").rgb, rgb8)
    np.testing.assert_array_equal(read_pixels(tmp_path / "a.bmp").rgb, rgb8)
    write_pixels(tmp_path / "i.png", Pixels(noise(4, 4, 3, seed=7), None, False, 16, "PNG", icc))
    assert read_pixels(tmp_path / "i.png").icc_profile == icc  # 16-bit path keeps the profile too
    wide = noise(4, 4, 3, seed=8)
    write_pixels(tmp_path / "w.jpg", Pixels(wide, noise(4, 4, 1, seed=9)[..., 0], False, 16))
    back = read_pixels(tmp_path / "w.jpg")  # JPEG: 8 bits, no alpha
    assert back.bits == 8 and back.alpha is None and back.rgb.shape == (4, 4, 3)
    with pytest.raises(ValueError, match="cannot write"):
        write_pixels(tmp_path / "x.gif", Pixels(rgb8))
    with pytest.raises(ValueError, match="uint16"):
        write_pixels(tmp_path / "x.png", Pixels(rgb8, bits=16))


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_writes_are_atomic_and_honour_the_umask(tmp_path, umask, monkeypatch):
    old = os.umask(umask)
    try:
        paths = [
            write_pixels(tmp_path / "a.png", Pixels(noise(3, 3, 3, np.uint8))),
            write_pixels(tmp_path / "b.png", Pixels(noise(3, 3, 3), bits=16)),  # 16-bit: by file name
            write_image(tmp_path / "sub" / "c.png", torch.rand(3, 4, 4)),
        ]
    finally:
        os.umask(old)
    for path in paths:
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path
    assert not [p for p in tmp_path.rglob(".tmp-*")]
    import kornia_rs.io as krs

    def half_written(name, image, mode):
        with open(name, "wb") as f:
            f.write(b"\x89PNG partial")
        raise OSError("disk full")

    (tmp_path / "keep.png").write_bytes(b"previous")
    monkeypatch.setattr(krs, "write_image_png_u16", half_written)
    with pytest.raises(OSError, match="disk full"):  # the previous file stays, no temp file is left
        write_pixels(tmp_path / "keep.png", Pixels(noise(3, 3, 3), bits=16))
    assert (tmp_path / "keep.png").read_bytes() == b"previous"
    assert not [p for p in tmp_path.rglob(".tmp-*")]
