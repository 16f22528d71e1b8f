"""The conventions every `kdsr` command shares: exit codes, one-line errors, shared flags, --version, the
kernel syntax of eval/degrade, typed train flags, the resume/ran lines, and profile's interleaved timing."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
import torch
from test_training_support import make_image_folder, save_tiny_teacher, tiny_overrides

import kdsr
from kdsr.cli import SUBCOMMANDS, build_parser, main
from kdsr.commands import _common
from kdsr.commands.profile import interleaved_schedule, summarize, time_interleaved
from kdsr.device import DeviceError, pick_device
from kdsr.models.kdsr_model import shipped_names

ROOT = Path(__file__).resolve().parents[1]


def run_cli(argv: list[str]) -> int:
    """main(argv), with argparse's SystemExit turned into its exit code."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("cli") / "hr", count=2, size=32)


# ------------------------------------------------------------------------------------------ --version/help
def test_version_is_the_package_version(capsys):
    assert run_cli(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"kdsr {kdsr.__version__}"
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^version = "([^"]+)"', pyproject, re.M).group(1) == kdsr.__version__


def test_top_level_help_documents_the_exit_codes(capsys):
    assert run_cli(["--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for code in ("0 done", "1 the work failed", "2 bad usage", "130 interrupted"):
        assert code in text


def test_help_names_only_shipped_weights():
    """Each weights-style name ([tiny-]iso|realworld-xN-...) in help texts and docstrings is shipped."""
    import importlib

    names = set(shipped_names())
    assert {"tiny-iso-x4-student", "tiny-iso-x4-teacher"} <= names
    texts = []
    for command, sub in _subparsers().items():
        texts += [sub.description or "", sub.format_help()]
        texts.append(importlib.import_module(f"kdsr.commands.{command.replace('-', '_')}").__doc__ or "")
    mentioned = set(re.findall(r"\b(?:tiny-)?(?:iso|realworld)-x\d-[a-z0-9-]*[a-z0-9]", "\n".join(texts)))
    assert mentioned and mentioned <= names, mentioned - names


# Which shared flags each command has: --device where it picks a device, --no-progress where it shows bars.
SHARED = {
    "train": {"--device", "--threads", "--no-progress"},
    "eval": {"--device", "--threads", "--no-progress"},
    "upscale": {"--device", "--threads", "--no-progress"},
    "degrade": {"--threads", "--no-progress"},  # always float64 on the CPU, by design
    "tsne": {"--device", "--threads"},
    "profile": {"--device", "--threads"},
    "export": {"--threads"},  # traces on the CPU
    "prepare_subimages": {"--no-progress"},  # image I/O only
    "models": set(),  # prints the catalog
    "calibrate": {"--device", "--threads", "--no-progress"},
    "inspect": {"--device", "--threads", "--no-progress"},
}


def test_shared_flags_are_the_same_on_every_command():
    subs = _subparsers()
    assert set(SHARED) == set(SUBCOMMANDS)
    for command, sub in subs.items():
        for action in sub._actions:
            assert action.help, f"{command}: {action.option_strings or action.dest} has no help"
    for command, expected in SHARED.items():
        actions = {
            a.option_strings[0]: a for a in subs[command.replace("_", "-")]._actions if a.option_strings
        }
        present = {f for f in ("--device", "--threads", "--no-progress") if f in actions}
        assert present == expected, command
        if "--device" in actions:
            assert actions["--device"].help.startswith(f"where to run: {_common.DEVICE_HELP} (default: ")
        if "--threads" in actions:
            assert actions["--threads"].help == _common.THREADS_HELP
            assert actions["--threads"].type is _common.positive_int
        if "--no-progress" in actions:
            assert actions["--no-progress"].help == _common.NO_PROGRESS_HELP


# ------------------------------------------------------------------------------------------ exit codes
BAD_INPUT = [
    ["eval", "--checkpoint", "bicubic", "--hr-dir", "HR", "--kernels", "1.8,2.6x"],
    ["eval", "--checkpoint", "bicubic", "--hr-dir", "HR", "--kernels", "gausian8"],
    ["eval", "--checkpoint", "bicubic", "--hr-dir", "HR", "--kernels", "1.8,-2"],
    ["eval", "--checkpoint", "bicubic", "--hr-dir", "MISSING"],
    ["eval", "--checkpoint", "bicubic", "--hr-dir", "HR", "--device", "tpu"],
    ["eval", "--checkpoint", "no-such-model", "--hr-dir", "HR"],
    ["eval", "--checkpoint", "bicubic", "--hr-dir", "HR", "--kernels", "gaussian8", "--scale", "5"],
    ["degrade", "--hr-dir", "HR", "--kernels", "nan", "-o", "OUT"],
    ["degrade", "--hr-dir", "MISSING", "-o", "OUT"],
    ["degrade", "--hr-dir", "HR", "--threads", "0", "-o", "OUT"],
    ["train"],
    ["train", "--config", "no_such_config"],
    ["train", "--config", "tiny_iso_x4_teacher", "--threads", "-1"],
    ["train", "--config", "tiny_iso_x4_teacher", "--out-dir", "OUT", "--set", "data.train_dir=EMPTY"],
    ["upscale", "HR", "-o", "OUT", "--checkpoint", "tiny-iso-x4-student", "--device", "cuda:abc"],
    ["upscale", "HR", "-o", "OUT", "--model", "no-such-model"],
    ["profile", "--device", "tpu"],
    ["profile", "--lr-size", "2", "2"],
    ["profile", "--backends", "nope", "--repeats", "0"],
    ["tsne", "--checkpoint", "tiny-iso-x4-student", "--hr-dir", "MISSING"],
    ["tsne", "--checkpoint", "tiny-iso-x4-student", "--hr-dir", "HR", "--device", "gpu"],
    ["export", "--checkpoint", "no-such-model", "--format", "onnx", "-o", "OUT/x.onnx"],
    [
        "export",
        "--checkpoint",
        "tiny-iso-x4-student",
        "--format",
        "onnx",
        "-o",
        "OUT/x.onnx",
        "--threads",
        "x",
    ],
]


@pytest.mark.parametrize("argv", BAD_INPUT, ids=lambda a: " ".join(a[:1] + a[-2:]))
def test_bad_input_is_one_line_and_exit_code_2(argv, images, tmp_path, capsys):
    argv = [str(images) if a == "HR" else a for a in argv]
    argv = [str(tmp_path / "missing") if a == "MISSING" else a for a in argv]
    argv = [a.replace("OUT", str(tmp_path / "out")) for a in argv]
    (tmp_path / "empty").mkdir()
    argv = [a.replace("EMPTY", str(tmp_path / "empty")) for a in argv]
    threads = torch.get_num_threads()
    assert run_cli(argv) == _common.EXIT_USAGE
    out, err = capsys.readouterr()
    assert torch.get_num_threads() == threads
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"kdsr {argv[0]}: error: "), err
    assert "Traceback" not in out + err


def test_ctrl_c_exits_130(monkeypatch, capsys):
    import kdsr.commands.profile as profile

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(profile, "run", interrupted)
    assert run_cli(["profile"]) == _common.EXIT_INTERRUPTED
    assert capsys.readouterr().err.strip() == "kdsr profile: interrupted"


def test_one_device_picker():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto") == pick_device(None)
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("tpu", "cuda:x", "meta", ""):
        with pytest.raises(DeviceError, match="auto, cpu, cuda or cuda:N"):
            pick_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA is not available"):
            pick_device("cuda")
    else:
        with pytest.raises(DeviceError, match="does not exist"):
            pick_device(f"cuda:{torch.cuda.device_count()}")
    from kdsr.training import distributed

    assert distributed.pick_device is pick_device  # training uses the same one


# ------------------------------------------------------------------------------------------ --kernels
def test_kernels_syntax_is_shared_by_degrade_and_eval():
    subs = _subparsers()
    for command in ("degrade", "eval"):
        action = next(a for a in subs[command]._actions if "--kernels" in a.option_strings)
        assert action.type is _common.kernels_arg and action.help == _common.KERNELS_HELP
    assert _common.kernels_arg("gaussian8") == "gaussian8" and _common.kernels_arg("aniso") == "aniso"
    assert _common.kernels_arg(" 1.8, 2.6,") == [1.8, 2.6]
    assert _common.kernels_label([1.8, 2.6]) == "1.8,2.6"
    for bad in ("", ",", "1.8;2.6", "0", "-1", "inf", "gauss"):
        with pytest.raises(argparse.ArgumentTypeError, match="gaussian8"):
            _common.kernels_arg(bad)


def test_eval_takes_a_list_of_sigmas(images, tmp_path, capsys):
    json_path = tmp_path / "r.json"
    argv = ["eval", "--checkpoint", "bicubic", "--hr-dir", str(images), "--kernels", "1.8,2.6"]
    assert run_cli([*argv, "--no-progress", "--json", str(json_path)]) == 0
    out = capsys.readouterr().out
    assert "kernels=1.8,2.6" in out and re.search(r"hr\s+4\s", out)  # 2 images x 2 kernels
    assert '"kernels": "1.8,2.6"' in json_path.read_text()


# ------------------------------------------------------------------------------------------ train flags
def _print_config(argv: list[str], capsys) -> str:
    assert run_cli(["train", *argv, "--print-config"]) == 0
    return capsys.readouterr().out


def test_train_flags_stay_typed(images, tmp_path, capsys):
    import yaml

    sets = ["--set", *tiny_overrides(images, tmp_path)]
    text = _print_config(
        ["--config", "tiny_iso_x4_student", "--name", "2024", "--teacher", "a: b/last.pt", *sets], capsys
    )
    config = yaml.safe_load(text)
    assert config["name"] == "2024" and config["teacher"] == "a: b/last.pt"
    assert config["logging"]["out_dir"] == str(tmp_path)
    config = yaml.safe_load(
        _print_config(["--config", "tiny_iso_x4_teacher", "--out-dir", "007", *sets], capsys)
    )
    assert config["logging"]["out_dir"] == "007"
    # --set reads a value by its field's type: a string field keeps the text, so name=2024 is "2024"
    config = yaml.safe_load(_print_config(["--config", "tiny_iso_x4_teacher", *sets, "name=2024"], capsys))
    assert config["name"] == "2024"
    bad = tmp_path / "bad.yaml"  # in a YAML file a bare number is still a number, not a run name
    bad.write_text("name: 2024\n")
    assert run_cli(["train", "--config", str(bad), *sets]) == 2
    assert "name must be a non-empty string" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["yaml-looking", "text-file", "teacher-stage"])
def test_bad_teacher_is_one_line_and_exit_2(case, images, tmp_path, capsys):
    sets = ["--set", *tiny_overrides(images, tmp_path / "runs")]
    text_file = tmp_path / "notes.txt"
    text_file.write_text("hello\n")
    config, teacher, expected = {
        "yaml-looking": ("tiny_iso_x4_student", "a: b/last.pt", "'a: b/last.pt' not found"),
        "text-file": ("tiny_iso_x4_student", str(text_file), "is not a checkpoint"),
        "teacher-stage": (
            "tiny_iso_x4_teacher",
            "tiny-iso-x4-teacher",
            "only applies to stages student and gan",
        ),
    }[case]
    assert run_cli(["train", "--config", config, "--teacher", teacher, "--no-progress", *sets]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err and "Traceback" not in err, err
    assert "--teacher" in err
    assert not (tmp_path / "runs").exists()  # nothing trained


def test_resume_and_final_lines_count_this_process(images, tmp_path, capsys, one_torch_thread):
    sets = ["--set", *tiny_overrides(images, tmp_path, iters=3)]
    assert (
        run_cli(["train", "--config", "tiny_iso_x4_teacher", "--no-progress", "--stop-after", "1", *sets])
        == 0
    )
    out = capsys.readouterr().out
    assert re.search(r"^done: ran 1 iteration \(0 → 1 of 3\) in [\d.]+ s; checkpoints in ", out, re.M), out
    last = tmp_path / "tiny_iso_x4_teacher" / "last.pt"
    assert run_cli(["train", "--resume", str(last), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"resumed from {last} at iteration 1\n" in out
    assert re.search(r"^done: ran 2 iterations \(1 → 3 of 3\) in [\d.]+ s", out, re.M), out


def test_teacher_checkpoint_for_a_student_still_runs_print_config(tmp_path, images, capsys):
    teacher = save_tiny_teacher(tmp_path / "t.pt")
    sets = ["--set", *tiny_overrides(images, tmp_path)]
    config = _print_config(["--config", "tiny_iso_x4_student", "--teacher", str(teacher), *sets], capsys)
    assert f"teacher: {teacher}" in config


# ------------------------------------------------------------------------------------------ profile timing
def test_interleaved_schedule_is_round_robin_with_rotation():
    names = ["a", "b", "c"]
    order = interleaved_schedule(names, 4)
    assert order == ["a", "b", "c", "b", "c", "a", "c", "a", "b", "a", "b", "c"]
    rounds = [order[i : i + 3] for i in range(0, len(order), 3)]
    assert all(sorted(r) == names for r in rounds)  # every round runs each backend once
    assert [r[0] for r in rounds] == ["a", "b", "c", "a"]  # no backend always first


def test_time_interleaved_runs_the_schedule_and_drops_a_failing_backend():
    calls_made: list[str] = []

    def make(name: str):
        def call():
            calls_made.append(name)
            if name == "bad" and len(calls_made) > 3:
                raise RuntimeError("boom")

        return call

    timed: list[str] = []

    def fake_timer(fn):
        fn()
        timed.append(calls_made[-1])
        return float(len(timed))

    calls = {n: make(n) for n in ("x", "bad", "y")}
    times, failures = time_interleaved(calls, repeats=3, warmup=1, timer=fake_timer)
    assert calls_made[:3] == ["x", "bad", "y"]  # one untimed round first
    # rounds 1-3 start at bad, y, x (rotation); bad raised in round 1 and is skipped after it
    assert timed == ["y", "x", "y", "x", "x", "y"]
    assert set(times) == {"x", "y"} and all(len(t) == 3 for t in times.values())
    assert times["x"] == [2.0, 4.0, 5.0] and isinstance(failures["bad"], RuntimeError)
    assert summarize([3.0, 1.0, 2.0, 4.0]) == {"median": 2.5, "q1": 1.75, "q3": 3.25, "min": 1.0}


def test_profile_reports_median_and_spread(capsys):
    argv = ["profile", "--variant", "tiny", "--lr-size", "8", "8", "--repeats", "3", "--warmup", "0"]
    assert run_cli([*argv, "--backends", "pytorch,reference"]) == 0
    out = capsys.readouterr().out
    assert "3 rounds after 0 warm-up, each round one forward per backend, interleaved" in out
    assert "| IDR-DDC | median ms | IQR ms (q1-q3) | min ms | vs fastest |" in out
    assert re.search(r"\| reference \| [\d.]+ \| [\d.]+-[\d.]+ \| [\d.]+ \| [\d.]+x \|", out)
