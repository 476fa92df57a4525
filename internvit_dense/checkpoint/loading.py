"""Reading checkpoints of every format as (our name, tensor) pairs, filling modules, writing checkpoints.

Reading is streamed: one tensor at a time leaves a file (safetensors read lazily, torch files
memory-mapped), is renamed by its format and handed to the caller, who keeps it or drops it.
Building a model from a checkpoint lives with the model (``InternViT.from_pretrained``); this
module never imports one.
"""
from __future__ import annotations

import json
import os
import os.path as osp
from typing import Dict, Iterable, Iterator, List, Optional, Tuple, Union

import torch
import torch.nn as nn

from .files import CheckpointError, ShardFile, all_keys, checkpoint_files, read_config
from .hub import resolve_checkpoint
from .backbone_formats import FORMAT_PTH
from .formats import FORMATS, arch_from_config, detect_format, get_format


class CheckpointReader:
    """A checkpoint of any format in :data:`~.formats.FORMATS`, opened but not yet read.

    ``format`` / ``prefix`` say what it is; :meth:`tensors` yields its tensors under our names;
    ``ignored`` lists (after :meth:`tensors` is exhausted) the keys outside the prefix, e.g. a chat
    model's language model; :meth:`arch` is the architecture its config.json describes.
    """

    def __init__(self, path: Union[str, os.PathLike], prefix: Optional[str] = None):
        self.path = resolve_checkpoint(path)  # a local path, or the Hub cache's copy of a Hub name (.hub)
        self.files = checkpoint_files(self.path)
        self._first = ShardFile(self.files[0])
        try:
            fmt, detected = detect_format(all_keys(self.path, self.files, self._first))
        except ValueError as e:
            raise CheckpointError(f'{self.path}: {e}') from e
        self.format = get_format(fmt)
        self.prefix = detected if prefix is None else prefix
        self.config = read_config(self.path)
        self.ignored: List[str] = []

    def arch(self) -> Optional[dict]:
        """Backbone kwargs (``arch``, ``patch_size``, ``pretrain_size``, ``in_channels``) from config.json."""
        if self.config is None:
            return None
        try:
            return arch_from_config(self.config)[0]
        except ValueError as e:
            raise CheckpointError(f'{self.path}/config.json: {e}') from e

    def _raw(self) -> Iterator[Tuple[str, torch.Tensor]]:
        for i, file in enumerate(self.files):
            shard = self._first if i == 0 else ShardFile(file)
            self._first = None
            for key, value in shard.items():
                if key.startswith(self.prefix):
                    yield key[len(self.prefix):], value
                else:
                    self.ignored.append(key)

    def tensors(self) -> Iterator[Tuple[str, torch.Tensor]]:
        """(our name, tensor) pairs, one at a time, as the files hold them (dtype untouched)."""
        if self._first is None:  # a second pass
            self._first = ShardFile(self.files[0])
        return self.format.convert(self._raw())


def open_checkpoint(path: Union[str, os.PathLike], prefix: Optional[str] = None) -> CheckpointReader:
    return CheckpointReader(path, prefix)


def load_state_dict(path: Union[str, os.PathLike], prefix: Optional[str] = None) -> Tuple[Dict[str, torch.Tensor], str]:
    """The whole checkpoint under our key names, and its format's name (for small models and tools)."""
    reader = open_checkpoint(path, prefix)
    return dict(reader.tensors()), reader.format.name


def read_arch(path: Union[str, os.PathLike]) -> Optional[dict]:
    """The backbone kwargs a checkpoint's config.json describes, or None for a file without one."""
    cfg = read_config(str(path))
    if cfg is None:
        return None
    try:
        return arch_from_config(cfg)[0]
    except ValueError as e:
        raise CheckpointError(f'{path}/config.json: {e}') from e


# ------------------------------------------------------------------- filling modules
def assign_tensor(module: nn.Module, name: str, value: torch.Tensor) -> None:
    """Puts ``value`` into ``module``'s parameter or buffer ``name``, in that tensor's dtype.

    A parameter on the meta device takes ``value`` itself (``load_state_dict(assign=True)``: no
    copy when the dtype already matches); a real one is copied into. Either way the value is first
    cast to the dtype the module holds, one tensor at a time, so an fp32 checkpoint narrows into a
    bf16 model without ever holding a second copy of a whole shard.
    """
    owner_name, _, attr = name.rpartition('.')
    owner = module.get_submodule(owner_name) if owner_name else module
    if attr == '_extra_state':  # not a tensor: a module's own record (LoRA's), which its setter checks
        owner.set_extra_state(value)
        return
    target = owner._parameters.get(attr)
    if target is None:
        target = owner._buffers.get(attr)
    if target is None:
        raise CheckpointError(f'the model has no parameter or buffer {name!r}')
    if value.shape != target.shape:
        raise CheckpointError(f'checkpoint tensor {name!r} has shape {tuple(value.shape)} but the model expects '
                              f'{tuple(target.shape)}: the checkpoint does not fit this model')
    if value.dtype != target.dtype:
        value = value.to(target.dtype)
    owner.load_state_dict({attr: value}, strict=False, assign=target.is_meta)


def fill_module(module: nn.Module, state_dict: Dict[str, torch.Tensor], strict: bool = True,
                source: str = 'the checkpoint', allow_meta: bool = False) -> Dict[str, List[str]]:
    """Fills ``module`` (typically built on the meta device) from ``state_dict`` tensor by tensor,
    each in the dtype the module was built with; pops entries as it goes so the caller's dict does
    not keep a second reference to what the model now holds.

    ``strict``: keys of the model missing from ``state_dict`` or the other way round are an
    error naming them. Any tensor still on the meta device afterwards is an error unless ``allow_meta``
    (the caller fills it otherwise).
    """
    own = dict(module.state_dict(keep_vars=True))
    unexpected = [k for k in state_dict if k not in own]
    missing = [k for k in own if k not in state_dict]
    if strict and (missing or unexpected):
        raise CheckpointError(
            f'{source} does not fit the model: '
            + (f'{len(missing)} missing keys, e.g. {missing[:6]}' if missing else '')
            + ('; ' if missing and unexpected else '')
            + (f'{len(unexpected)} unexpected keys, e.g. {unexpected[:6]}' if unexpected else ''))
    for name in list(state_dict):
        if name in own:
            assign_tensor(module, name, state_dict.pop(name))
    left = [] if allow_meta else meta_tensors(module)
    if left:
        raise CheckpointError(f'{source} left {len(left)} tensors of the model unfilled (on the meta device), '
                              f'e.g. {left[:6]}')
    return dict(missing=missing, unexpected=unexpected)


def meta_tensors(module: nn.Module) -> List[str]:
    """Names of the parameters and buffers still on the meta device."""
    return [n for n, t in list(module.named_parameters()) + list(module.named_buffers()) if t.is_meta]


# ------------------------------------------------------------------- writing
def save_checkpoint(model: Optional[nn.Module], path: Union[str, os.PathLike], fmt: str = FORMAT_PTH,
                    max_shard_bytes: Optional[int] = None, safetensors: bool = True,
                    state_dict: Optional[Dict[str, torch.Tensor]] = None, arch: Optional[dict] = None) -> str:
    """Writes a backbone in format ``fmt``: a ``.pth`` file, or a Hugging Face directory
    (``config.json`` + ``model.safetensors`` / ``pytorch_model.bin``, sharded with an index when
    ``max_shard_bytes`` is given). Tensors keep their dtype.

    ``state_dict`` defaults to ``model.state_dict()``; ``arch`` (the kwargs the format's
    config.json describes) to ``model.arch_kwargs()``.
    """
    sd = state_dict if state_dict is not None else model.state_dict()
    if arch is None and model is not None and get_format(fmt).hf_directory:
        arch = model.arch_kwargs()
    return write_checkpoint(sd.items(), path, fmt, arch=arch, max_shard_bytes=max_shard_bytes,
                            safetensors=safetensors)


def write_checkpoint(items: Iterable[Tuple[str, torch.Tensor]], path: Union[str, os.PathLike], fmt: str = FORMAT_PTH,
                     arch: Optional[dict] = None, max_shard_bytes: Optional[int] = None,
                     safetensors: bool = True) -> str:
    """Writes (our name, tensor) pairs in format ``fmt``, streamed: a Hugging Face directory is
    written shard by shard, so converting a 6B checkpoint holds one shard, not the model.
    Each file is written to a temporary name and renamed into place; config.json comes last.
    """
    path = str(path)
    target = get_format(fmt)
    if not target.hf_directory:
        os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
        sd = {k: v.detach().contiguous().cpu() for k, v in items}
        _atomic(path, lambda tmp: torch.save(target.from_ours(sd), tmp))
        return path
    if arch is None:
        raise ValueError(f'writing a {fmt} directory needs arch= (or a model) for its config.json')
    os.makedirs(path, exist_ok=True)
    stem, ext = ('model', 'safetensors') if safetensors else ('pytorch_model', 'bin')
    written: List[Tuple[str, List[str]]] = []  # (temporary shard name, its keys)
    shard: Dict[str, torch.Tensor] = {}
    size = total = 0

    def flush():
        name = f'{stem}-part{len(written):05d}.{ext}'
        if safetensors:
            from safetensors.torch import save_file
            _atomic(osp.join(path, name), lambda tmp: save_file(shard, tmp, metadata={'format': 'pt'}))
        else:
            _atomic(osp.join(path, name), lambda tmp: torch.save(shard, tmp))
        written.append((name, list(shard)))
        shard.clear()

    for key, value in items:
        for k, v in target.from_ours({key: value}).items():
            v = v.detach().contiguous().cpu()
            nbytes = v.numel() * v.element_size()
            if max_shard_bytes and shard and size + nbytes > max_shard_bytes:
                flush()
                size = 0
            shard[k] = v
            size += nbytes
            total += nbytes
    if shard or not written:
        flush()
    if len(written) == 1 and not max_shard_bytes:
        os.replace(osp.join(path, written[0][0]), osp.join(path, f'{stem}.{ext}'))
    else:
        weight_map = {}
        for i, (tmp_name, keys) in enumerate(written, 1):
            name = f'{stem}-{i:05d}-of-{len(written):05d}.{ext}'
            os.replace(osp.join(path, tmp_name), osp.join(path, name))
            weight_map.update({k: name for k in keys})
        _write_json(osp.join(path, f'{stem}.{ext}.index.json'),
                    dict(metadata=dict(total_size=total), weight_map=weight_map))
    _write_json(osp.join(path, 'config.json'), target.config_for(arch))  # last: a directory with it is complete
    return path


def _atomic(path: str, write) -> None:
    tmp = f'{path}.tmp-{os.getpid()}'
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)


def _write_json(path: str, obj) -> None:
    def write(tmp):
        with open(tmp, 'w') as f:
            json.dump(obj, f, indent=2)
    _atomic(path, write)


__all__ = ['CheckpointReader', 'open_checkpoint', 'load_state_dict', 'read_arch', 'assign_tensor', 'fill_module',
           'meta_tensors', 'save_checkpoint', 'write_checkpoint', 'FORMATS']
