"""Process-level workarounds for the OpenMMLab stack on a current torch, in one place.

Each one changes process-wide state (an environment variable, an allocator option, a torch
function), so none is applied on import: the tools call :func:`apply_process_workarounds` once,
at the top of ``main`` (through ``internvit_dense.engine.cli.setup_entry_point``).
"""
import ctypes
import functools
import os

import torch


def allow_full_checkpoint_loading() -> None:
    """torch >= 2.6 loads with ``weights_only=True``, which refuses the message-hub and numpy objects
    in mmengine's own checkpoints and so breaks ``--resume`` and ``load_from``.

    Upstream: open-mmlab/mmengine#1650 (mmengine 0.10.7 calls ``torch.load`` without ``weights_only``).
    Our entry points load only checkpoints the user points them at, as mmengine always did; a user who
    sets ``TORCH_FORCE_WEIGHTS_ONLY_LOAD=1`` keeps the strict loading.
    """
    if os.environ.get('TORCH_FORCE_WEIGHTS_ONLY_LOAD', '0') in ('0', ''):
        os.environ.setdefault('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')


# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_MAX = 32 << 20  # glibc's ceiling for M_MMAP_THRESHOLD on 64-bit


def keep_freed_memory_on_cpu() -> bool:
    """Stops glibc from handing freed activations back to the OS between steps on CPU.

    Without CUDA, torch's tensors come straight from malloc (no caching allocator; see
    pytorch/pytorch#41486 for the allocator behaviour). A transformer frees hundreds of MB of
    activations every step; glibc returns big blocks to the OS (munmap, heap trim) and the next
    step page-faults them back in: 4-7% of a 300M forward on this 2-core machine. With the mmap
    threshold at its ceiling and trimming off, freed blocks are reused instead; the process keeps
    its peak size, as a CUDA caching allocator does. The MALLOC_*_ environment variables, when
    set, win. Returns whether the setting took (False off glibc or with CUDA).
    """
    user_set = any(k in os.environ for k in ('MALLOC_TRIM_THRESHOLD_', 'MALLOC_MMAP_THRESHOLD_'))
    if user_set or torch.cuda.is_available():
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))


def guard_cuda_set_device() -> None:
    """mmengine 0.10's pytorch and slurm launchers (``mmengine/dist/utils.py``, ``_init_dist_pytorch``
    and ``_init_dist_slurm``) call ``torch.cuda.set_device`` unconditionally, which raises on a machine
    without CUDA; there, there is no device to select. Applied only where CUDA is absent."""
    if torch.cuda.is_available() or getattr(torch.cuda.set_device, 'cpu_guard', False):
        return
    set_device = torch.cuda.set_device

    def guarded(device):
        if torch.cuda.is_available():
            set_device(device)

    guarded.cpu_guard = True
    torch.cuda.set_device = guarded


def allow_amp_on_cpu() -> None:
    """mmengine 0.10.7's ``AmpOptimWrapper.__init__`` asserts a GPU (``assert is_cuda_available() or ...``,
    mmengine/optim/optimizer/amp_optimizer_wrapper.py), although the autocast it runs (mmengine/runner/amp.py)
    supports the CPU in bf16. Without this, ``--amp`` works on GPUs only and no CPU test can run the precision
    GPU users get. The name is read by that assertion only; applied only where CUDA is absent."""
    if torch.cuda.is_available():
        return
    from mmengine.optim.optimizer import amp_optimizer_wrapper
    amp_optimizer_wrapper.is_cuda_available = lambda: True


def remember_config_formatting() -> None:
    """mmengine 0.10.7 formats the whole config with yapf each time it asks for ``Config.pretty_text``: at start
    (log, dump, visualizer), in every checkpoint's meta and at every best-checkpoint save, 0.2-0.35 s each on a
    2-core machine (8 times in a 2-iteration run). yapf's ``FormatCode`` is a function of its text and style, so
    the one mmengine calls remembers the last texts it formatted; a changed config is a new text, formatted anew.
    """
    from mmengine.config import config as mmengine_config
    if getattr(mmengine_config.FormatCode, 'remembers', False):
        return
    format_code = mmengine_config.FormatCode

    @functools.lru_cache(maxsize=8)
    def formatted(text, style, verify):
        return format_code(text, style_config=dict(style), **({} if verify is None else dict(verify=verify)))

    def remembering_format_code(text, style_config=None, verify=None, **kwargs):
        try:
            if not kwargs and isinstance(text, str) and isinstance(style_config, (dict, type(None))):
                return formatted(text, tuple(sorted((style_config or {}).items())), verify)
        except TypeError:  # an unhashable style value: formatted without remembering
            pass
        return format_code(text, style_config=style_config, **kwargs, **({} if verify is None else dict(verify=verify)))

    remembering_format_code.remembers = True
    mmengine_config.FormatCode = remembering_format_code


def apply_process_workarounds() -> None:
    """Every workaround above, idempotent."""
    allow_full_checkpoint_loading()
    keep_freed_memory_on_cpu()
    guard_cuda_set_device()
    allow_amp_on_cpu()
    remember_config_formatting()
