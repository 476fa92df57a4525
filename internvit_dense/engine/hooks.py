"""Hooks that keep a long run from losing or corrupting what it has done.

``SafeCheckpointHook`` is mmengine's ``CheckpointHook`` with four guarantees added; ``StopOnNonFiniteLoss``
ends a run at its first NaN/Inf loss. ``add_safety_hooks`` puts both into a training config (tools/train.py
calls it), so every config gets them without naming them.
"""
import logging
import math
import os.path as osp
import random
from typing import Dict, List, Optional

import numpy as np
import torch
from mmengine.dist import all_gather_object, get_rank, get_world_size, is_distributed
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS

from . import fileio  # noqa: F401  registers the 'atomic_local' file backend
from .work_dir import inside

RANDOM_STATES = 'random_states'  # message-hub key: saved in every checkpoint, restored on resume


class NonFiniteError(RuntimeError):
    """Training produced a NaN/Inf loss, gradient norm or weight; nothing non-finite was saved."""


def _unwrap(model):
    return model.module if hasattr(model, 'module') else model


def non_finite_tensors(model: torch.nn.Module) -> List[str]:
    """Names of the floating-point parameters and buffers holding a NaN or Inf (ZeRO-3: this rank's
    partition, ``ds_tensor``)."""
    bad = []
    for name, t in list(_unwrap(model).named_parameters()) + list(_unwrap(model).named_buffers()):
        t = getattr(t, 'ds_tensor', t)
        if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
            bad.append(name)
    return bad


def _last_saved(runner) -> str:
    last = runner.message_hub.get_info('last_ckpt')
    return f'the last checkpoint saved is {last}' if last else 'no checkpoint has been saved yet'


def _advice(runner) -> str:
    return (f'{_last_saved(runner)}. Lower the learning rate (optim_wrapper.optimizer.lr) or clip gradients '
            '(optim_wrapper.clip_grad=dict(max_norm=...)), then --resume from it')


def _random_states() -> dict:
    state = dict(python=random.getstate(), numpy=np.random.get_state(), torch=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def _set_random_states(state: dict) -> None:
    random.setstate(state['python'])
    np.random.set_state(state['numpy'])
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


class _RestoreAfterSkip:
    """The train loop's data iterator, restoring the random states once the ``skip`` batches a resumed
    IterBasedTrainLoop replays have been drawn. With ``num_workers=0`` the data pipeline draws from
    the same random state as drop path and dropout; restored any earlier, the replay would consume it."""

    def __init__(self, iterator, skip: int, state: dict):
        self.iterator, self.skip, self.state = iterator, skip, state

    def __iter__(self):
        return self

    def __next__(self):
        if self.state is not None and self.skip <= 0:
            _set_random_states(self.state)
            self.state = None
        self.skip -= 1
        return next(self.iterator)

    def __getattr__(self, name):
        return getattr(self.iterator, name)


@HOOKS.register_module()
class SafeCheckpointHook(CheckpointHook):
    """mmengine's ``CheckpointHook``, plus:

    1. Files are written atomically (temporary name, fsync, rename: ``engine/fileio.py``); a failed
       write names the file and the free space and leaves no partial file.
    2. Nothing outside the work dir is touched: a best-checkpoint record that points elsewhere (a work
       dir copied or moved after a run) is looked up by its name inside the work dir, or forgotten.
    3. A model holding a NaN/Inf is never saved nor ranked as best: the run stops with
       :class:`NonFiniteError` naming the iteration and the first bad tensors.
    4. Each checkpoint carries every process's python/numpy/torch random states; a resumed run
       restores them, so drop path and dropout draw the masks the uninterrupted run would have drawn.
    """

    def __init__(self, *args, backend_args: Optional[dict] = None, file_client_args: Optional[dict] = None,
                 out_dir: Optional[str] = None, **kwargs):
        local = out_dir is None or '://' not in str(out_dir)
        if backend_args is None and file_client_args is None and local:
            backend_args = dict(backend='atomic_local')
        super().__init__(*args, backend_args=backend_args, file_client_args=file_client_args, out_dir=out_dir,
                         **kwargs)
        self._checked_iter = None

    # 2. work dir only ------------------------------------------------------------------------------
    def before_train(self, runner) -> None:
        super().before_train(runner)
        self._restore_random_states(runner)
        if self.save_best is None:
            return
        if len(self.key_indicators) == 1:
            self.best_ckpt_path = self._rebase(runner, 'best_ckpt', self.best_ckpt_path)
        else:
            for key in self.key_indicators:
                self.best_ckpt_path_dict[key] = self._rebase(runner, f'best_ckpt_{key}',
                                                             self.best_ckpt_path_dict.get(key))

    def _rebase(self, runner, info_key: str, path: Optional[str]) -> Optional[str]:
        if not path or not isinstance(self.out_dir, str) or '://' in self.out_dir or inside(path, self.out_dir):
            return path
        local = osp.join(self.out_dir, osp.basename(str(path).rstrip('/')))
        found = osp.exists(local)
        print_log(f'the best-checkpoint record names {path}, outside {self.out_dir} (work dir copied or moved?): '
                  + (f'using {local}' if found else 'no file of that name here; the record is dropped')
                  + '; files outside the work dir are never read, rotated or deleted',
                  logger='current', level=logging.WARNING)
        new = local if found else None
        runner.message_hub.update_info(info_key, new)
        return new

    # 3. never save a non-finite model --------------------------------------------------------------
    def _refuse_non_finite(self, runner) -> None:
        if self._checked_iter == runner.iter:
            return
        bad = non_finite_tensors(runner.model)
        if bad:
            shown = ', '.join(bad[:5]) + (f' and {len(bad) - 5} more' if len(bad) > 5 else '')
            raise NonFiniteError(f'the weights are not finite after iteration {runner.iter + 1} ({len(bad)} tensors: '
                                 f'{shown}); not saving them. {_advice(runner)}')
        self._checked_iter = runner.iter

    def _save_checkpoint(self, runner) -> None:
        self._refuse_non_finite(runner)
        self._store_random_states(runner)
        super()._save_checkpoint(runner)

    def _save_best_checkpoint(self, runner, metrics) -> None:
        if self.save_best is None or not metrics:
            return
        self._refuse_non_finite(runner)
        keys = self.key_indicators if self.key_indicators != ['auto'] else list(metrics)[:1]
        bad = {k: metrics[k] for k in keys if k in metrics and isinstance(metrics[k], (int, float))
               and not math.isfinite(metrics[k])}
        if bad:
            print_log(f'not ranking this checkpoint as best: {bad} is not finite', logger='current',
                      level=logging.WARNING)
            return
        self._store_random_states(runner)
        super()._save_best_checkpoint(runner, metrics)

    # 4. random states --------------------------------------------------------------------------------
    @staticmethod
    def _store_random_states(runner) -> None:
        mine = _random_states()
        states = all_gather_object(mine) if is_distributed() else [mine]
        runner.message_hub.update_info(RANDOM_STATES, states)

    @staticmethod
    def _restore_random_states(runner) -> None:
        states = runner.message_hub.runtime_info.get(RANDOM_STATES)
        if not states or runner.iter == 0:
            return
        if len(states) != get_world_size():
            print_log(f'the checkpoint holds the random states of {len(states)} processes, this run has '
                      f'{get_world_size()}: drop path and dropout will draw other masks than an uninterrupted run',
                      logger='current', level=logging.WARNING)
            return
        state = states[get_rank()]
        loop = runner.train_loop
        if hasattr(loop, 'dataloader_iterator'):  # IterBasedTrainLoop replays loop.iter batches first
            loop.dataloader_iterator = _RestoreAfterSkip(loop.dataloader_iterator, loop.iter, state)
        else:
            _set_random_states(state)


@HOOKS.register_module()
class StopOnNonFiniteLoss(Hook):
    """Stops training at the first iteration whose loss (any term) or gradient norm is NaN/Inf,
    before that iteration can be saved; the message names the iteration and the loss terms.

    Skips that a dynamic loss scaler makes on fp16 overflow (AmpOptimWrapper, DeepSpeed fp16) are
    not failures: the step is dropped and the scale lowered, and the loss itself stays finite. Only
    a non-finite *loss* (which no loss scale can fix) or, without a loss scaler, a non-finite gradient
    norm stops the run.
    """

    priority = 'LOW'  # after the logger (the bad values reach the log), before CheckpointHook (VERY_LOW)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs: Optional[Dict] = None) -> None:
        values = {}
        for name, value in (outputs or {}).items():
            try:
                values[name] = float(value.detach() if torch.is_tensor(value) else value)
            except (TypeError, ValueError, RuntimeError):
                continue
        bad = {k: v for k, v in values.items() if not math.isfinite(v)}
        grad_norm = None
        if not bad and not self._loss_scaled(runner):
            hist = runner.message_hub.log_scalars.get('train/grad_norm')
            if hist is not None:  # logged by OptimWrapper each step when clip_grad is set
                grad_norm = float(hist.current())
        if not bad and (grad_norm is None or math.isfinite(grad_norm)):
            return
        terms = ', '.join(f'{k}={v:.4g}' for k, v in values.items() if 'loss' in k)
        what = (f'the loss is not finite at iteration {runner.iter + 1} ({terms})' if bad else
                f'the gradient norm is {grad_norm} at iteration {runner.iter + 1} (loss terms: {terms})')
        raise NonFiniteError(f'{what}; stopped, and nothing from this iteration on is saved. '
                             f'{self._overflow_note(runner)}{_advice(runner)}')

    @staticmethod
    def _loss_scaled(runner) -> bool:
        wrapper = getattr(runner, 'optim_wrapper', None)
        wrappers = getattr(wrapper, '_optim_wrappers', {wrapper: wrapper}).values() if wrapper is not None else []
        # an AmpOptimWrapper in bf16 has its GradScaler off (engine/training.py): no skipped steps to allow for
        def scaled(w):
            scaler = getattr(w, 'loss_scaler', None)
            return scaler is None or scaler.is_enabled()
        return any(type(w).__name__ == 'DeepSpeedOptimWrapper' or (type(w).__name__ == 'AmpOptimWrapper' and scaled(w))
                   for w in wrappers)

    @staticmethod
    def _overflow_note(runner) -> str:
        engine = getattr(runner, 'model', None)
        skipped = getattr(engine, 'skipped_steps', None)
        if not skipped:
            return ''
        scale = getattr(getattr(engine, 'optimizer', None), 'cur_scale', None)
        return (f'(Separately, DeepSpeed skipped {skipped} steps on fp16 gradient overflow'
                + (f', loss scale now {scale}' if scale is not None else '') + ': those are expected, this is not.) ')


def add_safety_hooks(cfg) -> None:
    """Puts the safety hooks into a training config: mmengine's CheckpointHook becomes SafeCheckpointHook,
    StopOnNonFiniteLoss joins the custom hooks. A config naming another checkpoint hook keeps it."""
    hooks = cfg.setdefault('default_hooks', {})
    ckpt = hooks.get('checkpoint')
    if ckpt is not None and ckpt.get('type') in ('CheckpointHook', 'mmengine.CheckpointHook', CheckpointHook):
        ckpt['type'] = 'mmengine.SafeCheckpointHook'
    custom = list(cfg.get('custom_hooks') or [])
    if not any(h.get('type') in ('StopOnNonFiniteLoss', 'mmengine.StopOnNonFiniteLoss') for h in custom):
        custom.append(dict(type='mmengine.StopOnNonFiniteLoss'))
    cfg.custom_hooks = custom
