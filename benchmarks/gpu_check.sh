#!/usr/bin/env bash
# Everything a lent GPU should measure, in one run of under 8 minutes on one GPU:
#   1. the device (JAX's view and nvidia-smi where present),
#   2. the train step of mimo (parallel scan) and gru at R2I's Memory Maze widths
#      (the mmaze preset) for T = 256, 1024 and 4096 (benchmarks/train_step.py; 4 sequences
#      per batch, 1 at T = 4096, whose imagination from all 16,384 states asks for 54 GiB at 4),
#   3. 5 minutes of POPGym RepeatPreviousEasy at the popgym preset (benchmarks/learning.py).
# Compiling a train step takes up to a minute, so a warm-up pass compiles the six ahead of
# time (train_step.py --compile-only: nothing run) in two lanes, one per core, each compiling
# its three lengths in turn, while the POPGym run trains; the timed pass then runs alone on
# the device and loads every program from JAX's persistent compilation cache.
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
# record NAME STATUS: lists a step's exit status in summary.txt; any failure fails the script.
record() {
    echo "$1: exit $2" >> "$OUT/summary.txt"
    [ "$2" = 0 ] || FAILED=1
}
# step NAME COMMAND...: runs COMMAND, records its exit status, carries on.
step() {
    local name=$1 status=0
    shift
    echo "== $name"
    "$@" || status=$?
    record "$name" "$status"
}

if [ "$TINY" = 1 ]; then
    LENGTHS=(16)
    STEP_ARGS=(--presets debug --steps 1 --batch 2)
    LEARN_ARGS=(--configs popgym debug --minutes 0.25 --tag tiny --runs "$OUT/runs")
else
    LENGTHS=(256 1024 4096)
    STEP_ARGS=(--presets mmaze --steps 3 --batch 4 --rows 4096)
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
# The warm-up pass and the POPGym run share the machine; nothing they time is recorded as a
# train-step figure. JAX_COMPILATION_CACHE_DIR, if set, is kept (and reused on a rerun).
if [ -z "${JAX_COMPILATION_CACHE_DIR:-}" ]; then
    JAX_COMPILATION_CACHE_DIR=$(mktemp -d)
    trap 'rm -rf "$JAX_COMPILATION_CACHE_DIR"' EXIT
fi
export JAX_COMPILATION_CACHE_DIR XLA_PYTHON_CLIENT_PREALLOCATE=false
mkdir -p "$OUT/warmup"
# compile_lane CORE: compiles CORE's train step at each length, one after the other, and
# prints "LENGTH STATUS" per length. XLA autotunes kernels on the device while it compiles;
# the platform allocator hands that memory back at once, where JAX's default pool would keep
# it (six compiles side by side, each keeping its pool, left the POPGym run out of memory).
compile_lane() {
    local core=$1 length status
    for length in "${LENGTHS[@]}"; do
        status=0
        XLA_PYTHON_CLIENT_ALLOCATOR=platform "$PY" benchmarks/train_step.py "${STEP_ARGS[@]}" \
            --lengths "$length" --compile-only --cores "$core" --scan parallel \
            --out "$OUT/warmup/train_step_${core}_T$length" \
            > "$OUT/warmup/train_step_${core}_T$length.log" 2>&1 || status=$?
        echo "$length $status"
    done > "$OUT/warmup/lane_$core.txt"
}
CORES=(mimo gru)
lanes=()
for core in "${CORES[@]}"; do
    compile_lane "$core" &
    lanes+=($!)
done
"$PY" benchmarks/learning.py popgym "${LEARN_ARGS[@]}" --fresh --out "$OUT" > "$OUT/learning_popgym.log" 2>&1 &
popgym=$!
wait "${lanes[@]}"
for core in "${CORES[@]}"; do
    while read -r length status; do
        echo "== compile, $core T=$length: exit $status"
        record "compile, $core T=$length" "$status"
    done < "$OUT/warmup/lane_$core.txt"
done
status=0
wait "$popgym" || status=$?
echo "== POPGym RepeatPreviousEasy: exit $status"
record "POPGym RepeatPreviousEasy" "$status"
tail -n 3 "$OUT/learning_popgym.log"
step "train step, mimo (parallel scan) and gru" \
    "$PY" benchmarks/train_step.py "${STEP_ARGS[@]}" --lengths "${LENGTHS[@]}" --cores "${CORES[@]}" --scan parallel \
    --out "$OUT/train_step"
cat "$OUT/summary.txt"
echo "== results in $OUT"
exit $FAILED
