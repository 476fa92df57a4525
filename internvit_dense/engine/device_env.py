"""What the machine's GPU software stack can run, checked when a tool starts, so that a broken stack
says so in one line instead of failing deep inside a kernel or quietly training on the CPU.

- :func:`guard_deepspeed_import` (DeepSpeed imported on first use) and :func:`load_deepspeed`: on a GPU host without the CUDA toolkit, ``import deepspeed`` raises
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

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import types
from typing import List, Optional, Tuple

import torch

# why `import deepspeed` failed with something other than ImportError, once the guard has run
_deepspeed_error: List[BaseException] = []


class _DeferredDeepSpeed(types.ModuleType):
    """Stands in ``sys.modules['deepspeed']`` until something reads from DeepSpeed: then imports it for real and
    hands over. A LazyLoader module would not do: mmengine's registries call ``inspect.getmodule``, which reads
    ``__file__`` of every module in ``sys.modules``, and a LazyLoader module imports itself on any read."""

    _loads_on = ('__path__', '__version__', '__all__')  # submodule imports, version checks, star imports

    def __getattr__(self, name):  # only for what the stand-in lacks: DeepSpeed's own names
        if name.startswith('__') and name.endswith('__') and name not in self._loads_on:
            raise AttributeError(name)  # probes of module metadata (copy, pickle, inspect) need no DeepSpeed
        error = load_deepspeed()
        if error is not None:
            raise ImportError(f'DeepSpeed cannot be imported: {type(error).__name__}: {error}') from error
        real = sys.modules.get('deepspeed')
        if real is None or real is self:
            raise ImportError('DeepSpeed is not installed')
        return getattr(real, name)


def guard_deepspeed_import() -> Optional[BaseException]:
    """Defers ``import deepspeed``: a stand-in module is registered, and DeepSpeed runs its import (op builders,
    transformers, torch._dynamo: seconds per process) only when something first reads from it.

    mmengine imports DeepSpeed with its runner (``mmengine/_strategy/deepspeed.py``) but reads from it only in
    a DeepSpeed run, so a run without DeepSpeed never pays for it, nor fails on a DeepSpeed that cannot be
    imported (a GPU host without the CUDA toolkit raises ``MissingCUDAException``, which mmengine's
    ``except ImportError`` does not catch). A DeepSpeed run calls :func:`deepspeed_unavailable` first, which
    imports it for real. Must run before ``mmengine.runner`` is imported (``internvit_dense.engine`` calls it
    first thing). Returns the recorded import error, if any.
    """
    if _deepspeed_error:
        return _deepspeed_error[0]
    if 'deepspeed' in sys.modules:  # imported already (fine), deferred already, or blocked (None)
        return None
    try:
        spec = importlib.util.find_spec('deepspeed')
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return None  # not installed: mmengine handles that itself
    stand_in = _DeferredDeepSpeed('deepspeed')
    stand_in.__spec__, stand_in.__loader__, stand_in.__file__ = spec, spec.loader, spec.origin
    sys.modules['deepspeed'] = stand_in
    return None


def load_deepspeed() -> Optional[BaseException]:
    """Imports DeepSpeed for real. If that fails with anything but ImportError, removes what it left in
    ``sys.modules`` and blocks it (``sys.modules['deepspeed'] = None``: every later ``import deepspeed``
    raises ImportError, which mmengine treats as "not installed"). Returns the error, if any."""
    if _deepspeed_error:
        return _deepspeed_error[0]
    if isinstance(sys.modules.get('deepspeed'), _DeferredDeepSpeed):
        del sys.modules['deepspeed']  # the stand-in stays with whoever imported it, and forwards to the real one
    try:
        import deepspeed  # noqa: F401
    except ImportError:
        return None  # not installed: mmengine and the callers say so themselves
    except Exception as e:  # MissingCUDAException, OSError, RuntimeError ... from DeepSpeed's op builders
        for name in [n for n in sys.modules if n == 'deepspeed' or n.startswith('deepspeed.')]:
            del sys.modules[name]
        sys.modules['deepspeed'] = None
        _deepspeed_error.append(e)
        return e
    return None


def deepspeed_unavailable() -> Optional[str]:
    """The one line a DeepSpeed run stops with when DeepSpeed cannot be imported here, else None."""
    load_deepspeed()
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
