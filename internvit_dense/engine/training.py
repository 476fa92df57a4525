"""One training run from a resolved config: what tools/train.py runs after parsing and merging.

The run holds its work dir (a lock with the holder's pid and host), resumes from inside it, runs the
caller's checks before anything is built (tools/train.py: the memory plan), stops on a non-finite loss
and writes checkpoints atomically (engine/hooks.py, engine/fileio.py); the Runner is mmengine's
(FlexibleRunner under DeepSpeed).
"""
import contextlib
import os.path as osp
import sys
from typing import Callable, Optional, Sequence, Tuple

import torch
from mmengine.config import Config

from .cli import process_rank, resolve_resume, shutdown_distributed
from .fileio import CheckpointWriteError
from .hooks import NonFiniteError, NothingToTrain, add_safety_hooks
from .work_dir import WorkDirBusy, WorkDirLock


def bf16_support() -> Tuple[bool, str]:
    """(whether this machine's autocast device computes in bf16, its name): a CUDA GPU from Ampere (sm80) on;
    a CPU always (torch's CPU autocast is bf16 by default)."""
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        return (major, minor) >= (8, 0), f'{torch.cuda.get_device_name()} (sm{major}{minor})'
    return True, 'the CPU'


def amp_dtype(requested: str, bf16_ok: bool, device: str) -> Tuple[str, str]:
    """``--amp`` / ``--amp bf16`` / ``--amp fp16`` -> (autocast dtype, why). bf16 wherever the device has it:
    InternViT-6B was trained in bf16 and its residual stream can leave fp16's range (max 65504)."""
    if requested == 'fp16':
        if device == 'the CPU':
            raise ValueError("--amp fp16: mmengine's autocast on a CPU is bf16 only; use --amp (bf16)")
        return 'float16', 'asked for'
    if bf16_ok:
        return 'bfloat16', f'{device} supports bf16' if requested == 'auto' else 'asked for'
    if requested == 'bf16':
        raise ValueError(f'--amp bf16: {device} has no bf16 (GPUs from Ampere, sm80, on have it); use --amp fp16')
    return 'float16', f'{device} has no bf16'


def use_amp(cfg: Config, requested: str = 'auto', bf16: Optional[Tuple[bool, str]] = None) -> str:
    """``--amp [bf16|fp16]``: mmengine's AmpOptimWrapper with an explicit dtype, the same on a CPU and a GPU.

    mmengine's default (dtype None) is fp16 on CUDA and bf16 on a CPU, so the tests would exercise one precision
    and GPU users get another. ``auto`` (a bare ``--amp``) keeps a dtype the config names, else bf16 where the
    device has it, else fp16. Returns the line :func:`train` prints at start.
    """
    wrapper = cfg.optim_wrapper
    bf16_ok, device = bf16 or bf16_support()
    if wrapper.get('type', 'OptimWrapper') != 'AmpOptimWrapper':
        wrapper.type = 'AmpOptimWrapper'
    elif requested == 'auto' and wrapper.get('dtype') is not None:
        requested = {'bfloat16': 'bf16', 'float16': 'fp16'}.get(str(wrapper.dtype).replace('torch.', ''), 'auto')
    wrapper.dtype, why = amp_dtype(requested, bf16_ok, device)
    return settle_loss_scale(cfg, why)


def settle_loss_scale(cfg: Config, why: str) -> str:
    """The GradScaler only for fp16: bf16 has fp32's range and needs no loss scaling (mmengine's
    AmpOptimWrapper builds a dynamic GradScaler whatever the dtype; ``loss_scale=dict(enabled=False)`` is its
    off switch). A loss scale the config sets explicitly is kept."""
    wrapper = cfg.optim_wrapper
    scale = wrapper.get('loss_scale', 'dynamic')
    if wrapper.dtype == 'bfloat16' and scale == 'dynamic':
        wrapper.loss_scale = dict(enabled=False)
    elif wrapper.dtype == 'float16' and isinstance(scale, dict) and scale.get('enabled') is False:
        raise ValueError('fp16 autocast without a loss scale underflows small gradients: drop '
                         'optim_wrapper.loss_scale=dict(enabled=False) or use bf16')
    scale = wrapper.get('loss_scale', 'dynamic')
    scaled = not (isinstance(scale, dict) and scale.get('enabled') is False)
    kind = {'bfloat16': 'bf16', 'float16': 'fp16'}[wrapper.dtype]
    return (f'mixed precision: autocast {kind} ({why}), '
            f'{"dynamic loss scaling (GradScaler)" if scaled else "no loss scaling"}')


def settle_amp_config(cfg: Config) -> Optional[str]:
    """A config that names AmpOptimWrapper itself (without --amp) gets the same explicit dtype and loss-scale
    rule; returns the line to print, None for a config without it."""
    if cfg.get('optim_wrapper', {}).get('type') != 'AmpOptimWrapper':
        return None
    return use_amp(cfg, 'auto')


@contextlib.contextmanager
def run_in_work_dir(work_dir: str):
    """A training run's hold on its work dir: ``work_dir/train.lock`` (rank 0 takes it; a second run
    is refused naming the holder, a dead holder's lock taken over with a warning), released at the end.
    A NaN/Inf stop or a failed checkpoint write ends the process with its message, not a traceback."""
    lock = WorkDirLock(work_dir) if process_rank() == 0 else None
    if lock is not None:
        try:
            for note in lock.acquire():
                print(f'warning: {note}', file=sys.stderr)
        except WorkDirBusy as e:
            raise SystemExit(str(e)) from None
    try:
        yield
    except (NonFiniteError, CheckpointWriteError) as e:
        raise SystemExit(f'training stopped: {e}') from None
    except NothingToTrain as e:
        raise SystemExit(f'nothing trained: {e}') from None
    finally:
        if lock is not None:
            lock.release()


def resume_mismatch(model, checkpoint: str, shown: int = 4) -> str:
    """How a training checkpoint's weights differ from ``model``'s (missing, unexpected, other shapes), or ''.

    mmengine's resume loads weights non-strictly (size-mismatch warnings), then fails on the optimizer
    ('different number of parameter groups'); the keys are compared first, as tools/test.py does."""
    import torch
    state = torch.load(checkpoint, map_location='cpu', mmap=True, weights_only=False)
    saved = state.get('state_dict', state) if isinstance(state, dict) else {}
    saved = {k[len('module.'):] if k.startswith('module.') else k: v for k, v in saved.items()}
    model = model.module if hasattr(model, 'module') else model
    own = model.state_dict()
    missing = [k for k in own if k not in saved]
    unexpected = [k for k in saved if k not in own]
    shapes = [f'{k} {tuple(saved[k].shape)} in the file, {tuple(v.shape)} in the model' for k, v in own.items()
              if k in saved and hasattr(saved[k], 'shape') and tuple(saved[k].shape) != tuple(v.shape)]
    parts = []
    for what, items in (('missing from the file', missing), ('not in the model', unexpected),
                        ('of another shape', shapes)):
        if items:
            parts.append(f'{len(items)} tensors {what} ({"; ".join(items[:shown])}{" ..." if len(items) > shown else ""})')
    return ', '.join(parts)


def train(cfg: Config, config_path: str, resume: Optional[str] = None, deepspeed: bool = False,
          before_build: Sequence[Callable[[Config, str], None]] = ()) -> None:
    """Trains ``cfg`` (read from ``config_path``) with mmengine's Runner, or its FlexibleRunner with ``deepspeed``.

    ``before_build``: checks called as ``check(cfg, config_path)`` once the resume is resolved, before the model
    is built; one stops the run by raising (tools/train.py passes the memory plan's: the engine is the layer
    below it and does not import it)."""
    from mmengine.registry import RUNNERS
    from mmengine.runner import FlexibleRunner, Runner

    # the backbone the model is trained from: built on the meta device and filled from its checkpoint
    from internvit_dense.models.backbones.internvit import backbones_from_pretrained

    with run_in_work_dir(cfg.work_dir):  # the lock; a NaN stop or a failed checkpoint write ends with its message
        resolve_resume(cfg, resume, deepspeed=deepspeed)
        for check in before_build:
            check(cfg, config_path)
        add_safety_hooks(cfg)
        # Runner builds the model in its constructor, FlexibleRunner in train(): both inside
        # and, with load_from / --resume (one file), from the training checkpoint loaded over the model
        load_from = cfg.get('load_from')
        with backbones_from_pretrained(trained=load_from if load_from and osp.isfile(load_from) else None):
            if 'runner_type' in cfg:
                runner = RUNNERS.build(cfg)
            elif deepspeed:
                # runner_type stays out of the config (and of the copy saved in the work dir), so that
                # tools/test.py evaluates with the plain Runner
                runner = FlexibleRunner.from_cfg(cfg)
            else:
                runner = Runner.from_cfg(cfg)
            if not deepspeed and cfg.get('resume') and cfg.get('load_from') and osp.isfile(cfg.load_from):
                problem = resume_mismatch(runner.model, cfg.load_from)
                if problem:
                    raise SystemExit(f'--resume: {cfg.load_from} is not a checkpoint of {config_path}\'s model: '
                                     f'{problem}. Resume with the config that wrote it (saved beside it in its work '
                                     'dir), or start from its weights with load_from=... instead of --resume')
            runner.train()
        shutdown_distributed()
    print(f'training finished: checkpoints and logs in {osp.abspath(cfg.work_dir)}')
