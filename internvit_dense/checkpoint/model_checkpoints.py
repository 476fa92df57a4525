"""Whole-model checkpoints (a segmentor's, a classifier's) into the model a config builds, strictly.

Ours are mmengine's (``state_dict`` + ``meta``, or a bare state dict). InternVL's released task
checkpoints (:mod:`.internvl_tasks`) load as they are: recognised, checked against the model
(a file of another recipe is refused with the reason and the config to use), renamed, then loaded
by mmengine's own checkpoint-to-model step, strictly. Tensors keep the file's values: the bf16
backbone of an InternVL file is widened to the model's dtype, never resampled or re-initialised.
"""
from __future__ import annotations

import logging
import os
import os.path as osp
from typing import Union

import torch
import torch.nn as nn
from mmengine.logging import print_log

from .files import CheckpointError, torch_load
from .hub import resolve_checkpoint
from .internvl_tasks import detect_task_format

WRAPPER_KEYS = ('state_dict', 'module', 'model')


class ModelCheckpointError(CheckpointError):
    """A model checkpoint that cannot be read, or does not fit the model: the message says what to do."""


# ------------------------------------------------------------------ reading files
def read_checkpoint_file(path: Union[str, os.PathLike]):
    """A trusted checkpoint file (or ``hf://ORG/NAME/FILE``, :mod:`.hub`), memory-mapped
    (:func:`.files.torch_load`), with errors that say what to do."""
    path = resolve_checkpoint(path)
    if osp.isdir(path):
        raise ModelCheckpointError(f'{path} is a folder, not a checkpoint file (a DeepSpeed checkpoint? make one '
                                   f'file of it: python tools/zero_to_fp32.py {path})')
    if not osp.isfile(path):
        raise ModelCheckpointError(f'checkpoint not found: {path}')
    return torch_load(path)  # UnreadableCheckpointError, naming the file and what to do, if damaged


# ------------------------------------------------------------------ whole-model checkpoints
def read_model_checkpoint(path: Union[str, os.PathLike]) -> dict:
    """``dict(state_dict=<our names>, meta=<ours>, format=<name>, info=<what the file holds or None>,
    source_format=<the InternVL format object or None>)`` of any supported whole-model checkpoint."""
    path = str(path)
    obj = read_checkpoint_file(path)
    if not isinstance(obj, dict):
        raise ModelCheckpointError(f'{path} holds a {type(obj).__name__}, not a state dict or a training checkpoint')
    state, wrapper = obj, None
    for key in WRAPPER_KEYS:
        if isinstance(obj.get(key), dict) and obj[key] and all(isinstance(v, torch.Tensor) for v in obj[key].values()):
            state, wrapper = obj[key], key
            break
    fmt, prefix = detect_task_format(state.keys())
    if fmt is None:
        return dict(state_dict=state, meta=obj.get('meta') if wrapper else None, format='mmengine', info=None,
                    source_format=None, raw=obj)
    theirs = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    meta = obj.get('meta') if isinstance(obj.get('meta'), dict) else {}
    if fmt.task == 'classification':  # the training config lies beside the weights, not in a meta dict
        meta = dict(meta, config=obj.get('config'), epoch=obj.get('epoch'), max_accuracy=obj.get('max_accuracy'))
    info = fmt.describe(theirs, meta)
    ours = {fmt.to_ours(k): v for k, v in theirs.items()}
    our_meta = dict(converted_from=fmt.name, source=osp.basename(path))
    dataset_meta = fmt.dataset_meta(meta)
    if dataset_meta:
        our_meta['dataset_meta'] = dataset_meta
    if isinstance(meta.get('config'), str):
        our_meta['source_config'] = meta['config']
    return dict(state_dict=ours, meta=our_meta, format=fmt.name, info=info, source_format=fmt, raw=obj)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model inside DDP / DeepSpeed / test-time-augmentation wrappers."""
    while isinstance(getattr(model, 'module', None), nn.Module):
        model = model.module
    return model


def check_fits(ckpt: dict, model: nn.Module, path: str) -> None:
    """Refuses an InternVL task checkpoint whose recipe is not the model's, with the reasons and the config to use."""
    fmt = ckpt['source_format']
    if fmt is None:
        return
    problems = fmt.mismatches(ckpt['info'], unwrap_model(model))
    if problems:
        raise ModelCheckpointError(
            f"{path} is InternVL's {describe_recipe(ckpt)} checkpoint ({fmt.name}) and does not fit the model of "
            'this config:\n  - ' + '\n  - '.join(problems)
            + f'\nits config here: {fmt.suggested_config(ckpt["info"])}')


def describe_recipe(ckpt: dict) -> str:
    info, fmt = ckpt['info'], ckpt['source_format']
    if fmt is None:
        return 'a'
    if fmt.task == 'classification':
        return 'linear-probe classification head'
    head = {'linear': 'BN + linear head', 'upernet': 'UperNet'}.get(info['head'], info['head'])
    blocks = f" on blocks {info['out_indices']}" if info.get('out_indices') else ''
    tuned = {True: 'frozen backbone, ', False: 'tuned backbone, ', None: ''}[info.get('frozen')]
    return f'segmentation ({tuned}{head}{blocks})'


def load_model_checkpoint(model: nn.Module, path: Union[str, os.PathLike], strict: bool = True,
                          logger: str = 'current') -> dict:
    """Loads ``path`` (ours or an InternVL task checkpoint) into ``model``, strictly; returns its meta (ours)."""
    from mmengine.runner.checkpoint import _load_checkpoint_to_model
    path = str(path)
    ckpt = read_model_checkpoint(path)
    check_fits(ckpt, model, path)
    container = ckpt['raw'] if ckpt['source_format'] is None else dict(state_dict=ckpt['state_dict'])
    try:
        _load_checkpoint_to_model(model, container, strict=strict)
    except RuntimeError as e:
        raise ModelCheckpointError(f'checkpoint {path} does not fit the model of the config:\n{e}') from None
    log_loaded(ckpt, path, logger)
    return ckpt['meta'] or {}


def log_loaded(ckpt: dict, path: str, logger: str = 'current') -> None:
    if ckpt['source_format'] is not None:
        dtypes = sorted({str(v.dtype).replace('torch.', '') for v in ckpt['state_dict'].values()})
        print_log(f"loaded InternVL's {describe_recipe(ckpt)} checkpoint {path} ({ckpt['format']}): "
                  f"{len(ckpt['state_dict'])} tensors ({', '.join(dtypes)} in the file)", logger=logger,
                  level=logging.INFO)


def save_model_checkpoint(ckpt: dict, path: Union[str, os.PathLike]) -> None:
    """Writes a converted checkpoint as a plain mmengine/mmseg 1.x one (``state_dict`` + ``meta``), atomically."""
    path = str(path)
    tmp = osp.join(osp.dirname(osp.abspath(path)), f'.{osp.basename(path)}.tmp-{os.getpid()}')
    try:
        with open(tmp, 'wb') as f:
            torch.save(dict(state_dict=ckpt['state_dict'], meta=ckpt['meta']), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)


__all__ = ['ModelCheckpointError', 'check_fits', 'load_model_checkpoint', 'log_loaded', 'read_checkpoint_file',
           'read_model_checkpoint', 'save_model_checkpoint', 'unwrap_model']
