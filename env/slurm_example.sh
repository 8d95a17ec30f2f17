#!/bin/bash
# A restartable recall2imagine job on SLURM, in the Apptainer image (env/r2i.def).
#
#   sbatch env/slurm_example.sh --configs mmaze --task gym_memory_maze:MemoryMaze-9x9-v0
#   sbatch --nodes 2 env/slurm_example.sh --configs mmaze        # multi-host, one process a node
#
# Arguments go to train.py. Unless given there, the script adds --logdir on node-local
# scratch, --use_lfs True --lfs_dir on durable storage (so a requeued or resubmitted job
# continues where the last one stopped), every GPU of the job as --jax.train_devices and,
# with more than one node, the --jax.distributed settings from SLURM's variables.
# Settings by environment variable (defaults below): SIF, RUN_NAME, SCRATCH_ROOT,
# DURABLE_ROOT, COORDINATOR_PORT. Adapt the #SBATCH lines to your cluster. batch_size must
# be divisible by the number of GPUs used for training (e.g. --batch_size 16 on 8 GPUs).
#
#SBATCH --job-name=r2i
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=1
#SBATCH --cpus-per-task=16
#SBATCH --time=24:00:00
#SBATCH --signal=TERM@300
#SBATCH --requeue
#SBATCH --output=r2i-%j.out

set -euo pipefail

USER="${USER:-$(id -un)}"

export SIF="${SIF:-$PWD/r2i.sif}"
export RUN_NAME="${RUN_NAME:-${SLURM_JOB_NAME:-r2i}}"
export SCRATCH_ROOT="${SCRATCH_ROOT:-/tmp/$USER}"          # node-local, gone after the job
export DURABLE_ROOT="${DURABLE_ROOT:-$HOME/r2i-runs}"      # survives the job
COORDINATOR_PORT="${COORDINATOR_PORT:-47615}"

nodes="${SLURM_JOB_NUM_NODES:-1}"
gpus_per_node="${SLURM_GPUS_ON_NODE:-1}"

# True when train.py's arguments already name this key.
given() {
    local key="$1"; shift
    local arg
    for arg in "$@"; do
        [[ "$arg" == "$key" ]] && return 0
    done
    return 1
}

extra=()
if ! given --jax.train_devices "$@"; then
    # All GPUs of the job: data parallel, each batch split across them.
    mapfile -t devices < <(seq 0 $((nodes * gpus_per_node - 1)))
    extra+=(--jax.train_devices "${devices[@]}")
    given --jax.policy_devices "$@" || extra+=(--jax.policy_devices 0)
fi
if (( nodes > 1 )) && ! given --jax.distributed "$@"; then
    coordinator="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"
    extra+=(--jax.distributed True
            --jax.coordinator_address "$coordinator:$COORDINATOR_PORT"
            --jax.num_processes "$SLURM_NTASKS")
    # --jax.process_id is per task: added inside srun below.
fi
export WITH_LOGDIR=1 WITH_LFS=1
given --logdir "$@" && WITH_LOGDIR=0
{ given --lfs_dir "$@" || given --use_lfs "$@"; } && WITH_LFS=0

# One task per node. Each task runs its own process (own logdir and lfs_dir); SIGTERM from
# --signal reaches train.py through srun and apptainer, and train.py saves before exiting.
# shellcheck disable=SC2016  # single quotes on purpose: each task expands its own SLURM_PROCID
srun --kill-on-bad-exit=1 bash -c '
    args=("$@")
    (( SLURM_NTASKS > 1 )) && args+=(--jax.process_id "$SLURM_PROCID")
    (( WITH_LOGDIR )) && args+=(--logdir "$SCRATCH_ROOT/$RUN_NAME/p$SLURM_PROCID")
    (( WITH_LFS )) && args+=(--use_lfs True --lfs_dir "$DURABLE_ROOT/$RUN_NAME/p$SLURM_PROCID")
    exec apptainer run --nv "$SIF" "${args[@]}"
' bash "$@" "${extra[@]}"
