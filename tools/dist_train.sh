#!/usr/bin/env bash
# Usage: tools/dist_train.sh CONFIG NUM_PROCS [train.py args...]   (one machine, torchrun)
CONFIG=$1
NPROC=$2
shift 2
PORT=${PORT:-29500}
PYTHON=${PYTHON:-python}  # e.g. PYTHON=.venv/bin/python
exec "$PYTHON" -m torch.distributed.run --nnodes=1 --nproc_per_node="$NPROC" --master_port="$PORT" \
    "$(dirname "$0")/train.py" "$CONFIG" --launcher pytorch "$@"
