#!/usr/bin/env bash
# Issue-10 demonstration, end to end and resumable, on CPU and fully offline (the [gan] extra's ST-LPIPS VGG16
# as the perceptual network): tiny real-world teacher -> student -> GAN stage on B100, then the paired
# real-world Set14 benchmark (kdsr degrade --realworld, seed 0), PSNR/SSIM/ST-LPIPS for bicubic / student / GAN
# to docs/results/realworld/*.json, the table docs/results/realworld/table.md and docs/realworld_gan_demo.png.
# The GAN row uses last.pt (the EMA G at the end): best.pt is chosen by the classic Set5 PSNR, no measure for a GAN.
#
#   bash scripts/realworld_demo.sh          # from the repository root; ../shared/data holds B100 and Set14
#
# Each run writes runs/<name>/last.pt every 100 iterations; re-running resumes unfinished runs exactly.
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${THREADS:-1}
DATA=${DATA:-../shared/data}
OUT=docs/results/realworld
BENCH=runs/realworld_set14
export OMP_NUM_THREADS=$THREADS
kdsr() { python -m kdsr "$@"; }
mkdir -p "$OUT"

run() {  # run <name> <kdsr train args...>: start, or resume an unfinished run
  local name=$1; shift
  if [[ -f runs/$name/last.pt ]]; then kdsr train --resume "runs/$name/last.pt" --threads "$THREADS" --no-progress
  else kdsr train "$@" --threads "$THREADS" --no-progress; fi
}
run tiny_realworld_x4_teacher --config tiny_realworld_x4_teacher
run tiny_realworld_x4_student --config tiny_realworld_x4_student --teacher runs/tiny_realworld_x4_teacher/best.pt
run tiny_realworld_x4_gan --config tiny_realworld_x4_gan --teacher runs/tiny_realworld_x4_teacher/best.pt \
    --init runs/tiny_realworld_x4_student/best.pt

[[ -f $BENCH/manifest.json ]] || kdsr degrade --hr-dir "$DATA/Set14" --realworld --seed 0 -o "$BENCH" --no-progress
for pair in bicubic:bicubic student:runs/tiny_realworld_x4_student/best.pt gan:runs/tiny_realworld_x4_gan/last.pt; do
  key=${pair%%:*}; ckpt=${pair#*:}
  [[ -f $OUT/$key.json ]] || kdsr eval --checkpoint "$ckpt" --lr-dir "$BENCH/LR" --hr-dir "$BENCH/HR" --st-lpips \
      --threads "$THREADS" --no-progress --json "$OUT/$key.json"
done
python scripts/realworld_demo.py --bench "$BENCH" --student runs/tiny_realworld_x4_student/best.pt \
    --gan runs/tiny_realworld_x4_gan/last.pt
