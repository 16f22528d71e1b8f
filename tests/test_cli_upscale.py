"""`kdsr upscale` and `kdsr profile` end to end on tiny images with a saved random-weight model."""

from __future__ import annotations

import argparse
import struct
import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import kdsr
from kdsr.cli import build_parser, main
from kdsr.data.io import Pixels, read_pixels, write_pixels

SCALE = 2


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    student = kdsr.KDSRStudent("tiny", scale=SCALE, n_blocks=1)
    student.save(root / "student.pt")
    kdsr.KDSRTeacher("tiny", scale=SCALE, n_blocks=1).save(root / "teacher.pt")
    return {"student": root / "student.pt", "teacher": root / "teacher.pt", "model": student}


def rgb_noise(h: int, w: int, c: int = 3, seed: int = 0, dtype=np.uint8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    top = 65535 if dtype == np.uint16 else 255
    return (rng.random((h, w, c)) * top).round().astype(dtype)


def expected_sr(model, rgb01: np.ndarray) -> np.ndarray:
    """(H, W, 3) float in [0, 1] -> the model's clamped (sH, sW, 3) output."""
    lr = torch.from_numpy(np.ascontiguousarray(rgb01.transpose(2, 0, 1))).float()[None]
    return kdsr.upscale(model, lr)[0].permute(1, 2, 0).numpy()


def png_with_every_filter(samples: np.ndarray) -> bytes:
    """A 16-bit PNG whose rows use filter types 0..4 in turn (what real encoders produce)."""
    H, W, C = samples.shape
    rows = samples.astype(">u2").view(np.uint8).reshape(H, W * C * 2).astype(np.int64)
    bpp = 2 * C
    out = bytearray()
    prev = np.zeros(rows.shape[1], np.int64)
    for y in range(H):
        ftype, row = y % 5, rows[y]
        left = np.concatenate([np.zeros(bpp, np.int64), row[:-bpp]])
        up_left = np.concatenate([np.zeros(bpp, np.int64), prev[:-bpp]])
        if ftype == 4:
            p = left + prev - up_left
            pa, pb, pc = abs(p - left), abs(p - prev), abs(p - up_left)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prev, up_left))
        else:
            pred = [np.zeros_like(row), left, prev, (left + prev) // 2][ftype]
        out += bytes([ftype]) + ((row - pred) % 256).astype(np.uint8).tobytes()
        prev = row

    def chunk(kind, payload):
        return (
            struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
        )

    ihdr = struct.pack(">IIBBBBB", W, H, 16, {3: 2, 4: 6}[C], 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(out))) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


@pytest.mark.parametrize("channels", [3, 4])
def test_read_pixels_keeps_16_bit_colour_exactly(tmp_path, channels):
    samples = rgb_noise(7, 9, channels, seed=channels, dtype=np.uint16)
    (tmp_path / "a.png").write_bytes(png_with_every_filter(samples))
    data = read_pixels(tmp_path / "a.png")
    assert data.bits == 16 and not data.grayscale and data.rgb.dtype == np.uint16
    np.testing.assert_array_equal(data.rgb, samples[..., :3])
    if channels == 4:
        np.testing.assert_array_equal(data.alpha, samples[..., 3])
    write_pixels(tmp_path / "b.png", data)  # our writer round-trips through our reader
    again = read_pixels(tmp_path / "b.png")
    np.testing.assert_array_equal(again.rgb, data.rgb)


def write_png16(path, rgb16: np.ndarray) -> None:
    write_pixels(path, Pixels(rgb16, None, False, 16))


def test_upscale_every_kind_of_file(tmp_path, checkpoints):
    src = tmp_path / "in"
    src.mkdir()
    rgb8, gray8, rgba8 = rgb_noise(10, 12), rgb_noise(10, 12, 1, seed=1)[..., 0], rgb_noise(10, 12, 4, seed=2)
    rgb16 = rgb_noise(10, 12, 3, seed=3, dtype=np.uint16)
    Image.fromarray(rgb8).save(src / "rgb.png")
    Image.fromarray(rgb8).save(src / "photo.jpg", quality=95)
    Image.fromarray(rgb8).save(src / "pic.bmp")
    Image.fromarray(gray8).save(src / "gray.png")
    Image.fromarray(rgba8).save(src / "rgba.png")
    Image.fromarray(rgb_noise(10, 12, 1, seed=4, dtype=np.uint16)[..., 0]).save(src / "gray16.png")
    write_png16(src / "rgb16.png", rgb16)
    out = tmp_path / "out"
    rc = main(["upscale", str(src), "-o", str(out), "--checkpoint", str(checkpoints["student"])])
    assert rc == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "gray16_x2.png", "gray_x2.png", "photo_x2.jpg", "pic_x2.bmp",
        "rgb16_x2.png", "rgb_x2.png", "rgba_x2.png",
    ]  # fmt: skip
    for name in names:
        assert Image.open(out / name).size == (12 * SCALE, 10 * SCALE)
    model = checkpoints["model"]
    modes = {n: Image.open(out / n).mode for n in names}
    assert modes["gray_x2.png"] == "L" and modes["rgba_x2.png"] == "RGBA" and modes["rgb_x2.png"] == "RGB"
    assert modes["gray16_x2.png"].startswith("I")  # 16-bit grayscale
    # 8-bit RGB: the model output, rounded to 8 bits
    got = np.asarray(Image.open(out / "rgb_x2.png"), dtype=np.float32) / 255
    np.testing.assert_allclose(got, expected_sr(model, rgb8 / 255.0), atol=0.5 / 255 + 1e-6)
    # grayscale: run on the repeated channel, written back as luma
    want = expected_sr(model, np.repeat(gray8[..., None] / 255.0, 3, axis=2)) @ np.array(
        [0.299, 0.587, 0.114]
    )
    got = np.asarray(Image.open(out / "gray_x2.png"), dtype=np.float32) / 255
    np.testing.assert_allclose(got, want, atol=0.5 / 255 + 1e-5)
    # RGBA: colour through the model, alpha upscaled separately with bicubic
    got = np.asarray(Image.open(out / "rgba_x2.png"), dtype=np.float32) / 255
    np.testing.assert_allclose(
        got[..., :3], expected_sr(model, rgba8[..., :3] / 255.0), atol=0.5 / 255 + 1e-6
    )
    alpha = torch.from_numpy(rgba8[..., 3] / 255.0)[None, None]
    want_alpha = F.interpolate(alpha, scale_factor=SCALE, mode="bicubic", align_corners=False).clamp(0, 1)
    np.testing.assert_allclose(got[..., 3], want_alpha[0, 0].numpy(), atol=0.5 / 255 + 1e-6)
    # 16-bit colour: read, restored and written at 16 bits (an 8-bit detour would be off by ~1/255)
    result = read_pixels(out / "rgb16_x2.png")
    assert result.bits == 16
    got = result.rgb / 65535.0
    np.testing.assert_allclose(got, expected_sr(model, rgb16 / 65535.0), atol=0.5 / 65535 + 1e-6)


def test_tiled_run_and_options(tmp_path, checkpoints):
    src = tmp_path / "big.png"
    Image.fromarray(rgb_noise(28, 26, seed=7)).save(src)
    args = ["upscale", str(src), "-o", str(tmp_path / "o"), "--checkpoint", str(checkpoints["student"])]
    assert main([*args, "--tile", "12", "--tile-pad", "4", "--tile-batch", "2", "--ext", "bmp"]) == 0
    tiled = np.asarray(Image.open(tmp_path / "o" / "big_x2.bmp"), dtype=np.float32)
    assert main([*args, "--suffix", "", "--no-fused-kernels", "--half"]) == 0  # bfloat16 on CPU
    half = np.asarray(Image.open(tmp_path / "o" / "big.png"), dtype=np.float32)
    want = expected_sr(checkpoints["model"], np.asarray(Image.open(src), dtype=np.float32) / 255) * 255
    assert np.abs(tiled - want).mean() < 0.5 and np.abs(half - want).mean() < 3


def test_unreadable_files_are_reported_and_the_rest_continue(tmp_path, checkpoints, capsys):
    (tmp_path / "broken.png").write_bytes(b"this is not a PNG")
    Image.fromarray(rgb_noise(8, 8)).save(tmp_path / "fine.png")
    out = tmp_path / "out"
    rc = main(
        ["upscale", str(tmp_path / "broken.png"), str(tmp_path / "fine.png"),
         "-o", str(out), "--checkpoint", str(checkpoints["student"])]
    )  # fmt: skip
    assert rc == 1
    assert (out / "fine_x2.png").is_file()
    err = capsys.readouterr().err
    assert f"kdsr upscale: {tmp_path / 'broken.png'}: not an image" in err
    assert "Error" not in err and "Traceback" not in err
    assert "1/2 images written" in err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--checkpoint", "no-such-model"], "shipped models"),
        (["--checkpoint", "TEACHER"], "needs a student"),
        (["--checkpoint", "STUDENT", "--device", "cuda:99" if torch.cuda.is_available() else "cuda"], "cuda"),
        (["--checkpoint", "STUDENT", "--tile", "2"], "--tile"),
    ],
)
def test_setup_errors_exit_with_2(tmp_path, checkpoints, capsys, extra, message):
    Image.fromarray(rgb_noise(8, 8)).save(tmp_path / "a.png")
    extra = [str(checkpoints["teacher"]) if e == "TEACHER" else e for e in extra]
    extra = [str(checkpoints["student"]) if e == "STUDENT" else e for e in extra]
    if torch.cuda.is_available() and "--device" in extra:
        pytest.skip("needs a machine without CUDA")
    assert main(["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "o"), *extra]) == 2
    assert message in capsys.readouterr().err


def _subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[name]


@pytest.mark.parametrize("name", ["upscale", "profile"])
def test_help_explains_every_flag(name, capsys):
    sub = _subparser(name)
    for action in sub._actions:
        assert action.help, f"{name}: {action.option_strings or action.dest} has no help"
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for action in sub._actions:
        for flag in action.option_strings:
            assert flag in text


def test_profile_prints_params_macs_and_times(tmp_path, capsys):
    json_path = tmp_path / "p.json"
    argv = ["profile", "--variant", "tiny", "--lr-size", "8", "8", "--repeats", "1", "--warmup", "0"]
    assert main([*argv, "--json", str(json_path)]) == 0
    out = capsys.readouterr().out
    assert "parameters: 367,291" in out and "MACs at LR 1x3x8x8" in out
    assert "| pytorch |" in out and "| reference |" in out
    assert json_path.is_file()
    assert main(["profile", "--variant", "M", "--repeats", "0"]) == 0
    out = capsys.readouterr().out
    assert "5,795,099 (5.80 M; paper 5.80 M)" in out and "226.87 G" in out


# ----------------------------------------------------------------------------------------------------
# --tile auto, --max-memory, the output folder, progress bars
# ----------------------------------------------------------------------------------------------------
def test_auto_tile_that_covers_the_image_is_bit_identical_to_untiled(tmp_path, checkpoints, capsys):
    src = tmp_path / "a.png"
    Image.fromarray(rgb_noise(20, 24, seed=11)).save(src)
    base = ["upscale", str(src), "--checkpoint", str(checkpoints["student"])]
    assert main([*base, "-o", str(tmp_path / "auto")]) == 0  # default: --tile auto
    assert "whole image" in capsys.readouterr().err
    assert main([*base, "-o", str(tmp_path / "none"), "--tile", "0"]) == 0
    assert main([*base, "-o", str(tmp_path / "one"), "--tile", "24"]) == 0  # one window covers it
    auto = np.asarray(Image.open(tmp_path / "auto" / "a_x2.png"))
    assert np.array_equal(auto, np.asarray(Image.open(tmp_path / "none" / "a_x2.png")))
    assert np.array_equal(auto, np.asarray(Image.open(tmp_path / "one" / "a_x2.png")))
    # and the untiled CLI result is the model's own output, quantised (no float detour through blending)
    want = np.round(expected_sr(checkpoints["model"], rgb_noise(20, 24, seed=11) / np.float32(255)) * 255)
    assert np.array_equal(auto, want.astype(np.uint8))


def test_auto_tiles_under_a_small_budget_and_progress_only_for_several_tiles(tmp_path, checkpoints, capsys):
    src = tmp_path / "a.png"
    Image.fromarray(rgb_noise(96, 120, seed=12)).save(src)
    from kdsr.inference.probe import measure_memory
    from kdsr.inference.tiling import runner_for

    mem = measure_memory(runner_for(checkpoints["model"]), torch.device("cpu"))
    small_budget = str(int(mem.window_bytes("sr", int(0.4 * 96 * 120))))  # less than the image needs
    base = ["upscale", str(src), "--checkpoint", str(checkpoints["student"]), "--tile-pad", "4"]
    assert main([*base, "-o", str(tmp_path / "small"), "--max-memory", small_budget]) == 0
    err = capsys.readouterr().err
    assert "tiles" in err and "whole image" not in err and "tile/s" in err  # a bar over the tiles
    assert main([*base, "-o", str(tmp_path / "quiet"), "--max-memory", small_budget, "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "tile/s" not in err and "img/s" not in err
    assert main([*base, "-o", str(tmp_path / "big"), "--max-memory", "4GiB"]) == 0
    err = capsys.readouterr().err
    assert "whole image" in err and "tile/s" not in err  # one tile: no tile bar
    small = np.asarray(Image.open(tmp_path / "small" / "a_x2.png"), np.float32)
    big = np.asarray(Image.open(tmp_path / "big" / "a_x2.png"), np.float32)
    # tiled (blended) vs whole image: the same picture. Often bit-identical after 8-bit rounding, so no lower
    # bound: that the run tiled is shown by its tile bar above (the tile size follows the measured memory).
    assert np.abs(small - big).mean() < 0.5


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--max-memory", "lots"], "not a memory size"),
        (["--tile", "big"], "--tile must be auto"),
        (["--tile", "-3"], "--tile must be auto"),
    ],
)
def test_bad_memory_and_tile_flags_exit_with_2(tmp_path, checkpoints, capsys, extra, message):
    Image.fromarray(rgb_noise(8, 8)).save(tmp_path / "a.png")
    argv = ["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "o"), "--checkpoint"]
    assert main([*argv, str(checkpoints["student"]), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_budget_below_the_image_arrays_fails_that_file_with_one_line(tmp_path, checkpoints, capsys):
    Image.fromarray(rgb_noise(64, 64)).save(tmp_path / "a.png")
    argv = ["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "o"), "--max-memory", "100KB"]
    assert main([*argv, "--checkpoint", str(checkpoints["student"])]) == 1
    err = capsys.readouterr().err
    assert "MemoryError" not in err and "raise --max-memory" in err and "Traceback" not in err


@pytest.mark.parametrize("where", ["file", "file/sub"])
def test_output_that_is_a_file_exits_with_2_and_one_line(tmp_path, checkpoints, capsys, where):
    Image.fromarray(rgb_noise(8, 8)).save(tmp_path / "a.png")
    (tmp_path / "file").write_text("not a folder")
    argv = ["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / where)]
    assert main([*argv, "--checkpoint", str(checkpoints["student"])]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("kdsr upscale: error: -o ") and "is a file" in err or "existing file" in err


def test_default_flags_finish_under_an_address_space_cap_the_untiled_run_exceeds(tmp_path):
    """Processes started under an address-space cap (RLIMIT_AS, as `ulimit -v` sets it) of their size after a
    warm-up run plus 75% of what the untiled network allocates for the image (the probe's profiled peak:
    its estimate / CPU_SAFETY): there the untiled network runs out of memory, and `kdsr upscale` with the
    default flags picks tiles from the headroom and finishes. A first process measures the size and the
    need; the untiled try and the upscale each run in a fresh process under the cap from its start (memory
    a failed try leaves mapped is not the upscale's to count). A small x4 model (16 features): its
    activations per pixel dwarf the image's own arrays, so the tiles have room whatever the machine's
    convolution library allocates."""
    import subprocess
    import sys

    torch.manual_seed(0)
    kdsr.KDSRStudent("tiny", scale=4, n_blocks=1, n_feats=16, n_encoder_res=1).save(tmp_path / "narrow.pt")
    src = tmp_path / "big.png"
    Image.fromarray(rgb_noise(600, 600, seed=13)).save(src)  # the fixed per-window cost is small next to it
    Image.fromarray(rgb_noise(8, 8)).save(tmp_path / "warm.png")
    ckpt = str(tmp_path / "narrow.pt")
    warm = f"""
import resource, sys, torch
if len(sys.argv) > 1:
    resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[1]), resource.RLIM_INFINITY))
torch.set_num_threads(1)
import kdsr
from kdsr.cli import main
from kdsr.inference.probe import CPU_SAFETY, _status_bytes, measure_memory
from kdsr.inference.tiling import runner_for
warm = {str(tmp_path / "warm.png")!r}
assert main(["upscale", warm, "-o", {str(tmp_path / "w")!r}, "--checkpoint", {ckpt!r},
             "--no-progress", "--overwrite"]) == 0  # imports everything the run needs
model = kdsr.load({ckpt!r})
"""
    measure = (
        warm
        + """
untiled = measure_memory(runner_for(model), torch.device("cpu")).sr_per_px * 600 * 600 / CPU_SAFETY
print(_status_bytes("VmSize") + int(0.75 * untiled))
"""
    )
    run = subprocess.run([sys.executable, "-c", measure], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    cap = run.stdout.strip().splitlines()[-1]
    untiled = (
        warm
        + """
try:
    with torch.no_grad():
        model(torch.rand(1, 3, 600, 600))
    sys.exit("the untiled run fit under the cap: the test proves nothing")
except RuntimeError as exc:  # torch.OutOfMemoryError or oneDNN's "could not create a primitive"
    print("untiled:", type(exc).__name__, str(exc).splitlines()[0][:80])
"""
    )
    run = subprocess.run([sys.executable, "-c", untiled, cap], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "untiled:" in run.stdout, run.stdout + run.stderr
    out = str(tmp_path / "o")
    argv = ["upscale", str(src), "-o", out, "--checkpoint", ckpt, "--no-progress"]
    upscale = warm + f"sys.exit(main({argv!r}))"
    run = subprocess.run([sys.executable, "-c", upscale, cap], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"cap {cap}: " + run.stdout + run.stderr
    assert "tiles" in run.stderr and "1/1 images written" in run.stderr  # auto chose tiles and finished
    assert Image.open(tmp_path / "o" / "big_x4.png").size == (2400, 2400)


@pytest.mark.parametrize("scale", [2, 4])
def test_alpha_upscaled_in_bands_equals_one_whole_image_call(scale):
    from kdsr.inference.pixels import upscale_alpha

    alpha = rgb_noise(70, 9, 1, seed=14, dtype=np.uint16)[..., 0]
    whole = torch.from_numpy(alpha.astype(np.float32) / np.float32(65535))[None, None]
    whole = F.interpolate(whole, scale_factor=scale, mode="bicubic", align_corners=False).clamp(0, 1)
    want = (whole[0, 0] * 65535).round().to(torch.int32).numpy().astype(np.uint16)
    np.testing.assert_array_equal(upscale_alpha(alpha, scale, chunk=16), want)
