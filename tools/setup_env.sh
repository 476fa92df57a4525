#!/usr/bin/env bash
# Creates .venv with the pinned OpenMMLab stack and installs internvit-dense into it.
#
# mmcv 2.1.0 has no wheel for this torch, so it is built from its sdist once and the wheel is kept in
# $INTERNVIT_DENSE_CACHE/mmcv/<key>/, where <key> names the torch version, its CUDA version and the ops
# compiled in (torch2.14.1-cpu, torch2.11.0-cu13.0-sm_80_86_89_90): a wheel built on a CPU login node is
# never installed where CUDA ops are needed.
#   - no nvcc (CUDA_HOME, PATH, /usr/local/cuda): CPU ops only, ~12 min on 2 cores; where torch sees a GPU
#     this is said in one line, with the fix.
#   - nvcc found, torch built with CUDA, and a GPU seen (or FORCE_CUDA=1, for a login node building for its GPU
#     nodes): CPU and CUDA ops for TORCH_CUDA_ARCH_LIST, default "8.0;8.6;8.9;9.0" = Ampere (A100, A30; RTX 30,
#     A40, A10), Ada (L4, L40, RTX 40), Hopper (H100, H200). FORCE_CUDA=0 forces CPU ops.
# Every later run installs the cached wheel in seconds.
#
# Variables (all optional):
#   VENV=DIR           the environment (default .venv); an existing one is reused as it is
#   SYSTEM_TORCH=1     keep the torch the environment already has (a GPU image's own build) instead of
#                      installing the pinned pair; a new VENV then sees the system site-packages
#   WHEELHOUSE=DIR     offline install (no network): every wheel in DIR is installed with no index and no
#                      dependency resolution; mmcv comes from DIR/mmcv/<key>/*.whl, else is built from
#                      DIR/src/mmcv-2.1.0.tar.gz; docs/gpu.md
#   TORCH_CUDA_ARCH_LIST, MAX_JOBS, INTERNVIT_DENSE_CACHE, PYTHON
# `tools/setup_env.sh --plan` prints which mmcv this machine needs (its cache key, nvcc, the warning) for an
# existing environment and installs nothing.
set -euo pipefail
PLAN_ONLY=0
[ "${1:-}" = --plan ] && PLAN_ONLY=1

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}
CACHE=${INTERNVIT_DENSE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/internvit-dense}
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
SYSTEM_TORCH=${SYSTEM_TORCH:-0}
WHEELHOUSE=${WHEELHOUSE:-}
TORCH_PAIR=("torch==2.14.1" "torchvision==0.29.1")
MMCV_VERSION=2.1.0
EXTRAS=${EXTRAS:-dev}
# Ampere (8.0, 8.6), Ada (8.9), Hopper (9.0): the cards people train on; override with the variable.
CUDA_ARCHS=${TORCH_CUDA_ARCH_LIST:-8.0;8.6;8.9;9.0}

step() { printf '\n[setup %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

if [ "$PLAN_ONLY" = 1 ]; then
    [ -x "$VENV/bin/python" ] || die "--plan needs an existing environment: $VENV/bin/python"
elif [ ! -x "$VENV/bin/python" ]; then
    step "creating $VENV with $($PYTHON --version)"
    if [ "$SYSTEM_TORCH" = 1 ]; then "$PYTHON" -m venv --system-site-packages "$VENV"; else "$PYTHON" -m venv "$VENV"; fi
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check -q)
OFFLINE=()
if [ -n "$WHEELHOUSE" ]; then
    [ -d "$WHEELHOUSE" ] || die "WHEELHOUSE=$WHEELHOUSE is not a folder"
    WHEELHOUSE=$(cd "$WHEELHOUSE" && pwd)
    OFFLINE=(--no-index --find-links "$WHEELHOUSE")
fi

if [ "$PLAN_ONLY" = 1 ]; then
    :
elif [ "$SYSTEM_TORCH" = 1 ]; then
    "$PY" -c "import torch" 2>/dev/null || die "SYSTEM_TORCH=1 but $PY cannot import torch"
    step "keeping this environment's torch $("$PY" -c 'import torch; print(torch.__version__)') (SYSTEM_TORCH=1)"
# torch first and alone: a torchvision that does not match torch fails at import
# ('operator torchvision::nms does not exist'), and timm imports torchvision.
elif ! "$PY" -c "import torch, torchvision, sys; sys.exit(not (torch.__version__.startswith('2.14.1') and torchvision.__version__.startswith('0.29.1')))" 2>/dev/null; then
    step "installing ${TORCH_PAIR[*]}"
    "${PIP[@]}" install "${OFFLINE[@]}" "${TORCH_PAIR[@]}"
fi

if [ "$PLAN_ONLY" = 1 ]; then
    :
elif [ -n "$WHEELHOUSE" ]; then
    # Offline: the folder holds exactly the wheels this machine lacks (docs/gpu.md lists how to gather them);
    # --no-deps because a GPU image's packages (opencv-python-headless, its own torch) satisfy the needs
    # under other names. The import check at the end proves the set is complete.
    wheels=("$WHEELHOUSE"/*.whl)
    if [ -e "${wheels[0]}" ]; then
        step "installing ${#wheels[@]} wheels from $WHEELHOUSE (offline, no dependency resolution)"
        "${PIP[@]}" install --no-index --no-deps --no-compile "${wheels[@]}"
    fi
else
    # mmcv's setup.py imports pkg_resources, which setuptools 80 removed.
    "${PIP[@]}" install "setuptools<80" wheel ninja
fi

# ---- mmcv: which ops this machine needs, and the cache key that says so ----
read -r TORCH_VERSION TORCH_CUDA GPU_SEEN < <("$PY" -c "import torch
print(torch.__version__.split('+')[0], torch.version.cuda or 'none', int(torch.cuda.is_available()))")
NVCC=""
if [ -n "${CUDA_HOME:-}" ]; then candidates=("$CUDA_HOME")  # torch's rule too: CUDA_HOME, when set, is the toolkit
else candidates=("${CUDA_PATH:-}" "$(dirname "$(dirname "$(command -v nvcc 2>/dev/null || echo /x/x/x)")")" /usr/local/cuda); fi
for candidate in "${candidates[@]}"; do
    if [ -n "$candidate" ] && [ -x "$candidate/bin/nvcc" ]; then NVCC="$candidate/bin/nvcc"; export CUDA_HOME="$candidate"; break; fi
done
NO_CUDA_OPS_LINE="torch $TORCH_VERSION sees a GPU but mmcv has CPU ops only: the ViT-Adapter, RoIAlign and NMS will fail on CUDA tensors. Fix: install the CUDA toolkit $TORCH_CUDA (nvcc; or point CUDA_HOME at it) and re-run tools/setup_env.sh"
# CUDA ops where torch has CUDA, nvcc exists and either a GPU is seen or FORCE_CUDA=1 asks (mmcv's own switch):
# a CPU machine that merely has the toolkit (a CI runner, a laptop) keeps the ~12-minute CPU build, and a login
# node builds for its GPU nodes with FORCE_CUDA=1.
if [ "$TORCH_CUDA" != none ] && [ -n "$NVCC" ] && [ "${FORCE_CUDA:-}" != 0 ] && { [ "$GPU_SEEN" = 1 ] || [ "${FORCE_CUDA:-}" = 1 ]; }; then
    OPS="cu$TORCH_CUDA-sm_$(echo "$CUDA_ARCHS" | tr -d '.' | tr '+;, ' '-___')"
    WANT_CUDA=1
else
    OPS=cpu
    WANT_CUDA=0
fi
MMCV_KEY="torch$TORCH_VERSION-$OPS"
if [ "$PLAN_ONLY" = 1 ]; then
    echo "[setup] mmcv key: $MMCV_KEY"
    echo "[setup] nvcc: ${NVCC:-none}"
    if [ -n "$NVCC" ] && [ "$WANT_CUDA" = 0 ] && [ "$GPU_SEEN" = 0 ]; then echo "[setup] no GPU here: CPU ops (FORCE_CUDA=1 builds the CUDA ops for GPU nodes)"; fi
    echo "[setup] cache: $CACHE/mmcv/$MMCV_KEY"
    if [ "$GPU_SEEN" = 1 ] && [ "$WANT_CUDA" = 0 ]; then echo "[setup] WARNING: $NO_CUDA_OPS_LINE"; fi
    exit 0
fi

mmcv_ops() {  # prints cpu / cuda / missing for the installed mmcv
    "$PY" - <<PY 2>/dev/null || echo missing
import mmcv, sys
if mmcv.__version__ != '$MMCV_VERSION':
    print('missing'); sys.exit()
from mmcv.ops import get_compiling_cuda_version
print('cpu' if get_compiling_cuda_version() == 'not available' else 'cuda')
PY
}
installed=$(mmcv_ops)
if [ "$installed" = missing ] || { [ "$WANT_CUDA" = 1 ] && [ "$installed" != cuda ]; }; then
    wheel=""
    for dir in ${WHEELHOUSE:+"$WHEELHOUSE/mmcv/$MMCV_KEY"} "$CACHE/mmcv/$MMCV_KEY"; do
        wheel=$(ls "$dir"/mmcv-$MMCV_VERSION-*.whl 2>/dev/null | head -n1 || true)
        [ -n "$wheel" ] && break
    done
    if [ -z "$wheel" ]; then
        src=$(mktemp -d)
        if [ -n "$WHEELHOUSE" ]; then
            [ -f "$WHEELHOUSE/src/mmcv-$MMCV_VERSION.tar.gz" ] || die "offline (WHEELHOUSE) and no mmcv wheel in $WHEELHOUSE/mmcv/$MMCV_KEY/ or $CACHE/mmcv/$MMCV_KEY/, nor its source $WHEELHOUSE/src/mmcv-$MMCV_VERSION.tar.gz (pip download --no-binary :all: mmcv==$MMCV_VERSION)"
            cp "$WHEELHOUSE/src/mmcv-$MMCV_VERSION.tar.gz" "$src/"
        else
            "${PIP[@]}" download --no-deps --no-binary :all: --no-build-isolation -d "$src" "mmcv==$MMCV_VERSION"
        fi
        tar xzf "$src/mmcv-$MMCV_VERSION.tar.gz" -C "$src"
        # torch 2.14's headers need C++20; mmcv 2.1.0 asks for C++17.
        sed -i 's/-std=c++17/-std=c++20/g' "$src/mmcv-$MMCV_VERSION/setup.py"
        mkdir -p "$CACHE/mmcv/$MMCV_KEY"
        if [ "$WANT_CUDA" = 1 ]; then
            step "building mmcv $MMCV_VERSION with CPU and CUDA ops for archs $CUDA_ARCHS ($NVCC; one time, long: MAX_JOBS=${MAX_JOBS:-$(nproc)})"
            FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$CUDA_ARCHS" MMCV_CUDA_ARGS="${MMCV_CUDA_ARGS:--std=c++20}" \
            MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} "$PY" -m pip wheel -q --no-deps \
                --no-build-isolation -w "$CACHE/mmcv/$MMCV_KEY" "$src/mmcv-$MMCV_VERSION"
        else
            step "building mmcv $MMCV_VERSION with CPU ops from source (one time, ~12 min on 2 cores)"
            # mmcv's setup.py picks CUDA whenever torch sees a GPU and then needs CUDA_HOME: hide the GPU.
            CUDA_VISIBLE_DEVICES="" FORCE_CUDA=0 MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
                "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$CACHE/mmcv/$MMCV_KEY" "$src/mmcv-$MMCV_VERSION"
        fi
        rm -rf "$src"
        wheel=$(ls "$CACHE/mmcv/$MMCV_KEY"/mmcv-$MMCV_VERSION-*.whl | head -n1)
    fi
    step "installing mmcv ($MMCV_KEY): $(basename "$wheel")"
    "${PIP[@]}" install --no-deps --force-reinstall "$wheel"
fi

# deepspeed ships only an sdist whose setup imports torch: build it against ours. Its setup.py asks for the
# CUDA version (CUDA_HOME) whenever torch sees a GPU, even with DS_BUILD_OPS=0: without nvcc, hide the GPU.
if ! "$PY" -c "import deepspeed" 2>/dev/null; then
    [ -z "$WHEELHOUSE" ] || die "offline (WHEELHOUSE) and deepspeed is not importable: add its wheel to $WHEELHOUSE (docs/gpu.md)"
    step "installing deepspeed"
    if [ -n "$NVCC" ]; then
        DS_BUILD_OPS=0 "${PIP[@]}" install --no-build-isolation "deepspeed==0.19.6"
    else
        CUDA_VISIBLE_DEVICES="" DS_BUILD_OPS=0 "${PIP[@]}" install --no-build-isolation "deepspeed==0.19.6"
    fi
fi

if [ -n "$WHEELHOUSE" ] || [ "$SYSTEM_TORCH" = 1 ]; then
    # The project's own pins name torch 2.14.1; with another torch its needs come from the wheelhouse / image.
    step "installing internvit-dense without dependency resolution (WHEELHOUSE or SYSTEM_TORCH)"
    "${PIP[@]}" install "${OFFLINE[@]}" --no-deps --no-build-isolation -e "$ROOT"
else
    step "installing internvit-dense[$EXTRAS]"
    "${PIP[@]}" install --no-build-isolation -e "$ROOT[$EXTRAS]"
fi

# panopticapi (COCO panoptic PQ: mmdet's CocoPanopticMetric and LoadPanopticAnnotations import it; the synthetic COCO
# set writes its PNGs with it). cocodataset's panopticapi is not on PyPI; panopticapi-lite 0.2.0 is its code unchanged
# under the same module name. It cannot be a setup.py requirement: its metadata pins numpy<2 (and asks for
# scikit-image and matplotlib it never imports), so pip would downgrade this environment's numpy 2; its code runs on
# numpy 2. --no-deps installs the code alone. Offline, its wheel comes with the wheelhouse's (installed above).
if ! "$PY" -c "import panopticapi.evaluation" 2>/dev/null; then
    [ -z "$WHEELHOUSE" ] || die "offline (WHEELHOUSE) and panopticapi is not importable: add panopticapi_lite-0.2.0-py3-none-any.whl to $WHEELHOUSE (docs/gpu.md)"
    step "installing panopticapi-lite 0.2.0 (--no-deps)"
    "${PIP[@]}" install --no-deps "panopticapi-lite==0.2.0"
fi

NO_CUDA_OPS_LINE="$NO_CUDA_OPS_LINE" "$PY" - <<'PY'
import os
import mmcv, mmengine, mmseg, mmdet, timm, torch
from mmcv.ops import MultiScaleDeformableAttention, batched_nms, get_compiling_cuda_version  # noqa: F401  compiled ops load
ops = 'CPU only' if get_compiling_cuda_version() == 'not available' else f'CPU + CUDA {get_compiling_cuda_version()}'
print(f'[setup] ready: torch {torch.__version__}, mmcv {mmcv.__version__} ({ops} ops), mmengine {mmengine.__version__}, '
      f'mmseg {mmseg.__version__}, mmdet {mmdet.__version__}, timm {timm.__version__}')
if torch.cuda.is_available():
    if ops == 'CPU only':
        print('[setup] WARNING:', os.environ['NO_CUDA_OPS_LINE'])
    else:  # one compiled op on the GPU: a wheel without CUDA ops, or for another arch, fails here and not in training
        from mmcv.ops import nms
        boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.], [20., 20., 30., 30.]], device='cuda')
        _, keep = nms(boxes, torch.tensor([0.9, 0.8, 0.7], device='cuda'), 0.5)
        assert keep.tolist() == [0, 2], keep
        print(f'[setup] mmcv CUDA ops run on {torch.cuda.get_device_name(0)} (nms on cuda:0)')
PY
