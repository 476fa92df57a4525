#!/usr/bin/env bash
# Sets up .venv (see tools/setup_env.sh) and runs the test suite.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/tools/setup_env.sh"
cd "$ROOT"
# One pytest-xdist worker per core (at most 2: the budget's machine), each handed whole test files, the longest
# first (tests/conftest.py, LONGEST_FIRST); "$@" may override, e.g. -n 0 to run in one process.
WORKERS=$(nproc 2>/dev/null || echo 1)
[ "$WORKERS" -le 2 ] || WORKERS=2
exec .venv/bin/python -m pytest -q -p no:cacheprovider -n "$WORKERS" --dist loadfile --no-loadscope-reorder tests "$@"
