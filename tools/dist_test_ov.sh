#!/usr/bin/env bash
# Open-vocabulary cross-dataset evaluation with torchrun (--launcher pytorch); rank 0 prints the
# table and writes ov_results.{json,md}.
#
#   bash tools/dist_test_ov.sh CONFIG CHECKPOINT NUM_PROCS [test_ov.py args]
#
# Environment: NNODES, NODE_RANK, PORT (29500), MASTER_ADDR (127.0.0.1), PYTHON.
set -e
CONFIG=$1
CHECKPOINT=$2
NPROC=$3
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
PYTHON=${PYTHON:-python}
DIR="$(cd "$(dirname "$0")" && pwd)"

PYTHONPATH="$DIR/..":$PYTHONPATH \
"$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --master_port="$PORT" \
    --nproc_per_node="$NPROC" \
    "$DIR/test_ov.py" "$CONFIG" "$CHECKPOINT" --launcher pytorch "${@:4}"
