#!/usr/bin/env bash
# Evaluate on a Slurm cluster, as the OpenMMLab toolboxes' script of the same name:
#   [GPUS=8] [GPUS_PER_NODE=8] [CPUS_PER_TASK=5] [SRUN_ARGS=...] \
#       bash tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [test.py args]
set -euo pipefail
if [[ $# -lt 4 ]]; then
    echo "usage: bash tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [test.py args]" >&2
    exit 2
fi
PARTITION=$1; JOB_NAME=$2; CONFIG=$3; CHECKPOINT=$4; shift 4
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
read -r -a SRUN_EXTRA <<<"${SRUN_ARGS:-}"
PYTHONPATH="$(dirname "$0")/..${PYTHONPATH:+:$PYTHONPATH}" \
srun -p "$PARTITION" --job-name="$JOB_NAME" --gres=gpu:"$GPUS_PER_NODE" --ntasks="$GPUS" \
    --ntasks-per-node="$GPUS_PER_NODE" --cpus-per-task="$CPUS_PER_TASK" --kill-on-bad-exit=1 \
    "${SRUN_EXTRA[@]}" \
    python -u "$(dirname "$0")/test.py" "$CONFIG" "$CHECKPOINT" --launcher slurm "$@"
