#!/usr/bin/env bash
# Distributed training on one or more nodes with torchrun (--launcher pytorch).
#
#   bash tools/dist_train.sh CONFIG NUM_PROCS [train.py args]
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 PORT=29500 bash tools/dist_train.sh CONFIG 8
#
# Use a different PORT for two jobs on one machine. On CPU add
# --cfg-options env_cfg.dist_cfg.backend=gloo.
set -e
CONFIG=$1
NPROC=$2
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
    "$DIR/train.py" "$CONFIG" --launcher pytorch "${@:3}"
