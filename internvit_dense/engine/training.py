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
from .hooks import NonFiniteError, add_safety_hooks
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
    finally:
        if lock is not None:
            lock.release()


def train(cfg: Config, config_path: str, resume: Optional[str] = None, deepspeed: bool = False,
          check_memory_plan: bool = True) -> None:
    from mmengine.registry import RUNNERS
    from mmengine.runner import FlexibleRunner, Runner

    # the backbone the model is trained from: built on the meta device and filled from its checkpoint
    from internvit_dense.models.backbones.internvit import backbones_from_pretrained

    with run_in_work_dir(cfg.work_dir):  # the lock; a NaN stop or a failed checkpoint write ends with its message
        resolve_resume(cfg, resume, deepspeed=deepspeed)
        if check_memory_plan:
            from internvit_dense.memory_plan import stop_if_it_cannot_fit
            stop_if_it_cannot_fit(cfg, config_path)  # CUDA machines only: before the model is built
        add_safety_hooks(cfg)
        # Runner builds the model in its constructor, FlexibleRunner in train(): both inside
        with backbones_from_pretrained():
            if 'runner_type' in cfg:
                runner = RUNNERS.build(cfg)
            elif deepspeed:
                # runner_type stays out of the config (and of the copy saved in the work dir), so that
                # tools/test.py evaluates with the plain Runner
                runner = FlexibleRunner.from_cfg(cfg)
            else:
                runner = Runner.from_cfg(cfg)
            runner.train()
        shutdown_distributed()
    print(f'training finished: checkpoints and logs in {osp.abspath(cfg.work_dir)}')
