#!/usr/bin/env bash
# Issue-12 reproduction, end to end and resumable: teacher; students KD = kl, l1, l2, none from the same init
# and batches per seed, two seeds each; three variants of ours, two seeds each:
#   klt2      KL at τ = 2.0 (the paper's τ = 0.15 saturates the softmax of this teacher's D'),
#   klwarm    KL after a 500-iteration KD-only encoder warm-up (the reference's aniso schedule; the SR network
#             still gets 1,500 iterations),
#   kltorch / nonetorch   KL / no KD with the reference's PyTorch-default student encoder init (can KD form
#             the representation that L1 alone does not form from that init?);
# Set5+Set14 Gaussian8 x4 evals to JSON; σ read-out R² per model; t-SNE plot; D' distances, D's worth in dB
# and the softmax entropy of the teacher's D'; the results table (with seed spread) regenerated from the JSONs.
#
#   bash scripts/reproduce_small.sh             # from the repository root; ../shared/data holds B100/Set5/Set14
#   JOBS=2 THREADS=1 bash scripts/reproduce_small.sh
#
# Every run writes runs/<name>/last.pt every 100 iterations; re-running this script resumes each unfinished run
# exactly (kdsr train --resume) and skips finished ones and existing eval JSONs. Logs: runs/logs/<name>.log.
set -euo pipefail
cd "$(dirname "$0")/.."

THREADS=${THREADS:-1}          # torch threads per training run
JOBS=${JOBS:-2}                # training runs at a time
DATA=${DATA:-../shared/data}
OUT=${OUT:-docs/results/small}
TEACHER_SET=${TEACHER_SET:-}   # extra --set overrides for the teacher (pilot findings), e.g. "train.iters=6000"
STUDENT_SET=${STUDENT_SET:-}
export OMP_NUM_THREADS=$THREADS
mkdir -p runs/logs "$OUT"
kdsr() { python -m kdsr "$@"; }

finished() {  # finished <run name>: the run's last.pt reached its configured iterations
  python - "$1" <<'PY'
import sys
from kdsr.training.checkpoint import load_checkpoint
try:
    ckpt = load_checkpoint(f"runs/{sys.argv[1]}/last.pt")
except Exception:
    sys.exit(1)
sys.exit(0 if ckpt["iteration"] >= ckpt["config"]["train"]["iters"] else 1)
PY
}

train() {  # train <run name> <kdsr train args...>: start, resume or skip
  local name=$1; shift
  if finished "$name"; then echo "[skip] $name is finished"; return 0; fi
  if [[ -f runs/$name/last.pt ]]; then
    echo "[resume] $name"
    kdsr train --resume "runs/$name/last.pt" --threads "$THREADS" --no-progress >>"runs/logs/$name.log" 2>&1
  else
    echo "[start] $name"
    kdsr train "$@" --threads "$THREADS" --no-progress --set name="$name" >>"runs/logs/$name.log" 2>&1
  fi
}

throttle() { while (( $(jobs -rp | wc -l) >= JOBS )); do wait -n; done; }

# ---- stage 1: teacher (TEACHER=<file> skips it and distils from that file instead, e.g. the shipped
# small-iso-x4-teacher weights, which are this stage's output: a fresh machine need not retrain it)
if [[ -z ${TEACHER:-} ]]; then
  # shellcheck disable=SC2086
  train small_iso_x4_teacher --config small_iso_x4_teacher $TEACHER_SET
  TEACHER=runs/small_iso_x4_teacher/last.pt
fi

# ---- stage 2: students (same init and batches per seed; the KD loss is the only difference)
STUDENTS=(kl_s1 none_s1 kl_s2 none_s2 l1_s1 l2_s1 klt2_s1 l1_s2 l2_s2 klt2_s2 klwarm_s1 klwarm_s2
          kltorch_s1 nonetorch_s1 kltorch_s2 nonetorch_s2)
for tag in "${STUDENTS[@]}"; do
  kd=${tag%_s*}; seed=${tag#*_s}; extra=""
  case $kd in
    klt2) kd=kl; extra="train.temperature=2.0" ;;
    klwarm) kd=kl; extra="train.iters=2000 train.encoder_iters=500" ;;
    kltorch | nonetorch) kd=${kd%torch}; extra="train.encoder_init=torch" ;;
  esac
  throttle
  # shellcheck disable=SC2086
  train "small_iso_x4_student_$tag" --config small_iso_x4_student --teacher "$TEACHER" \
      --set train.kd_loss="$kd" seed="$seed" $extra $STUDENT_SET &
done
wait

# ---- evaluation: Set5 + Set14, Gaussian8 x4 (Y PSNR/SSIM), one JSON per model
evaluate() {  # evaluate <checkpoint or 'bicubic'> <json>
  [[ -f $2 ]] && { echo "[skip] $2 exists"; return 0; }
  kdsr eval --checkpoint "$1" --hr-dir "$DATA/Set5" "$DATA/Set14" --kernels gaussian8 --scale 4 \
      --threads "$THREADS" --json "$2" >>"runs/logs/eval.log" 2>&1
}
evaluate bicubic "$OUT/bicubic.json" &
evaluate "$TEACHER" "$OUT/teacher.json" &
wait
for tag in "${STUDENTS[@]}"; do
  throttle
  evaluate "runs/small_iso_x4_student_$tag/last.pt" "$OUT/student_$tag.json" &
done
wait

# ---- sigma read-out (Set14, sigma 0.2-4.0, GroupKFold by image) per model + t-SNE of D (Gaussian8 on B100)
CKPTS=("$TEACHER"); LABELS=("teacher")
for tag in "${STUDENTS[@]}"; do CKPTS+=("runs/small_iso_x4_student_$tag/last.pt"); LABELS+=("student_$tag"); done
kdsr tsne --checkpoint "${CKPTS[@]}" --label "${LABELS[@]}" --hr-dir "$DATA/Set14" --crops 40 --lr-patch 32 \
    --readout-dir "$DATA/Set14" --readout-json "$OUT/sigma_r2.json" --threads "$THREADS" -o /tmp/kdsr_tsne_all.png
kdsr tsne --checkpoint "$TEACHER" runs/small_iso_x4_student_kl_s1/last.pt runs/small_iso_x4_student_none_s1/last.pt \
    --label "teacher (sees HR)" "student, KD = KL" "student, no KD" --hr-dir "$DATA/B100" --crops 40 \
    --lr-patch 32 --readout-dir "$DATA/Set14" --threads "$THREADS" -o docs/small_iso_x4_tsne.png

# ---- how close each student's D' is to the teacher's (KL at τ 0.15 and L1, Set14 crops x 8 σ)
S_CKPTS=(); for tag in "${STUDENTS[@]}"; do S_CKPTS+=("runs/small_iso_x4_student_$tag/last.pt"); done
python experiments/student_teacher_distance.py --teacher "$TEACHER" --students "${S_CKPTS[@]}" --labels "${STUDENTS[@]}" \
    --json "$OUT/dprime_distance.json"
# ---- what D is worth to each SR network (own D, a constant mean D, the teacher's D), seed-1 students, Set5
V_TAGS=(); V_CKPTS=(); for tag in "${STUDENTS[@]}"; do
  [[ $tag == *_s1 ]] && { V_TAGS+=("$tag"); V_CKPTS+=("runs/small_iso_x4_student_$tag/last.pt"); }
done
python experiments/dprime_value.py --teacher "$TEACHER" --students "${V_CKPTS[@]}" --labels "${V_TAGS[@]}" \
    --hr-dir "$DATA/Set5" --json "$OUT/dprime_value.json"
# ---- how peaked the teacher's softmax(D'/τ) is at the temperatures tried (entropy, top-1 probability)
python experiments/dprime_softmax_entropy.py --checkpoint "$TEACHER" --json "$OUT/dprime_entropy.json"

# ---- the shipped student (kdsr.load("iso-x4-student")): the best setting above, no KD, trained 4x longer
# (6,000 iterations, lr halved every 2,000) from the same teacher, seed 2 (the better no-KD seed at 1,500)
train small_iso_x4_student_long --config small_iso_x4_student --teacher "$TEACHER" \
    --set train.kd_loss=none seed=2 train.iters=6000 train.lr_decay_iters=2000
evaluate runs/small_iso_x4_student_long/last.pt "$OUT/shipped_student.json"

# ---- table from the JSONs (mean over seeds, spread = max - min, gaps vs no-KD and bicubic)
python scripts/small_results_table.py "$OUT" | tee "$OUT/table.md"
