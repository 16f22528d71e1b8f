"""One user contract for every `kdsr` command (kdsr/commands/_common.py), table-driven: the same bad inputs --
missing path, empty folder, unreadable image, bad checkpoint, unknown flag -- give the documented exit code,
one line `kdsr <command>: error: ...` (or per-file lines `kdsr <command>: <file>: <reason>`), no traceback,
no Python exception name, and no output folder left behind."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from kdsr.cli import SUBCOMMANDS, main

EXCEPTION_NAME = re.compile(r"\b\w*(Error|Exception)\b|Traceback|weights_only")

# command -> argv template per case; None: the case does not apply (the command reads no such input).
# IN: the input folder / file of the case; CKPT: a model; OUT: the output path (must not appear).
COMMANDS = {
    "upscale": ["IN", "-o", "OUT", "--model", "CKPT", "--no-progress"],
    "eval": ["--checkpoint", "CKPT", "--hr-dir", "IN", "--no-progress", "--json", "OUT/r.json"],
    "degrade": ["--hr-dir", "IN", "-o", "OUT", "--no-progress"],
    "prepare-subimages": ["IN", "OUT", "--crop", "8", "--step", "8", "--no-progress"],
    "tsne": ["--checkpoint", "CKPT", "--hr-dir", "IN", "-o", "OUT/t.png", "--crops", "2"],
    "export": ["--checkpoint", "CKPT", "--format", "torch-export", "-o", "OUT/x.pt2"],
}
READS_IMAGES = {"upscale", "eval", "degrade", "prepare-subimages", "tsne"}
READS_MODEL = {"upscale", "eval", "tsne", "export"}

CASES = {
    # case: (input, checkpoint, exit code)
    "missing path": ("MISSING", "tiny-iso-x4-student", 2),
    "empty folder": ("EMPTY", "tiny-iso-x4-student", 2),
    "unreadable image": ("GARBAGE", "tiny-iso-x4-student", 1),
    "bad checkpoint": ("GOOD", "GARBAGE_PT", 2),
}


def _table():
    rows = []
    for command, template in COMMANDS.items():
        for case, (inp, ckpt, code) in CASES.items():
            if case == "bad checkpoint" and command not in READS_MODEL:
                continue
            if case != "bad checkpoint" and command not in READS_IMAGES:
                if case == "missing path" and command == "export":
                    rows.append((command, case, template, "GOOD", "MISSING_PT", 2))
                continue
            rows.append((command, case, template, inp, ckpt, code))
    return rows


@pytest.fixture
def paths(tmp_path):
    good = tmp_path / "good"
    good.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((48, 48, 3)) * 255).astype(np.uint8)).save(good / "a.png")
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "broken.png").write_bytes(rng.bytes(300))
    (tmp_path / "empty").mkdir()
    (tmp_path / "garbage.pt").write_bytes(b"\x80\x04" + rng.bytes(300))
    return {
        "GOOD": str(good),
        "GARBAGE": str(garbage),
        "EMPTY": str(tmp_path / "empty"),
        "MISSING": str(tmp_path / "missing"),
        "MISSING_PT": str(tmp_path / "missing.pt"),
        "GARBAGE_PT": str(tmp_path / "garbage.pt"),
        "OUT": str(tmp_path / "out"),
    }


def run_cli(argv):
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


def check_stderr(command: str, err: str, code: int) -> None:
    lines = err.strip().splitlines()
    assert lines, "no message"
    assert not EXCEPTION_NAME.search(err), err
    if code == 2:
        assert len(lines) == 1 and lines[0].startswith(f"kdsr {command}: error: "), err
    else:
        assert all(line.startswith(f"kdsr {command}: ") for line in lines), err


@pytest.mark.parametrize(
    "command, case, template, inp, ckpt, code", _table(), ids=lambda v: v if isinstance(v, str) else None
)
def test_bad_input_contract(command, case, template, inp, ckpt, code, paths, capsys, one_torch_thread):
    subs = {"IN": paths[inp], "CKPT": paths.get(ckpt, ckpt)}
    argv = [command] + [subs.get(a, a).replace("OUT", paths["OUT"]) for a in template]
    assert run_cli(argv) == code, capsys.readouterr().err
    check_stderr(command, capsys.readouterr().err, code)
    assert not (paths["OUT"] and __import__("os").path.exists(paths["OUT"])), "output folder left behind"


# The smallest valid command line of each command (an unknown flag must be named even when it is complete).
MINIMAL = {
    "upscale": ["a.png", "-o", "out"],
    "eval": ["--checkpoint", "bicubic", "--hr-dir", "hr"],
    "degrade": ["--hr-dir", "hr", "-o", "out"],
    "prepare-subimages": ["in", "out"],
    "tsne": ["--checkpoint", "x", "--hr-dir", "hr"],
    "export": ["--checkpoint", "x", "--format", "onnx", "-o", "x.onnx"],
    "calibrate": ["--checkpoint", "x", "--hr-dir", "hr", "-o", "x.safetensors"],
    "inspect": ["a.png"],
}


@pytest.mark.parametrize("command", [c.replace("_", "-") for c in SUBCOMMANDS])
def test_unknown_flag_names_the_command(command, capsys):
    assert run_cli([command, *MINIMAL.get(command, []), "--bogus-flag"]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"kdsr {command}: error: "), err
    assert "--bogus-flag" in err and "Traceback" not in err


def test_garbage_checkpoint_gets_no_weights_only_advice(paths, capsys):
    assert run_cli(["export", "--checkpoint", paths["GARBAGE_PT"], "--format", "onnx", "-o", "x.onnx"]) == 2
    err = capsys.readouterr().err
    assert "weights_only" not in err and "not a valid torch file" in err
