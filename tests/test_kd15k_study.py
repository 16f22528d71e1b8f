"""scripts/kd15k_study.sh (issue 21's KD study) end to end at two iterations per run on tiny images, then
rerun: every stage must be skipped as done, and the table must carry each setting with its seed spread."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from test_training_support import TINY_MODEL, make_image_folder

ROOT = Path(__file__).resolve().parents[1]


def test_study_runs_resumes_and_tabulates(tmp_path):
    data = tmp_path / "data"
    for seed, name in enumerate(("B100", "Set5", "Set14")):
        make_image_folder(data / name, count=2, size=136, seed=seed)  # >= the read-outs' 128-pixel HR crops
    model = " ".join(f"model.{k}={v}" for k, v in TINY_MODEL.items() if k != "variant")
    runs, out = tmp_path / "runs", tmp_path / "out"
    env = {
        **os.environ,
        "RUNS": str(runs),
        "OUT": str(out),
        "DATA": str(data),
        "TEACHER_ITERS": "2",
        "STUDENT_ITERS": "2",
        "SEEDS": "1 2",
        "KDS": "none kl klstd",
        "JOBS": "2",
        "PYTHON": sys.executable,
        "EXTRA_SET": f"{model} train.encoder_init=torch data.workers=0 data.crop_size=64 data.queue_size=8 "
        "data.val_max_images=1 data.val_sigma_crops=1 logging.tensorboard=false",
    }
    script = ["bash", str(ROOT / "scripts" / "kd15k_study.sh")]
    run = subprocess.run(script, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    for tag in ("none_s1", "kl_s2", "klstd_s1"):
        ckpt = runs / f"kd15k_{tag}" / "config.yaml"
        assert "iters: 2" in ckpt.read_text()
    assert "kd_loss: kl_std" in (runs / "kd15k_klstd_s2" / "config.yaml").read_text()
    table = (out / "table.md").read_text()
    # each KD setting is one row over two seeds; six columns, the last the D' distance
    for label in ("KD = KL at τ = 0.15", "standardised D′", "no KD"):
        row = next(line for line in table.splitlines() if label in line)
        assert "(n=2)" in row and row.count("|") == 7, row
    distances = json.loads((out / "dprime_distance.json").read_text())
    assert set(distances) == {f"student_{k}_s{s}" for k in ("none", "kl", "klstd") for s in (1, 2)}
    again = subprocess.run(script, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("done, skipped") == 7  # the teacher and six students
    assert again.stdout.count("exists, skipped") == 8  # bicubic, teacher, six students
