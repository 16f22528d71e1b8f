"""kdsr.deploy and `kdsr export`: ONNX and torch.export round trips, the onnxruntime runner, bf16 quality."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import kdsr
from kdsr.cli import main
from kdsr.data.io import read_image
from kdsr.degradations.resize import imresize
from kdsr.deploy.graphs import dynamic_conv_taps, export_graphs
from kdsr.inference.tiling import resolve_precision

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from kdsr.deploy import OnnxStudent, export_onnx, export_program, load_program  # noqa: E402

SET5 = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "Set5"
ORT_ATOL = 1e-4  # the bound; measured ~5e-7 (float32 summation order only)


def student(scale: int, seed: int = 0) -> kdsr.KDSRStudent:
    torch.manual_seed(seed)
    return kdsr.KDSRStudent("tiny", scale=scale, n_blocks=2).eval()


@pytest.fixture(scope="module", params=[3, 4])
def exported(request, tmp_path_factory):
    model = student(request.param)
    path = tmp_path_factory.mktemp("onnx") / "s.onnx"
    sr_file, enc_file = export_onnx(model, path)
    return model, sr_file, enc_file


def test_taps_formulation_matches_float64_grouped_conv():
    x = torch.randn(3, 5, 9, 11, dtype=torch.float64)
    w = torch.randn(3, 5, 3, 3, dtype=torch.float64)
    ref = torch.nn.functional.conv2d(x.reshape(1, 15, 9, 11), w.reshape(15, 1, 3, 3), padding=1, groups=15)
    torch.testing.assert_close(dynamic_conv_taps(x, w), ref.view(3, 5, 9, 11), rtol=1e-12, atol=1e-12)


def test_onnx_graphs_pass_the_checker_and_are_dynamic(exported):
    _, sr_file, enc_file = exported
    for path in (sr_file, enc_file):
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto, full_check=True)
        for value in proto.graph.input:
            dims = value.type.tensor_type.shape.dim
            assert dims[0].dim_param, f"{path.name}:{value.name} has a fixed batch"
            if len(dims) == 4:
                assert dims[2].dim_param and dims[3].dim_param, f"{path.name}:{value.name} has a fixed H/W"


@pytest.mark.parametrize("shape", [(2, 3, 24, 20), (2, 3, 13, 37), (1, 3, 7, 5)])  # export saw (1, 3, 16, 16)
def test_onnxruntime_equals_pytorch(exported, shape):
    model, sr_file, _ = exported
    onnx_model = OnnxStudent(sr_file, threads=1)
    lr = torch.rand(shape, generator=torch.Generator().manual_seed(sum(shape)))
    with torch.no_grad():
        feats = model.encoder.features(lr)
        pooled = feats.mean(dim=(2, 3))
        ref = model.sr_net(lr, model.encoder.head(pooled)[0])
    torch.testing.assert_close(onnx_model.features(lr), feats, rtol=0, atol=ORT_ATOL)
    torch.testing.assert_close(onnx_model.sr(lr, pooled), ref, rtol=0, atol=ORT_ATOL)


def test_onnx_runner_tiles_like_kdsr_upscale(exported):
    model, sr_file, _ = exported
    onnx_model = OnnxStudent(sr_file, threads=1)
    lr = torch.rand(2, 3, 30, 41, generator=torch.Generator().manual_seed(1))
    for tile, pad in [(12, 3), (16, 0)]:
        ref = kdsr.upscale(model, lr, tile=tile, tile_pad=pad, tile_batch=2)
        out = onnx_model.upscale(lr, tile=tile, tile_pad=pad, tile_batch=2)
        torch.testing.assert_close(out, ref, rtol=0, atol=ORT_ATOL)


@pytest.mark.skipif(not SET5.is_dir(), reason="Set5 not found")
def test_shipped_student_on_a_real_image(tmp_path):
    model = kdsr.load("tiny-iso-x4-student")
    sr_file, _ = export_onnx(model, tmp_path / "tiny.onnx")
    lr = imresize(read_image(SET5 / "bird.png")[None], 0.25)  # (1, 3, 72, 72)
    out = OnnxStudent(sr_file, threads=1).upscale(lr, tile=32)
    torch.testing.assert_close(out, kdsr.upscale(model, lr, tile=32), rtol=0, atol=ORT_ATOL)


def test_torch_export_keeps_the_custom_op_and_round_trips(tmp_path):
    model = student(4, seed=3)
    program = export_program(model, tmp_path / "s.pt2")
    targets = [str(node.target) for node in program.graph.nodes if node.op == "call_function"]
    assert sum("kdsr.idr_ddc" in t for t in targets) == model.n_blocks
    loaded = load_program(tmp_path / "s.pt2").module()
    for shape in [(2, 3, 16, 16), (2, 3, 11, 23), (1, 3, 9, 6)]:
        lr = torch.rand(shape, generator=torch.Generator().manual_seed(sum(shape)))
        with torch.no_grad():
            torch.testing.assert_close(loaded(lr), model(lr), rtol=0, atol=1e-5)


def test_export_graphs_leave_the_model_untouched():
    model = student(2)
    before = [b.ddc.mode for b in model.sr_net.blocks]
    export_graphs(model)
    assert [b.ddc.mode for b in model.sr_net.blocks] == before


def test_teachers_and_bad_formats_are_usage_errors(tmp_path, capsys):
    torch.manual_seed(0)
    kdsr.KDSRTeacher("tiny", scale=2, n_blocks=1).save(tmp_path / "t.pt")
    assert main(["export", "--checkpoint", str(tmp_path / "t.pt"), "--format", "onnx", "-o", "x.onnx"]) == 2
    err = capsys.readouterr().err
    assert "teacher" in err and "HR" in err and "not exportable" in err
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--checkpoint", "tiny-iso-x4-student", "--format", "tflite", "-o", "x"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'tflite'" in capsys.readouterr().err
    missing = tmp_path / "no" / "s.onnx"
    assert (
        main(["export", "--checkpoint", "tiny-iso-x4-student", "--format", "onnx", "-o", str(missing)]) == 2
    )
    assert "does not exist" in capsys.readouterr().err


def test_cli_export_and_upscale_onnx_match_pytorch(tmp_path, capsys):
    from PIL import Image

    model = student(2, seed=5)
    model.save(tmp_path / "s.pt")
    rng = np.random.default_rng(0)
    (tmp_path / "in").mkdir()
    Image.fromarray((rng.random((26, 31, 3)) * 255).astype(np.uint8)).save(tmp_path / "in" / "a.png")
    onnx_file = tmp_path / "s.onnx"
    assert (
        main(["export", "--checkpoint", str(tmp_path / "s.pt"), "--format", "onnx", "-o", str(onnx_file)])
        == 0
    )
    assert (tmp_path / "s.encoder.onnx").is_file()
    common = [str(tmp_path / "in"), "--tile", "12", "--tile-pad", "2"]
    assert main(["upscale", *common, "-o", str(tmp_path / "ort"), "--onnx", str(onnx_file)]) == 0
    assert main(["upscale", *common, "-o", str(tmp_path / "pt"), "--checkpoint", str(tmp_path / "s.pt")]) == 0
    a = np.asarray(Image.open(tmp_path / "ort" / "a_x2.png"), dtype=np.int16)
    b = np.asarray(Image.open(tmp_path / "pt" / "a_x2.png"), dtype=np.int16)
    assert a.shape == (52, 62, 3) and np.abs(a - b).max() <= 1
    capsys.readouterr()
    # bad --onnx use: one message, exit 2
    out = str(tmp_path / "bad")
    assert main(["upscale", *common, "-o", out, "--onnx", str(tmp_path / "none.onnx")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["upscale", *common, "-o", out, "--onnx", str(tmp_path / "s.encoder.onnx")]) == 2
    assert "not a kdsr SR graph" in capsys.readouterr().err
    assert main(["upscale", *common, "-o", out, "--onnx", str(onnx_file), "--precision", "bf16"]) == 2
    assert "--onnx runs float32" in capsys.readouterr().err
    assert (
        main(["upscale", *common, "-o", out, "--checkpoint", str(tmp_path / "s.pt"), "--precision", "fp16"])
        == 2
    )
    assert "CUDA only" in capsys.readouterr().err


def test_precision_names():
    assert resolve_precision("auto", torch.device("cpu")) in ("fp32", "bf16")
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("int8", torch.device("cpu"))
    with pytest.raises(ValueError, match="CUDA only"):
        resolve_precision("fp16", torch.device("cpu"))


@pytest.mark.skipif(not SET5.is_dir(), reason="Set5 not found")
def test_bf16_within_one_level_of_fp32_on_set5():
    """precision="bf16" (autocast + channels_last + the fused IDR-DDC's bf16 path), shipped weights,
    Set5 LR images (HR bicubic-downscaled x4): >= 99.9% of 8-bit output values within 1 level of fp32."""
    model = kdsr.load("tiny-iso-x4-student")
    close = total = 0
    for path in sorted(SET5.glob("*.png")):
        lr = imresize(read_image(path)[None], 0.25).clamp(0, 1)
        fp32 = (kdsr.upscale(model, lr) * 255).round()
        bf16 = kdsr.upscale(model, lr, precision="bf16")
        assert bf16.dtype == torch.float32
        diff = ((bf16 * 255).round() - fp32).abs()
        close += int((diff <= 1).sum())
        total += diff.numel()
    assert close / total >= 0.999, f"only {close / total:.5f} of pixels within 1 level"
