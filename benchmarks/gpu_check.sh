#!/usr/bin/env bash
# Everything a lent GPU should measure, in one run of under 8 minutes on one GPU:
#   1. the device (JAX's view and nvidia-smi where present),
#   2. the train step of mimo (parallel scan) and gru at R2I's Memory Maze widths
#      (the mmaze preset) for T = 256, 1024 and 4096 (benchmarks/train_step.py),
#   3. 5 minutes of POPGym RepeatPreviousEasy at the popgym preset (benchmarks/learning.py).
# Everything lands in OUT (default benchmarks/results/gpu/). A failing step does not stop the
# others: summary.txt lists each step's exit status, and the script exits 1 if any failed.
# XLA_FLAGS, if set, is recorded in device.txt and applies to every step.
#
#   bash benchmarks/gpu_check.sh                # on the GPU machine
#   bash benchmarks/gpu_check.sh --tiny [OUT]   # the same steps at debug sizes, seconds, on CPU
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3

TINY=0
OUT=benchmarks/results/gpu
for arg in "$@"; do
    case "$arg" in
        --tiny) TINY=1 ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        -*) echo "error: unknown option $arg (allowed: --tiny, an output directory)" >&2; exit 2 ;;
        *) OUT=$arg ;;
    esac
done
mkdir -p "$OUT"
: > "$OUT/summary.txt"
FAILED=0
# step NAME COMMAND...: runs COMMAND, records its exit status in summary.txt, carries on.
step() {
    local name=$1 status=0
    shift
    echo "== $name"
    "$@" || status=$?
    echo "$name: exit $status" >> "$OUT/summary.txt"
    [ "$status" = 0 ] || FAILED=1
}

if [ "$TINY" = 1 ]; then
    STEP_ARGS=(--presets debug --lengths 16 --steps 1 --batch 2)
    LEARN_ARGS=(--configs popgym debug --minutes 0.15 --tag tiny --runs "$OUT/runs")
else
    STEP_ARGS=(--presets mmaze --lengths 256 1024 4096 --steps 3)
    LEARN_ARGS=(--configs popgym --minutes 5 --tag gpu)
fi

device() {
    "$PY" - <<'EOF' | tee "$OUT/device.txt"
import importlib.metadata, os
import jax
print("backend:", jax.default_backend())
for device in jax.devices():
    print("device:", device.device_kind, device)
print("versions:", ", ".join(f"{name} {importlib.metadata.version(name)}" for name in ("jax", "jaxlib", "flax", "optax")))
print("XLA_FLAGS:", os.environ.get("XLA_FLAGS", ""))
EOF
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee -a "$OUT/device.txt"
    fi
}
step device device
step "train step, mimo (parallel scan) and gru" \
    "$PY" benchmarks/train_step.py "${STEP_ARGS[@]}" --cores mimo gru --scan parallel --out "$OUT/train_step"
step "POPGym RepeatPreviousEasy" "$PY" benchmarks/learning.py popgym "${LEARN_ARGS[@]}" --fresh --out "$OUT"
cat "$OUT/summary.txt"
echo "== results in $OUT"
exit $FAILED
