#!/usr/bin/env bash
# Tests a checkpoint on one or several machines with torchrun, as mmseg's tools/dist_test.sh does:
#   tools/dist_test.sh CONFIG CHECKPOINT GPUS_PER_MACHINE [test.py args...]
# Several machines: NNODES, NODE_RANK, MASTER_ADDR, PORT as in tools/dist_train.sh.
# PYTHON: the interpreter (default: the project's .venv/bin/python, else python on PATH).
set -euo pipefail
CONFIG=$1
CHECKPOINT=$2
GPUS=$3
shift 3
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
    "$ROOT/tools/test.py" "$CONFIG" "$CHECKPOINT" --launcher pytorch "$@"
