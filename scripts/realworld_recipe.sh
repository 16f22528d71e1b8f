#!/usr/bin/env bash
# Real-world KDSR recipe (issue 20), resumable: teacher -> students (KD and no-KD, two seeds each) -> GAN ->
# evals (PSNR, SSIM, ST-LPIPS on the paired real-world Set14 of `kdsr degrade --realworld --seed 0`) ->
# D read-out -> table + figure. Every stage that finished leaves a DONE file and is skipped on a rerun; a
# stage that was cut off resumes exactly from its last.pt.
#
#   RUNS=~/kdsr-runs OUT=~/kdsr-results bash scripts/realworld_recipe.sh
#
# Environment (defaults in brackets):
#   RUNS [~/kdsr-runs]     training runs (keep outside the work tree)
#   OUT  [~/kdsr-results]  test set, eval JSONs, read-out JSON, table.md, figure.png
#   DATA [../shared/data]  folder with Set5, Set14 (and the train folder of the configs)
#   TEACHER_ITERS / STUDENT_ITERS / GAN_ITERS [the configs' values]   shorter runs (e.g. a smoke test)
#   SEEDS ["1 2"]          student seeds;  THREADS [1]  torch threads
#   EXTRA_SET [""]         extra `--set key=value` overrides for every stage (e.g. a tiny test model)
set -euo pipefail

RUNS=${RUNS:-$HOME/kdsr-runs}
OUT=${OUT:-$HOME/kdsr-results}
DATA=${DATA:-../shared/data}
SEEDS=${SEEDS:-"1 2"}
THREADS=${THREADS:-1}
EXTRA_SET=${EXTRA_SET:-}
PY=${PYTHON:-python}
mkdir -p "$RUNS" "$OUT"
export OMP_NUM_THREADS=$THREADS

iters() { [ -n "${1:-}" ] && echo "train.iters=$1" || echo "seed=1"; } # seed=1: the configs' own seed

# train NAME CONFIG [extra kdsr-train args...]: start, resume, or skip a finished run.
train() {
    local name=$1 config=$2
    shift 2
    local dir="$RUNS/$name"
    if [ -f "$dir/DONE" ]; then
        echo "== $name: done, skipped"
        return
    fi
    if [ -f "$dir/last.pt" ]; then
        echo "== $name: resuming from $dir/last.pt"
        $PY -m kdsr train --resume "$dir/last.pt" --threads "$THREADS" --no-progress
    else
        echo "== $name: training"
        # shellcheck disable=SC2086
        $PY -m kdsr train --config "$config" --name "$name" --threads "$THREADS" --no-progress "$@" \
            --set logging.out_dir="$RUNS" data.val_dir="$DATA/Set5" data.val_sigma_dir="$DATA/Set14" $EXTRA_SET
    fi
    touch "$dir/DONE"
}

best() { [ -f "$RUNS/$1/best.pt" ] && echo "$RUNS/$1/best.pt" || echo "$RUNS/$1/last.pt"; }

train rw_teacher tiny_realworld_x4_teacher --set "$(iters "${TEACHER_ITERS:-}")"
TEACHER=$(best rw_teacher)
for seed in $SEEDS; do
    for kd in kl none; do
        train "rw_student_${kd}_s$seed" tiny_realworld_x4_student --teacher "$TEACHER" \
            --set "$(iters "${STUDENT_ITERS:-}")" seed="$seed" train.kd_loss="$kd"
    done
done
first_seed=${SEEDS%% *}
train rw_gan tiny_realworld_x4_gan --teacher "$TEACHER" --init "$(best "rw_student_kl_s$first_seed")" \
    --set "$(iters "${GAN_ITERS:-}")"

# ---- evaluation on the paired real-world Set14 (seed 0)
if [ ! -f "$OUT/set14_realworld/manifest.json" ]; then
    $PY -m kdsr degrade --realworld --seed 0 --hr-dir "$DATA/Set14" -o "$OUT/set14_realworld" --no-progress
fi
evaluate() { # evaluate LABEL CHECKPOINT
    [ -f "$OUT/eval_$1.json" ] && return
    $PY -m kdsr eval --checkpoint "$2" --lr-dir "$OUT/set14_realworld/LR" --hr-dir "$OUT/set14_realworld/HR" \
        --st-lpips --json "$OUT/eval_$1.json" --threads "$THREADS" --no-progress >/dev/null
}
evaluate bicubic bicubic
evaluate teacher "$TEACHER"
for seed in $SEEDS; do
    for kd in kl none; do evaluate "student_${kd}_s$seed" "$(best "rw_student_${kd}_s$seed")"; done
done
evaluate gan "$RUNS/rw_gan/last.pt" # the GAN stage keeps last.pt only

# ---- read-out of D (Set5 + Set14 crops, real-world draws, ridge grouped by image)
if [ ! -f "$OUT/readout.json" ]; then
    models=("$TEACHER") labels=(teacher)
    for seed in $SEEDS; do
        for kd in kl none; do
            models+=("$(best "rw_student_${kd}_s$seed")")
            labels+=("student_${kd}_s$seed")
        done
    done
    models+=("$RUNS/rw_gan/last.pt") labels+=(gan)
    $PY -m kdsr tsne --checkpoint "${models[@]}" --label "${labels[@]}" --hr-dir "$DATA/Set5" \
        -o "$OUT/tsne.png" --crops 8 --readout-realworld --readout-dir "$DATA/Set5" "$DATA/Set14" \
        --readout-json "$OUT/readout.json" --threads "$THREADS"
fi

$PY - "$OUT" <<'EOF'
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
readout = json.loads((out / "readout.json").read_text())
rows = ["| model | PSNR | SSIM | ST-LPIPS | R² JPEG | R² noise2 | D spread |", "|---|---|---|---|---|---|---|"]
names, psnr, lpips = [], [], []
for path in sorted(out.glob("eval_*.json")):
    label = path.stem[len("eval_"):]
    ev = next(iter(json.loads(path.read_text())["results"].values()))  # `kdsr eval --json`: one folder
    r = readout.get(label, {})
    fmt = lambda v: "–" if v is None or v == "" else f"{v:.2f}"  # noqa: E731
    spread = f"{100 * r['d_spread']:.1f} %" if "d_spread" in r else "–"
    rows.append(
        f"| {label} | {ev['psnr']:.2f} | {ev['ssim']:.4f} | {ev.get('st-lpips', float('nan')):.3f} | "
        f"{fmt(r.get('r2_jpeg'))} | {fmt(r.get('r2_noise2'))} | {spread} |"
    )
    names.append(label); psnr.append(ev["psnr"]); lpips.append(ev.get("st-lpips", float("nan")))
(out / "table.md").write_text("\n".join(rows) + "\n")
print("\n".join(rows))
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
axes[0].barh(names, psnr); axes[0].set_xlabel("PSNR (dB, Y) on real-world Set14, seed 0")
axes[1].barh(names, lpips); axes[1].set_xlabel("ST-LPIPS (lower is better)")
fig.savefig(out / "figure.png", dpi=110)
print(f"wrote {out / 'table.md'} and {out / 'figure.png'}")
EOF
