#!/usr/bin/env bash
# Training on a Slurm cluster (--launcher slurm): one task per GPU.
#
#   GPUS=16 GPUS_PER_NODE=8 CPUS_PER_TASK=5 SRUN_ARGS="--quotatype=auto" \
#       sh tools/slurm_train.sh PARTITION JOB_NAME CONFIG [train.py args]
set -x
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
GPUS=${GPUS:-4}
GPUS_PER_NODE=${GPUS_PER_NODE:-4}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-""}
PYTHON=${PYTHON:-python}
DIR="$(cd "$(dirname "$0")" && pwd)"

# exec: signals sent to this script reach srun, which forwards SIGINT/SIGTERM to every task
# (and --kill-on-bad-exit ends the step when one task fails).
export PYTHONPATH="$DIR/..${PYTHONPATH:+:$PYTHONPATH}"
exec srun -p "$PARTITION" \
    --job-name="$JOB_NAME" \
    --gres=gpu:"$GPUS_PER_NODE" \
    --ntasks="$GPUS" \
    --ntasks-per-node="$GPUS_PER_NODE" \
    --cpus-per-task="$CPUS_PER_TASK" \
    --kill-on-bad-exit=1 \
    $SRUN_ARGS \
    "$PYTHON" -u "$DIR/train.py" "$CONFIG" --launcher slurm "${@:4}"
