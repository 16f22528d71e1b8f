#!/usr/bin/env bash
# One-shot check of the IDR-DDC kernels on a CUDA machine (torch + triton preinstalled, no internet needed).
#
#   bash benchmarks/gpu_check.sh            # from anywhere; prints everything to stdout
#   OUT=/some/dir bash benchmarks/gpu_check.sh   # also writes $OUT/gpu_table.md (+ logs of each step)
#
# Steps (each under `timeout`, cut to a 465 s deadline; a failing step is reported and the script goes on):
#   1. environment (GPU, torch, triton, nvcc, ninja)
#   2. build: pip install --no-build-isolation --no-deps -e .  (CPU + CUDA extensions, this GPU's arch only);
#      if that fails the cuda backend compiles itself on first use (kdsr_kernels/_build.py)
#   3. benchmarks/gpu_kernel_check.py: full-size correctness, bitwise-deterministic backward, and the timing
#      table (reference / triton / cuda; 48x64x64x64 and 1x64x180x320; k 3 and 7; fp32 and bf16; CUDA events,
#      L2 flushed; ms, GB/s, % of the measured copy bandwidth, speed-up) -> $OUT/gpu_table.md
#   4. operator tests on CUDA: tests/test_idr_ddc.py (every backend incl. cuda and triton vs the float64
#      oracle), then tests/test_triton_backend.py and tests/test_cpu_backend.py
#   5. benchmarks/gpu_model_check.py and benchmarks/gpu_train_check.py when present
#   6. pytest benchmarks/test_bench_idr_ddc.py --benchmark-only (pytest-benchmark view, if time is left)
# Exit code: the number of failed steps (0 = all passed).

set -u
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 99
START=$(date +%s)
FAILED=0
OUT_DIR="${OUT:-}"
[ -n "$OUT_DIR" ] && mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # works even if the install step fails
export MAX_JOBS="${MAX_JOBS:-$(nproc)}"

DEADLINE=${KDSR_GPU_CHECK_DEADLINE:-465}  # seconds: each step's timeout is cut so the script ends within 8 min

step() {  # step <seconds> <name> <command...>
  local limit=$1 name=$2
  shift 2
  local left=$((DEADLINE - ($(date +%s) - START)))
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -lt 5 ]; then
    echo "=== $name: skipped (no time left)"
    FAILED=$((FAILED + 1))
    return
  fi
  echo
  echo "=== [$(($(date +%s) - START))s] $name (timeout ${limit}s)"
  local rc
  if [ -n "$OUT_DIR" ]; then
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$OUT_DIR/$(printf '%s' "$name" | tr -c 'A-Za-z0-9_.-' '_').log"
    rc=${PIPESTATUS[0]}
  else
    timeout --kill-after=10 "$limit" "$@" 2>&1
    rc=$?
  fi
  if [ "$rc" -ne 0 ]; then
    FAILED=$((FAILED + 1))
    [ "$rc" -eq 124 ] && echo "!!! $name: timed out after ${limit}s" || echo "!!! $name: exit code $rc"
  else
    echo "--- $name: ok"
  fi
}

echo "=== environment"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 || echo "nvidia-smi failed"
python - <<'EOF' 2>&1
import shutil, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(), "capability", torch.cuda.get_device_capability())
try:
    import triton
    print("triton", triton.__version__)
except Exception as exc:
    print("triton: not importable:", exc)
print("nvcc", shutil.which("nvcc"), "ninja", shutil.which("ninja"))
EOF
if [ -z "${TORCH_CUDA_ARCH_LIST:-}" ]; then
  TORCH_CUDA_ARCH_LIST=$(python -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())" 2>/dev/null)
  export TORCH_CUDA_ARCH_LIST
fi
echo "TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-} MAX_JOBS=$MAX_JOBS"

step 180 "build" pip install --no-build-isolation --no-deps -e .
step 30 "backends" python -c "
import torch
from kdsr_kernels import ops
for dev in ('cuda', 'cpu'):
    for name in ops.BACKEND_MODULES:
        print(dev, name, ops.unavailable_reason(name, dev) or 'available')
import kdsr_kernels as kk
assert 'cuda' in kk.available_backends('cuda'), 'cuda backend unavailable'
"
TABLE_ARGS=()
[ -n "$OUT_DIR" ] && TABLE_ARGS=(--out "$OUT_DIR/gpu_table.md")
step 90 "kernel check + timing table" python benchmarks/gpu_kernel_check.py ${TABLE_ARGS[@]+"${TABLE_ARGS[@]}"}

step 100 "operator tests" python -m pytest -q -p no:cacheprovider --maxfail=20 tests/test_idr_ddc.py
step 60 "backend tests" python -m pytest -q -p no:cacheprovider --maxfail=20 \
  tests/test_triton_backend.py tests/test_cpu_backend.py -k "not jit_build"

for script in benchmarks/gpu_model_check.py benchmarks/gpu_train_check.py; do
  if [ -f "$script" ]; then
    name=$(basename "$script" .py)
    JSON_ARGS=()
    [ -n "$OUT_DIR" ] && JSON_ARGS=(--json "$OUT_DIR/$name.json")
    step 35 "$name" python "$script" ${JSON_ARGS[@]+"${JSON_ARGS[@]}"}
  else
    echo "=== $script: not present, skipped"
  fi
done

step 40 "real-world degradation B=12 GT 256" python -m pytest -q -p no:cacheprovider \
  benchmarks/test_bench_realworld.py --benchmark-only --benchmark-columns=median,min,max

ELAPSED=$(($(date +%s) - START))
if [ "$ELAPSED" -lt 380 ]; then
  step 120 "pytest-benchmark" python -m pytest -q -p no:cacheprovider benchmarks/test_bench_idr_ddc.py \
    --benchmark-only --benchmark-columns=min,median,max --benchmark-group-by=group
else
  echo "=== pytest-benchmark: skipped (${ELAPSED}s used)"
fi

echo
echo "=== done in $(($(date +%s) - START))s; failed steps: $FAILED"
[ -n "$OUT_DIR" ] && [ -f "$OUT_DIR/gpu_table.md" ] && echo "table: $OUT_DIR/gpu_table.md"
exit "$FAILED"
