#!/usr/bin/env bash
# Creates .venv with the pinned OpenMMLab stack and installs internvit-dense into it.
#
# mmcv 2.1.0 has no wheel for this torch, so it is built from its sdist once
# (about 12 minutes on 2 cores) and the wheel is kept in $INTERNVIT_DENSE_CACHE;
# every later run installs that wheel in seconds.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}
CACHE=${INTERNVIT_DENSE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/internvit-dense}
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
TORCH_PAIR=("torch==2.14.1" "torchvision==0.29.1")
MMCV_VERSION=2.1.0
EXTRAS=${EXTRAS:-dev}

step() { printf '\n[setup %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

if [ ! -x "$VENV/bin/python" ]; then
    step "creating $VENV with $($PYTHON --version)"
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)

# torch first and alone: a torchvision that does not match torch fails at import
# ('operator torchvision::nms does not exist'), and timm imports torchvision.
if ! "$VENV/bin/python" -c "import torch, torchvision, sys; sys.exit(not (torch.__version__.startswith('2.14.1') and torchvision.__version__.startswith('0.29.1')))" 2>/dev/null; then
    step "installing ${TORCH_PAIR[*]}"
    "${PIP[@]}" install "${TORCH_PAIR[@]}"
fi
# mmcv's setup.py imports pkg_resources, which setuptools 80 removed.
"${PIP[@]}" install "setuptools<80" wheel ninja

if ! "$VENV/bin/python" -c "import mmcv, mmcv.ops, sys; sys.exit(mmcv.__version__ != '$MMCV_VERSION')" 2>/dev/null; then
    mkdir -p "$CACHE/wheels"
    wheel=$(ls "$CACHE"/wheels/mmcv-$MMCV_VERSION-*.whl 2>/dev/null | head -n1 || true)
    if [ -z "$wheel" ]; then
        step "building mmcv $MMCV_VERSION with ops from source (one time, ~12 min on 2 cores)"
        src=$(mktemp -d)
        "${PIP[@]}" download --no-deps --no-binary :all: --no-build-isolation -d "$src" "mmcv==$MMCV_VERSION"
        tar xzf "$src/mmcv-$MMCV_VERSION.tar.gz" -C "$src"
        # torch 2.14's headers need C++20; mmcv 2.1.0 asks for C++17.
        sed -i 's/-std=c++17/-std=c++20/g' "$src/mmcv-$MMCV_VERSION/setup.py"
        MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} "$VENV/bin/python" -m pip wheel -q --no-deps \
            --no-build-isolation -w "$CACHE/wheels" "$src/mmcv-$MMCV_VERSION"
        rm -rf "$src"
        wheel=$(ls "$CACHE"/wheels/mmcv-$MMCV_VERSION-*.whl | head -n1)
    fi
    step "installing $(basename "$wheel")"
    "${PIP[@]}" install --no-deps "$wheel"
fi

# deepspeed ships only an sdist whose setup imports torch: build it against ours.
if ! "$VENV/bin/python" -c "import deepspeed" 2>/dev/null; then
    step "installing deepspeed"
    DS_BUILD_OPS=0 "${PIP[@]}" install --no-build-isolation "deepspeed==0.19.6"
fi

step "installing internvit-dense[$EXTRAS]"
"${PIP[@]}" install --no-build-isolation -e "$ROOT[$EXTRAS]"

"$VENV/bin/python" - <<'PY'
import mmcv, mmengine, mmseg, mmdet, timm, torch
from mmcv.ops import MultiScaleDeformableAttention, batched_nms  # noqa: F401  compiled ops load
print(f'[setup] ready: torch {torch.__version__}, mmcv {mmcv.__version__}, mmengine {mmengine.__version__}, '
      f'mmseg {mmseg.__version__}, mmdet {mmdet.__version__}, timm {timm.__version__}')
PY
