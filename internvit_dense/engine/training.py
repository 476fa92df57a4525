"""One training run from a resolved config: what tools/train.py runs after parsing and merging.

The run holds its work dir (a lock with the holder's pid and host), resumes from inside it, checks
the memory plan before anything is built, stops on a non-finite loss and writes checkpoints
atomically (engine/hooks.py, engine/fileio.py); the Runner is mmengine's (FlexibleRunner under
DeepSpeed).
"""
import contextlib
import os.path as osp
import sys
from typing import Optional

from mmengine.config import Config

from .cli import process_rank, resolve_resume, shutdown_distributed
from .fileio import CheckpointWriteError
from .hooks import NonFiniteError, NothingToTrain, add_safety_hooks
from .work_dir import WorkDirBusy, WorkDirLock


def use_amp(cfg: Config) -> None:
    """--amp: mmengine's AmpOptimWrapper with a dynamic loss scale, unless the config already has it."""
    if cfg.optim_wrapper.get('type', 'OptimWrapper') != 'AmpOptimWrapper':
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')


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
          check_memory_plan: bool = True) -> None:
    from mmengine.registry import RUNNERS
    from mmengine.runner import FlexibleRunner, Runner

    with run_in_work_dir(cfg.work_dir):  # the lock; a NaN stop or a failed checkpoint write ends with its message
        resolve_resume(cfg, resume, deepspeed=deepspeed)
        if check_memory_plan:
            from internvit_dense.memory_plan import stop_if_it_cannot_fit
            stop_if_it_cannot_fit(cfg, config_path)  # CUDA machines only: before the model is built
        add_safety_hooks(cfg)
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
                raise SystemExit(f'--resume: {cfg.load_from} is not a checkpoint of {config_path}\'s model: {problem}. '
                                 'Resume with the config that wrote it (saved beside it in its work dir), or start '
                                 'from its weights with load_from=... instead of --resume')
        runner.train()
        shutdown_distributed()
    print(f'training finished: checkpoints and logs in {osp.abspath(cfg.work_dir)}')
