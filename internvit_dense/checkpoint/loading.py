"""Reading and writing InternViT checkpoints in every released format, shard by shard.

A 6B model is 24 GB in fp32: loading must never hold a second copy. Sources are
read one shard at a time (``.bin``/``.pth`` memory-mapped, safetensors lazily)
and each tensor is copied into, or on a meta-device model assigned as, the
parameter it belongs to.
"""
from __future__ import annotations

import json
import logging
import os
import os.path as osp
from typing import Dict, Iterator, List, Optional, Tuple

import torch
import torch.nn as nn
from mmengine.logging import print_log
from timm.layers import resample_abs_pos_embed, resample_patch_embed

from .formats import (FORMAT_OPENGVLAB_HF, FORMAT_PTH, FORMAT_TRANSFORMERS, KeyConverter, arch_from_config,
                      config_for, convert_from_native, detect_format)

WRAPPER_KEYS = ('module', 'state_dict', 'model')


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit the model."""


# ---------------------------------------------------------------- reading
def _torch_load(path: str) -> dict:
    try:
        # Checkpoints are trusted input, as in mmengine; mmap keeps a 6B file off the heap.
        return torch.load(path, map_location='cpu', mmap=True, weights_only=False)
    except RuntimeError as e:
        if 'mmap' not in str(e):  # legacy (non-zip) files cannot be memory-mapped
            raise
        return torch.load(path, map_location='cpu', weights_only=False)


def _read_file(path: str) -> Dict[str, torch.Tensor]:
    if not osp.isfile(path):
        raise CheckpointError(f'checkpoint file not found: {path}')
    try:
        if path.endswith('.safetensors'):
            from safetensors.torch import load_file
            return load_file(path, device='cpu')
        obj = _torch_load(path)
    except CheckpointError:
        raise
    except Exception as e:  # corrupt or truncated files surface as many different errors
        raise CheckpointError(f'cannot read checkpoint {path}: {type(e).__name__}: {e}') from e
    for key in WRAPPER_KEYS:  # {'module': sd} from DeepSpeed/DDP saves, {'state_dict': sd} from mmengine
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f'{path} holds no state dict of tensors (top-level: {type(obj).__name__})')
    return obj


def checkpoint_files(path: str) -> List[str]:
    """The weight files of a checkpoint: the file itself, or a Hugging Face directory's shards in order."""
    if not osp.isdir(path):
        return [path]
    for index_name in ('model.safetensors.index.json', 'pytorch_model.bin.index.json'):
        index = osp.join(path, index_name)
        if osp.isfile(index):
            with open(index) as f:
                weight_map = json.load(f).get('weight_map')
            if not weight_map:
                raise CheckpointError(f'{index} has no weight_map')
            files = sorted(set(weight_map.values()))
            missing = [f for f in files if not osp.isfile(osp.join(path, f))]
            if missing:
                raise CheckpointError(f'{path} is missing shard(s) {missing} listed in {index_name}')
            return [osp.join(path, f) for f in files]
    for name in ('model.safetensors', 'pytorch_model.bin'):
        if osp.isfile(osp.join(path, name)):
            return [osp.join(path, name)]
    raise CheckpointError(f'{path} has no model.safetensors, pytorch_model.bin or shard index')


def iter_shards(path: str) -> Iterator[Dict[str, torch.Tensor]]:
    for file in checkpoint_files(path):
        yield _read_file(file)


def read_config(path: str) -> Optional[dict]:
    cfg_file = osp.join(path, 'config.json') if osp.isdir(path) else None
    if cfg_file is None or not osp.isfile(cfg_file):
        return None
    with open(cfg_file) as f:
        return json.load(f)


def load_state_dict(path: str) -> Tuple[Dict[str, torch.Tensor], str]:
    """The whole checkpoint under our key names, and the format it came in (for small models and tools)."""
    out, fmt = {}, None
    converter = None
    for shard in iter_shards(path):
        if converter is None:
            fmt, prefix = _detect(path, shard)
            converter = KeyConverter(fmt, prefix)
        out.update(converter(shard))
    return out, fmt


def _detect(path: str, first_shard: dict) -> Tuple[str, str]:
    keys = list(first_shard)
    index = osp.join(path, 'model.safetensors.index.json') if osp.isdir(path) else None
    for name in ('model.safetensors.index.json', 'pytorch_model.bin.index.json'):
        index = osp.join(path, name) if osp.isdir(path) else None
        if index and osp.isfile(index):
            with open(index) as f:
                keys = list(json.load(f)['weight_map'])
            break
    try:
        return detect_format(keys)
    except ValueError as e:
        raise CheckpointError(f'{path}: {e}') from e


# ---------------------------------------------------------------- filling a model
def _fit(name: str, value: torch.Tensor, param: torch.Tensor, model) -> torch.Tensor:
    """Resizes position and patch embeddings to the model's grid and patch size."""
    if name == 'pos_embed' and value.shape != param.shape and value.shape[-1] == param.shape[-1]:
        value = value.reshape(1, -1, value.shape[-1])
        value = resample_abs_pos_embed(value.float(), list(model.pretrain_grid), num_prefix_tokens=1,
                                       interpolation='bicubic', antialias=False)
    elif name == 'cls_token' and value.ndim == 2:
        value = value.reshape(param.shape)
    elif (name == 'patch_embed.proj.weight' and value.shape[:2] == param.shape[:2]
          and value.shape[2:] != param.shape[2:]):
        value = resample_patch_embed(value.float(), list(param.shape[2:]), interpolation='bicubic',
                                     antialias=False)
    if value.shape != param.shape:
        raise CheckpointError(f'checkpoint tensor {name!r} has shape {tuple(value.shape)} but the model expects '
                              f'{tuple(param.shape)}: the checkpoint does not fit this architecture')
    return value


def _put(model: nn.Module, name: str, value: torch.Tensor):
    module_name, _, attr = name.rpartition('.')
    module = model.get_submodule(module_name) if module_name else model
    param = getattr(module, attr)
    value = _fit(name, value, param, model)
    if param.is_meta:
        module._parameters[attr] = nn.Parameter(value.to(param.dtype).clone(), requires_grad=param.requires_grad)
    else:
        with torch.no_grad():
            param.copy_(value)


def load_pretrained(model, path: str, prefix: Optional[str] = None, strict: bool = True,
                    logger: str = 'current') -> dict:
    """Fills an ``InternViT`` from a checkpoint of any supported format.

    Keys the model does not have (``clip_projector.*``, the language model of a chat
    checkpoint, blocks beyond the model's depth) are reported and skipped. Keys the
    model has and the checkpoint lacks are an error when ``strict``.
    Returns ``dict(format=..., missing=[...], unexpected=[...])``.
    """
    path = str(path)
    if not osp.exists(path):
        raise CheckpointError(f'checkpoint not found: {path}')
    own = dict(model.named_parameters())
    loaded, unexpected, converter = set(), [], None
    for shard in iter_shards(path):
        if converter is None:
            fmt, detected_prefix = _detect(path, shard)
            converter = KeyConverter(fmt, detected_prefix if prefix is None else prefix)
        for name, value in converter(shard).items():
            if name in own:
                _put(model, name, value)
                loaded.add(name)
            else:
                unexpected.append(name)
        del shard
    unexpected += converter.ignored + converter.unfinished()
    missing = [n for n in own if n not in loaded]
    if unexpected:
        shown = sorted(unexpected)
        print_log(f'InternViT: ignored {len(unexpected)} checkpoint keys the backbone does not have: '
                  f'{shown[:8]}{" ..." if len(shown) > 8 else ""}', logger=logger, level=logging.WARNING)
    if missing and strict:
        raise CheckpointError(f'{path} ({fmt}) lacks {len(missing)} parameters of this InternViT, e.g. '
                              f'{missing[:8]}: wrong architecture or an incomplete checkpoint')
    if getattr(model, 'frozen', False):
        model.requires_grad_(False)
    print_log(f'InternViT: loaded {len(loaded)} tensors from {path} ({fmt} format)', logger=logger)
    return dict(format=fmt, missing=missing, unexpected=unexpected)


def build_from_checkpoint(path: str, **kwargs):
    """Builds an ``InternViT`` on the meta device and fills it from ``path`` (no random-init copy).

    A Hugging Face directory describes its architecture in ``config.json``; a ``.pth``
    file needs ``arch=`` (``'6b'``, ``'6b-448'``, ``'300m'`` or a dict).
    """
    from internvit_dense.models.backbones.internvit import InternViT
    cfg = read_config(path)
    if cfg is not None:
        from_cfg, _ = arch_from_config(cfg)
        kwargs = {**from_cfg, **kwargs}
    elif 'arch' not in kwargs:
        raise CheckpointError(f'{path} carries no config.json: pass arch= to say which InternViT it holds')
    with torch.device('meta'):
        model = InternViT(**kwargs)
    load_pretrained(model, path)
    return model


# ---------------------------------------------------------------- writing
def save_checkpoint(model, path: str, fmt: str = FORMAT_PTH, max_shard_bytes: Optional[int] = None,
                    safetensors: bool = True, state_dict: Optional[dict] = None) -> str:
    """Writes an ``InternViT`` in ``fmt``: a ``.pth`` file, or a Hugging Face directory
    (``config.json`` + ``model.safetensors`` / ``pytorch_model.bin``, sharded with an index
    when ``max_shard_bytes`` is given)."""
    sd = {k: v.detach().contiguous().cpu() for k, v in (state_dict or model.state_dict()).items()}
    if fmt == FORMAT_PTH:
        os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
        torch.save(sd, path)
        return path
    if fmt not in (FORMAT_OPENGVLAB_HF, FORMAT_TRANSFORMERS):
        raise ValueError(f'unknown checkpoint format {fmt!r}')
    os.makedirs(path, exist_ok=True)
    with open(osp.join(path, 'config.json'), 'w') as f:
        json.dump(config_for(model, fmt), f, indent=2)
    sd = convert_from_native(sd, fmt)
    shards: List[Dict[str, torch.Tensor]] = [{}]
    size = 0
    for k, v in sd.items():
        nbytes = v.numel() * v.element_size()
        if max_shard_bytes and shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][k] = v
        size += nbytes
    stem, ext = ('model', 'safetensors') if safetensors else ('pytorch_model', 'bin')

    def write(tensors, name):
        if safetensors:
            from safetensors.torch import save_file
            save_file(tensors, osp.join(path, name), metadata={'format': 'pt'})
        else:
            torch.save(tensors, osp.join(path, name))

    if len(shards) == 1 and not max_shard_bytes:
        write(shards[0], f'{stem}.{ext}')
        return path
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        name = f'{stem}-{i:05d}-of-{len(shards):05d}.{ext}'
        write(shard, name)
        weight_map.update({k: name for k in shard})
    total = sum(v.numel() * v.element_size() for v in sd.values())
    with open(osp.join(path, f'{stem}.{ext}.index.json'), 'w') as f:
        json.dump(dict(metadata=dict(total_size=total), weight_map=weight_map), f, indent=2)
    return path
