"""What the machine's GPU software stack can run, checked when a tool starts, so that a broken stack
says so in one line instead of failing deep inside a kernel or quietly training on the CPU.

- :func:`guard_deepspeed_import`: on a GPU host without the CUDA toolkit, ``import deepspeed`` raises
  (DeepSpeed's op builders ask for the CUDA version: ``MissingCUDAException: CUDA_HOME does not exist``),
  and mmengine, which imports DeepSpeed with its runner module (``mmengine/_strategy/deepspeed.py``),
  catches only ``ImportError``. The guard turns any such failure into DeepSpeed being absent for mmengine, so every
  config without DeepSpeed still runs; a DeepSpeed config stops with :func:`deepspeed_unavailable`'s line.
- :func:`torch_gpu_mismatch`: ``nvidia-smi`` lists GPUs but torch cannot use them (a torch built for a
  newer CUDA than the driver supports, or a CPU-only torch): refused with both versions named.
- :func:`mmcv_ops_note`: torch sees a GPU but mmcv's compiled ops were built without CUDA (a wheel
  built on a CPU machine): one line with the fix.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from typing import List, Optional, Tuple

import torch

# why `import deepspeed` failed with something other than ImportError, once the guard has run
_deepspeed_error: List[BaseException] = []


def guard_deepspeed_import() -> Optional[BaseException]:
    """Imports DeepSpeed once; if that fails with anything but ImportError, removes what it left in
    ``sys.modules`` and blocks it (``sys.modules['deepspeed'] = None``: every later ``import deepspeed``
    raises ImportError, which mmengine treats as "not installed"). Returns the error, if any.

    Must run before ``mmengine.runner`` is imported (``internvit_dense.engine`` calls it first thing),
    which imports DeepSpeed through mmengine's DeepSpeed strategy.
    """
    if _deepspeed_error:
        return _deepspeed_error[0]
    if 'deepspeed' in sys.modules:  # imported already (fine), or blocked already (None)
        return None
    try:
        import deepspeed  # noqa: F401
    except ImportError:
        return None  # not installed: mmengine handles that itself
    except Exception as e:  # MissingCUDAException, OSError, RuntimeError ... from DeepSpeed's op builders
        for name in [n for n in sys.modules if n == 'deepspeed' or n.startswith('deepspeed.')]:
            del sys.modules[name]
        sys.modules['deepspeed'] = None
        _deepspeed_error.append(e)
        return e
    return None


def deepspeed_unavailable() -> Optional[str]:
    """The one line a DeepSpeed run stops with when DeepSpeed cannot be imported here, else None."""
    if not _deepspeed_error:
        return None
    e = _deepspeed_error[0]
    first = (str(e).strip().splitlines() or [''])[0]
    cuda = f' (torch is built for CUDA {torch.version.cuda})' if torch.version.cuda else ''
    return (f'DeepSpeed cannot be imported on this machine ({type(e).__name__}: {first}): it needs the CUDA '
            f'toolkit (nvcc, CUDA_HOME) of the CUDA version torch uses{cuda}; install it and set CUDA_HOME, or '
            'train this config without DeepSpeed (configs without a DeepSpeed strategy run as they are)')


# ----------------------------------------------------------------- torch vs the driver
def nvidia_smi_gpus() -> Tuple[List[str], Optional[str], Optional[str]]:
    """(GPU names, driver version, the highest CUDA version the driver supports) as ``nvidia-smi``
    reports them; no GPUs when ``nvidia-smi`` is absent or fails."""
    exe = shutil.which('nvidia-smi')
    if exe is None:
        return [], None, None
    try:
        query = subprocess.run([exe, '--query-gpu=name,driver_version', '--format=csv,noheader'],
                               capture_output=True, text=True, timeout=30)
        if query.returncode != 0:
            return [], None, None
        rows = [[c.strip() for c in line.split(',')] for line in query.stdout.splitlines() if line.strip()]
        header = subprocess.run([exe], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return [], None, None
    cuda = re.search(r'CUDA Version:\s*([\d.]+)', header)
    return [r[0] for r in rows], (rows[0][1] if rows and len(rows[0]) > 1 else None), cuda and cuda.group(1)


def gpus_hidden_on_purpose() -> bool:
    """``CUDA_VISIBLE_DEVICES=""`` (or -1): the user asked for the CPU."""
    visible = os.environ.get('CUDA_VISIBLE_DEVICES')
    return visible is not None and visible.strip() in ('', '-1')


def torch_gpu_mismatch() -> Optional[str]:
    """Why torch cannot use the GPUs nvidia-smi lists, in one line; None when it can, when there are
    none, or when they are hidden on purpose (``CUDA_VISIBLE_DEVICES=""``)."""
    if torch.cuda.is_available() or gpus_hidden_on_purpose():
        return None
    names, driver, driver_cuda = nvidia_smi_gpus()
    if not names:
        return None
    gpus = f'{len(names)} GPU{"s" if len(names) > 1 else ""} ({names[0]})'
    driver_says = f'driver {driver or "?"}, which supports CUDA up to {driver_cuda or "?"}'
    if torch.version.cuda is None:
        why = f'torch {torch.__version__} is a build without CUDA'
        fix = f'install a torch built for CUDA {driver_cuda} or older' if driver_cuda else 'install a CUDA torch'
    else:
        why = f'torch {torch.__version__} is built for CUDA {torch.version.cuda}'
        fix = (f'install a torch built for CUDA {driver_cuda} or older, or a driver that supports CUDA '
               f'{torch.version.cuda}' if driver_cuda else 'check that the driver supports that CUDA version')
    return (f'nvidia-smi sees {gpus}, {driver_says}, but torch cannot use them: {why}; {fix} '
            '(to run on the CPU on purpose, set CUDA_VISIBLE_DEVICES="")')


# ---------------------------------------------------------------------- mmcv's ops
def mmcv_compiled_cuda() -> Optional[str]:
    """The CUDA version mmcv's ``_ext`` was compiled with; ``'not available'`` for a CPU-only build,
    None when mmcv has no compiled ops at all. Needs no GPU (mmcv/ops/csrc/pytorch/info.cpp)."""
    try:
        from mmcv.ops import get_compiling_cuda_version
        return get_compiling_cuda_version()
    except (ImportError, ModuleNotFoundError):
        return None


def mmcv_ops_note() -> Optional[str]:
    """One line when torch sees a GPU but mmcv's compiled ops have no CUDA kernels, else None."""
    if not torch.cuda.is_available():
        return None
    compiled = mmcv_compiled_cuda()
    if compiled is not None and compiled != 'not available':
        return None
    what = 'mmcv has no compiled ops (mmcv-lite?)' if compiled is None else 'mmcv was built without CUDA ops'
    return (f'torch sees a GPU but {what}: deformable attention (ViT-Adapter), RoIAlign and NMS will fail on CUDA '
            f'tensors; re-run tools/setup_env.sh on a machine with nvcc (it builds mmcv with FORCE_CUDA=1)')


def check_device_environment() -> None:
    """What every tool runs at start (``engine.cli.setup_entry_point``): refuses a GPU machine whose
    torch cannot use its GPUs, and warns in one line about mmcv ops without CUDA."""
    mismatch = torch_gpu_mismatch()
    if mismatch:
        raise SystemExit(mismatch)
    note = mmcv_ops_note()
    if note:
        print(f'warning: {note}', file=sys.stderr)
