#!/usr/bin/env bash
# Sets up .venv (see tools/setup_env.sh) and runs the test suite.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/tools/setup_env.sh"
cd "$ROOT"
exec .venv/bin/python -m pytest -q -p no:cacheprovider tests "$@"
