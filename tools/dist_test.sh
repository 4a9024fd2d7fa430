#!/usr/bin/env bash
# Distributed testing with torchrun (--launcher pytorch).
#
#   bash tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCS [test.py args]
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

# exec: this script's process becomes the torchrun agent, so SIGTERM/SIGINT sent to it reach
# the agent, which stops its workers; the workers themselves exit when the agent dies (even by
# kill -9: tools/*.py watch their parent, mmseg_ovseg.utils.dist.exit_with_parent).
export PYTHONPATH="$DIR/..${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --master_port="$PORT" \
    --nproc_per_node="$NPROC" \
    "$DIR/test.py" "$CONFIG" "$CHECKPOINT" --launcher pytorch "${@:4}"
