"""No file kdsr reads runs code: crafted malicious pickles are refused everywhere, safetensors model files,
the explicit trust opt-in, and the one atomic writer's file mode."""

from __future__ import annotations

import argparse
import io
import os
import pickle
import struct
import subprocess
import zipfile
from pathlib import Path

import pytest
import torch
from test_training_support import TINY_MODEL, make_image_folder, tiny_overrides

import kdsr
from kdsr.atomic import atomic_write_text
from kdsr.cli import main
from kdsr.models import kdsr_model
from kdsr.safe_load import UnsafePickleError
from kdsr.training import checkpoint as ckpt_io


# ----------------------------------------------------------------------------------------------------
# crafted payloads: each creates a marker file when unpickled
# ----------------------------------------------------------------------------------------------------
class OsPayload:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class SubprocessPayload(OsPayload):
    def __reduce__(self):
        return (subprocess.call, (["touch", self.marker],))


class BuiltinsPayload(OsPayload):
    def __reduce__(self):
        return (open, (self.marker, "w"))  # builtins.open: creates the file


def _tiny_student() -> kdsr.KDSRStudent:
    torch.manual_seed(0)
    return kdsr.KDSRStudent("tiny", scale=4, n_feats=8, n_blocks=1, n_encoder_res=1)


def _zip_with_data_pkl(legit: Path, payload: bytes, out: Path) -> Path:
    """Copy a legit torch zip file, replacing its data.pkl by `payload`."""
    with zipfile.ZipFile(legit) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = payload if info.filename.endswith("/data.pkl") else src.read(info.filename)
            dst.writestr(info, data)
    return out


def _malicious_files(folder: Path, marker: Path) -> dict[str, Path]:
    """name -> crafted file; unpickling any of them would create `marker`."""
    folder.mkdir(parents=True, exist_ok=True)
    blob = _tiny_student().checkpoint()
    files = {}
    payloads = (("os", OsPayload, 2), ("subprocess", SubprocessPayload, 2), ("builtins", BuiltinsPayload, 4))
    for name, cls, protocol in payloads:
        path = folder / f"{name}.pt"
        with open(path, "wb") as handle:  # a legacy (non-zip) pickle, as old torch.save wrote
            pickle.dump(cls(marker), handle, protocol=protocol)
        files[name] = path
    nested = dict(blob, metadata={"notes": [1, {"deep": (2, SubprocessPayload(marker))}]})
    files["nested"] = folder / "nested.pt"
    torch.save(nested, files["nested"])  # a kdsr-model file with the payload deep inside
    legit = _tiny_student().save(folder / "legit.pt")
    files["zip"] = _zip_with_data_pkl(legit, pickle.dumps(OsPayload(marker), protocol=2), folder / "zip.pt")
    training = {"format": ckpt_io.CHECKPOINT_FORMAT, "version": 1, "model": blob, "rng": OsPayload(marker)}
    files["training"] = folder / "last.pt"
    torch.save(training, files["training"])
    return files


EXPECTED_GLOBAL = {
    "os": ("posix.system", "os.system", "nt.system"),
    "subprocess": ("subprocess.call",),
    "builtins": ("builtins.open", "io.open"),
    "nested": ("subprocess.call",),
    "zip": ("posix.system", "os.system", "nt.system"),
    "training": ("posix.system", "os.system", "nt.system"),
}


@pytest.fixture()
def crafted(tmp_path):
    marker = tmp_path / "PWNED"
    return marker, _malicious_files(tmp_path / "evil", marker)


def test_kdsr_load_refuses_every_payload(crafted):
    marker, files = crafted
    for name, path in files.items():
        with pytest.raises(UnsafePickleError) as info:
            kdsr.load(path)
        message = str(info.value)
        assert info.value.refused in EXPECTED_GLOBAL[name], (name, message)
        assert info.value.refused in message and "trust_pickle=True" in message
        assert "--trust-checkpoint" in message and "\n" not in message
        assert not marker.exists(), f"the {name} payload ran"
        with pytest.raises(UnsafePickleError):
            ckpt_io.load_checkpoint(path)
        assert not marker.exists()
    with pytest.raises(ValueError, match="not a kdsr model"):  # the payloads are live: the opt-in runs one
        kdsr.load(files["zip"], trust_pickle=True)
    assert marker.exists()


def _one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def test_cli_commands_refuse_payloads(crafted, tmp_path, capsys):
    marker, files = crafted
    image = make_image_folder(tmp_path / "img", count=1, size=16) / "img0.png"
    hr_dir = image.parent
    for name in ("subprocess", "nested", "zip"):
        path = str(files[name])
        commands = [
            ["upscale", str(image), "-o", str(tmp_path / "out"), "--checkpoint", path],
            ["eval", "--checkpoint", path, "--hr-dir", str(hr_dir)],
            ["tsne", "--checkpoint", path, "--hr-dir", str(hr_dir), "-o", str(tmp_path / "t.png")],
            ["train", "--resume", path],
            [
                "train",
                "--config",
                "tiny_iso_x4_student",
                "--teacher",
                path,
                "--set",
                *tiny_overrides(hr_dir, tmp_path / "runs", iters=1),
            ],
        ]
        for argv in commands:
            assert main(argv) == 2, argv
            _one_line_error(capsys, "refusing to unpickle", "--trust-checkpoint")
            assert not marker.exists(), f"{argv[0]} ran the {name} payload"
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_every_checkpoint_command_has_the_trust_flag():
    from kdsr.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for command in ("upscale", "eval", "tsne", "train"):
        assert "--trust-checkpoint" in sub.choices[command].format_help(), command


def test_trust_pickle_loads_a_legit_legacy_pickle(tmp_path, capsys):
    model = _tiny_student()
    blob = dict(model.checkpoint(), args=argparse.Namespace(lr=1e-3))  # a foreign but harmless global
    path = tmp_path / "legacy.pt"
    torch.save(blob, path, _use_new_zipfile_serialization=False)
    with pytest.raises(UnsafePickleError, match="argparse.Namespace"):
        kdsr.load(path)
    loaded = kdsr.load(path, trust_pickle=True)
    assert "fully unpickling" in capsys.readouterr().err
    lr = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded(lr), model(lr), rtol=0, atol=0)
    out = tmp_path / "out"
    image = make_image_folder(tmp_path / "img", count=1, size=8) / "img0.png"
    argv = ["upscale", str(image), "-o", str(out), "--checkpoint", str(path), "--trust-checkpoint"]
    assert main(argv) == 0
    assert "fully unpickling" in capsys.readouterr().err and (out / "img0_x4.png").is_file()


@pytest.mark.parametrize("head", [b"\x80", b"PK\x03\x04", b"\x80\x02"])
def test_random_bytes_are_called_corrupt_not_retried(tmp_path, capsys, head):
    """A .pt of random bytes that starts like a pickle or a zip: one line saying what it is, never torch's
    advice to retry with weights_only=False; the explicit opt-in fails the same way."""
    path = tmp_path / "garbage.pt"
    path.write_bytes(head + os.urandom(4096))
    for trust in (False, True):
        with pytest.raises(ValueError) as info:
            kdsr.load(path, trust_pickle=trust)
        message = str(info.value)
        assert "not a PyTorch checkpoint, or the file is corrupt" in message and "garbage.pt" in message
        assert "weights_only" not in message and "\n" not in message
        assert not isinstance(info.value, UnsafePickleError)
    capsys.readouterr()
    image = make_image_folder(tmp_path / "img", count=1, size=8) / "img0.png"
    assert main(["upscale", str(image), "-o", str(tmp_path / "out"), "--checkpoint", str(path)]) == 2
    err = _one_line_error(capsys, "not a PyTorch checkpoint", "garbage.pt")
    assert "weights_only" not in err


def test_exported_program_with_a_payload_is_refused(tmp_path):
    """torch.export.load unpickles some .pt2 members fully; load_program checks each one first."""
    from kdsr.deploy import export_program, load_program

    marker = tmp_path / "PWNED"
    legit = tmp_path / "s.pt2"
    export_program(_tiny_student(), legit)
    payload = io.BytesIO()
    torch.save({"x": SubprocessPayload(marker)}, payload)
    evil = tmp_path / "evil.pt2"
    with zipfile.ZipFile(legit) as src, zipfile.ZipFile(evil, "w") as dst:
        members = [i for i in src.infolist() if i.filename.endswith(".pt")]
        assert members, "the .pt2 archive holds no pickled member to replace"
        for info in src.infolist():
            dst.writestr(info, payload.getvalue() if info in members else src.read(info.filename))
    with pytest.raises(UnsafePickleError, match="subprocess.call") as info:
        load_program(evil)
    assert "\n" not in str(info.value) and not marker.exists()
    (tmp_path / "junk.pt2").write_bytes(os.urandom(256))
    with pytest.raises(ValueError, match="not a torch.export archive"):
        load_program(tmp_path / "junk.pt2")
    lr = torch.rand(1, 3, 8, 8)
    torch.testing.assert_close(load_program(legit).module()(lr), export_program(_tiny_student()).module()(lr))


# ----------------------------------------------------------------------------------------------------
# safetensors model files
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [kdsr.KDSRStudent, kdsr.KDSRTeacher])
def test_safetensors_round_trip(tmp_path, cls):
    torch.manual_seed(1)
    model = cls("tiny", scale=2, n_blocks=2)
    path = model.save(tmp_path / "m.safetensors", metadata={"note": "x", "iters": [1, 2]})
    assert sorted(os.listdir(tmp_path)) == ["m.safetensors"]
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:  # plain safetensors, config as JSON metadata
        assert handle.metadata()["class"] == cls.__name__ and '"n_blocks": 2' in handle.metadata()["config"]
    loaded = kdsr.load(path)
    assert type(loaded) is cls and loaded.config == model.config
    lr = torch.rand(2, 3, 6, 7)
    inputs = (lr,) if cls is kdsr.KDSRStudent else (lr, torch.rand(2, 3, 12, 14))
    with torch.no_grad():
        torch.testing.assert_close(loaded(*inputs), model(*inputs), rtol=0, atol=0)
    renamed = tmp_path / "no_suffix"  # detected by content, not by the name
    renamed.write_bytes(path.read_bytes())
    assert kdsr.load(renamed).config == model.config


def test_shipped_weights_are_safetensors():
    names = kdsr_model.shipped_names()
    assert {"iso-x4-student", "iso-x4-teacher", "tiny-iso-x4-student", "tiny-iso-x4-teacher"} <= set(names)
    assert not [p for p in kdsr_model.WEIGHTS_DIR.iterdir() if p.suffix not in (".safetensors", ".md")]
    for name in names:  # every shipped file loads as the class its name says
        want = kdsr.KDSRTeacher if name.endswith("-teacher") else kdsr.KDSRStudent
        assert isinstance(kdsr.load(name), want), name
    assert isinstance(kdsr.load("tiny-iso-x4-teacher.safetensors"), kdsr.KDSRTeacher)


@pytest.mark.parametrize(
    "payload",
    [
        struct.pack("<Q", 12) + b"{not json!!}",
        struct.pack("<Q", 1 << 40) + b"{}",  # header length past the end of the file
        struct.pack("<Q", 2) + b"{}",  # valid, but no kdsr metadata
        b"{\x00\x00",  # shorter than the length field
    ],
)
def test_malformed_safetensors_is_rejected_cleanly(tmp_path, capsys, payload):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(payload)
    with pytest.raises(ValueError, match="safetensors"):
        kdsr.load(path)
    image = make_image_folder(tmp_path / "img", count=1, size=8) / "img0.png"
    assert main(["upscale", str(image), "-o", str(tmp_path / "out"), "--checkpoint", str(path)]) == 2
    _one_line_error(capsys, "bad.safetensors")


def test_training_checkpoints_load_with_weights_only(tmp_path):
    g = torch.Generator().manual_seed(3)
    state = {
        "format": ckpt_io.CHECKPOINT_FORMAT,
        "version": 1,
        "model": _tiny_student().checkpoint(),
        "rng": ckpt_io.capture_rng_state({"data": g}),
        "config": {"model": dict(TINY_MODEL), "train": {"lr": 1e-3}},
    }
    path = ckpt_io.save_atomic(state, tmp_path / "last.pt")
    assert torch.load(path, weights_only=True)["rng"]["python"] == state["rng"]["python"]
    assert ckpt_io.load_checkpoint(path)["format"] == ckpt_io.CHECKPOINT_FORMAT


def test_no_full_unpickling_outside_the_opt_in():
    """The only weights_only=False in the package is the trust_pickle branch of kdsr.safe_load."""
    root = Path(kdsr.__file__).resolve().parents[1]
    hits = []
    for folder in ("kdsr", "kdsr_kernels", "scripts", "experiments", "benchmarks"):
        for source in (root / folder).rglob("*.py"):
            text = source.read_text()
            if "weights_only=False" in text or "pickle.load" in text:
                hits.append(source.relative_to(root).as_posix())
    assert hits == ["kdsr/safe_load.py"]


# ----------------------------------------------------------------------------------------------------
# the one atomic writer honours the umask
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_written_files_honour_the_umask(tmp_path, umask):
    from kdsr.data.io import read_pixels, write_pixels

    image = make_image_folder(tmp_path / "img", count=1, size=8) / "img0.png"
    old = os.umask(umask)
    try:
        model = _tiny_student()
        paths = [
            model.save(tmp_path / "m.safetensors"),
            model.save(tmp_path / "m.pt"),
            ckpt_io.save_atomic({"x": torch.ones(2)}, tmp_path / "last.pt"),
            atomic_write_text(tmp_path / "r.json", "{}"),
        ]
        write_pixels(tmp_path / "up.png", read_pixels(image))
        paths.append(tmp_path / "up.png")
        json_out = tmp_path / "eval.json"
        hr_dir = make_image_folder(tmp_path / "hr", count=1, size=32)
        argv = ["eval", "--checkpoint", "bicubic", "--hr-dir", str(hr_dir), "--json", str(json_out)]
        assert main(argv) == 0
        paths.append(json_out)
    finally:
        os.umask(old)
    for path in paths:
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_atomic_write_keeps_the_old_file_on_error(tmp_path):
    path = atomic_write_text(tmp_path / "a.txt", "old")

    def fail(handle: io.BufferedWriter) -> None:
        handle.write(b"partial")
        raise RuntimeError("disk full")

    from kdsr.atomic import atomic_write

    with pytest.raises(RuntimeError):
        atomic_write(path, fail)
    assert path.read_text() == "old" and sorted(os.listdir(tmp_path)) == ["a.txt"]
