#!/usr/bin/env bash
# Trains on one or several machines with torchrun, as mmseg's tools/dist_train.sh does:
#   tools/dist_train.sh CONFIG GPUS_PER_MACHINE [train.py args...]
# Several machines: the same command on each, with
#   NNODES (machines, default 1), NODE_RANK (this machine's index, 0..NNODES-1; default 0),
#   MASTER_ADDR (the address of machine 0, reachable from all; default 127.0.0.1), PORT (default 29500).
# PYTHON: the interpreter (default: the project's .venv/bin/python, else python on PATH).
set -euo pipefail
CONFIG=$1
GPUS=$2
shift 2
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python; fi
fi
exec "$PYTHON" -m torch.distributed.run --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" \
    --master_port="$PORT" --nproc_per_node="$GPUS" \
    "$ROOT/tools/train.py" "$CONFIG" --launcher pytorch "$@"
