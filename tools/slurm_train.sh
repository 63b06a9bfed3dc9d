#!/usr/bin/env bash
# Train on a Slurm cluster, as the OpenMMLab toolboxes' script of the same name:
#   [GPUS=8] [GPUS_PER_NODE=8] [CPUS_PER_TASK=5] [SRUN_ARGS=...] \
#       bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py args]
# One task per GPU; mmengine reads the Slurm variables (--launcher slurm).
set -euo pipefail
if [[ $# -lt 4 ]]; then
    echo "usage: bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py args]" >&2
    exit 2
fi
PARTITION=$1; JOB_NAME=$2; CONFIG=$3; WORK_DIR=$4; shift 4
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
read -r -a SRUN_EXTRA <<<"${SRUN_ARGS:-}"
PYTHONPATH="$(dirname "$0")/..${PYTHONPATH:+:$PYTHONPATH}" \
srun -p "$PARTITION" --job-name="$JOB_NAME" --gres=gpu:"$GPUS_PER_NODE" --ntasks="$GPUS" \
    --ntasks-per-node="$GPUS_PER_NODE" --cpus-per-task="$CPUS_PER_TASK" --kill-on-bad-exit=1 \
    "${SRUN_EXTRA[@]}" \
    python -u "$(dirname "$0")/train.py" "$CONFIG" --work-dir="$WORK_DIR" --launcher slurm "$@"
