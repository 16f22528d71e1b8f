"""`kdsr upscale` for people upscaling photos: the default model, `kdsr models`, --model, --outscale,
--jpeg-quality, skip-existing / --overwrite, EXIF orientation and the ICC profile."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageCms

from kdsr.cli import main
from kdsr.inference.catalog import CATALOG, DEFAULT_MODEL, parameter_count
from kdsr.models.kdsr_model import shipped_names


def photo(path, h=14, w=20, orientation=None, icc=None, seed=0):
    rng = np.random.default_rng(seed)
    img = Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8))
    kwargs = {"quality": 95}
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        kwargs["exif"] = exif.tobytes()
    if icc is not None:
        kwargs["icc_profile"] = icc
    img.save(path, **kwargs)
    return path


def test_default_model_works_without_a_model_flag(tmp_path, capsys):
    src = photo(tmp_path / "photo.jpg")
    assert main(["upscale", str(src), "-o", str(tmp_path / "out"), "--no-progress"]) == 0
    out = Image.open(tmp_path / "out" / "photo_x4.jpg")
    assert out.size == (80, 56) and out.format == "JPEG"
    assert DEFAULT_MODEL in shipped_names()


def test_models_lists_every_shipped_model(capsys):
    assert main(["models"]) == 0
    text = capsys.readouterr().out
    assert set(shipped_names()) == {m.name for m in CATALOG}  # every shipped file is described
    for name in shipped_names():
        assert name in text and f"{parameter_count(name):,} parameters" in text
    assert f"{DEFAULT_MODEL}  (default for kdsr upscale)" in text
    assert parameter_count("iso-x4-student") == 367_291  # kdsr/weights/README.md's count


def test_model_is_an_alias_of_checkpoint(tmp_path):
    src = photo(tmp_path / "a.png")
    assert main(["upscale", str(src), "-o", str(tmp_path / "m"), "--model", "tiny-iso-x4-student"]) == 0
    assert main(["upscale", str(src), "-o", str(tmp_path / "c"), "--checkpoint", "tiny-iso-x4-student"]) == 0
    assert (tmp_path / "m" / "a_x4.png").read_bytes() == (tmp_path / "c" / "a_x4.png").read_bytes()


def test_outscale_resizes_with_lanczos(tmp_path):
    src = photo(tmp_path / "a.png", 15, 21)
    base = ["upscale", str(src), "--model", "tiny-iso-x4-student", "--no-progress"]
    assert main([*base, "-o", str(tmp_path / "x4")]) == 0
    assert main([*base, "-o", str(tmp_path / "x3"), "--outscale", "2.5"]) == 0
    full = Image.open(tmp_path / "x4" / "a_x4.png")
    small = Image.open(tmp_path / "x3" / "a_x2.5.png")
    assert small.size == (round(21 * 2.5), round(15 * 2.5))  # (52, 38): rounded
    want = np.asarray(full.resize(small.size, Image.Resampling.LANCZOS), np.float32)
    diff = np.abs(np.asarray(small, np.float32) - want)
    # the oracle is Pillow's 8-bit RGB Lanczos, which rounds and clips between its two passes (measured: max 8
    # at strong edges); ours filters in float32 per channel. A different filter (e.g. bicubic) misses by more.
    assert diff.mean() < 0.5 and diff.max() <= 12
    bicubic = np.asarray(full.resize(small.size, Image.Resampling.BICUBIC), np.float32)
    assert np.abs(np.asarray(small, np.float32) - bicubic).mean() > diff.mean()


def test_jpeg_quality_and_skip_existing(tmp_path, capsys):
    src = photo(tmp_path / "p.jpg", 24, 24, seed=3)
    base = ["upscale", str(src), "--model", "tiny-iso-x4-student", "--no-progress"]
    assert main([*base, "-o", str(tmp_path / "q"), "--jpeg-quality", "30"]) == 0
    low = (tmp_path / "q" / "p_x4.jpg").stat().st_size
    assert main([*base, "-o", str(tmp_path / "q")]) == 0  # exists: skipped, not redone at 95
    assert "1 already there, skipped; --overwrite to redo" in capsys.readouterr().err
    assert (tmp_path / "q" / "p_x4.jpg").stat().st_size == low
    assert main([*base, "-o", str(tmp_path / "q"), "--overwrite"]) == 0  # default quality 95
    assert (tmp_path / "q" / "p_x4.jpg").stat().st_size > low
    assert main([*base, "-o", str(tmp_path / "q"), "--jpeg-quality", "0"]) == 2


def test_exif_orientation_applied_and_icc_kept(tmp_path):
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    src = photo(tmp_path / "rot.jpg", 10, 16, orientation=6, icc=icc)  # 6: rotate 90° clockwise to view
    assert main(["upscale", str(src), "-o", str(tmp_path / "o"), "--model", "tiny-iso-x4-student"]) == 0
    out = Image.open(tmp_path / "o" / "rot_x4.jpg")
    assert out.size == (40, 64)  # upright: the 16x10 stored pixels are shown as 10x16
    assert out.info.get("icc_profile") == icc
    assert out.getexif().get(0x0112) in (None, 1)  # no orientation tag left to rotate it twice


@pytest.mark.parametrize("flag", ["--half"])
def test_half_is_a_deprecated_alias(tmp_path, capsys, flag):
    src = photo(tmp_path / "a.png")
    argv = ["upscale", str(src), "-o", str(tmp_path / "o"), "--model", "tiny-iso-x4-student", flag]
    assert main([*argv, "--no-progress"]) == 0
    assert "--half is deprecated; use --precision auto" in capsys.readouterr().err


def test_encoder_pixels_reads_a_budget_or_every_pixel(tmp_path, capsys):
    """--encoder-pixels N below the image's pixels changes the estimate (so the output); `all` and any N at
    least the image's pixels give the whole-image result byte for byte; a bad value is one line, exit 2."""
    src = photo(tmp_path / "p.png", h=300, w=400, seed=4)
    runs = {"all": "all", "big": str(300 * 400), "small": "20000"}
    for name, value in runs.items():
        args = ["upscale", str(src), "-o", str(tmp_path / name), "--no-progress", "--encoder-pixels", value]
        assert main([*args, "--model", "iso-x4-student"]) == 0
    read = {name: (tmp_path / name / "p_x4.png").read_bytes() for name in runs}
    assert read["all"] == read["big"] and read["all"] != read["small"]
    capsys.readouterr()
    assert main(["upscale", str(src), "-o", str(tmp_path / "bad"), "--encoder-pixels", "-3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--encoder-pixels" in err[0] and "Traceback" not in err[0]
