"""Checkpoint files on disk: which files a checkpoint is, and their tensors one at a time.

Nothing here knows a key name: that is :mod:`.formats`. A 6B model is 11 GB in
bf16 and 22 GB in fp32, so nothing here ever holds a file twice: ``.pth``/``.bin``
files are memory-mapped (:func:`torch_load`), safetensors are opened lazily and
read tensor by tensor.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import os.path as osp
import pickle
import shutil
import types
from typing import Dict, Iterator, List, Optional, Tuple

import torch

# {'module': sd} from DeepSpeed/DDP saves, {'state_dict': sd} from mmengine, {'model': sd} from timm/DeiT.
WRAPPER_KEYS = ('module', 'state_dict', 'model')
SHARD_INDEXES = ('model.safetensors.index.json', 'pytorch_model.bin.index.json')
SINGLE_FILES = ('model.safetensors', 'pytorch_model.bin')


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit the model."""


class UnreadableCheckpointError(CheckpointError):
    """A file torch cannot read (damaged, cut short, not a checkpoint): the message names it and what to do."""


class _Missing(dict):
    """Stands in for an object whose class this environment cannot import (InternVL's classification
    checkpoints pickle their yacs ``CfgNode`` config beside the weights): keeps its items and state."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def __setstate__(self, state):
        self.__dict__['state'] = state


class _TolerantUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            return type(name, (_Missing,), {'__module__': module})


# what torch.load wants as its pickle_module: an Unpickler and a load
_tolerant_pickle = types.SimpleNamespace(Unpickler=_TolerantUnpickler, load=pickle.load, __name__='tolerant_pickle')


def torch_load(path: str | os.PathLike):
    """``torch.load`` of a trusted checkpoint, memory-mapped so a large file is paged in, not copied.

    Checkpoints are trusted input, as in mmengine (``weights_only=False``: training checkpoints
    carry mmengine objects). Files in the pre-1.6 (non-zip) format cannot be mapped: read plainly.
    Objects of classes this environment lacks become plain dicts instead of failing the load. A file
    torch cannot read is a :class:`CheckpointError` that names it, says what it looks like and what to do.
    """
    path = str(path)
    if osp.isfile(path) and osp.getsize(path) == 0:
        raise UnreadableCheckpointError(f'checkpoint {path} is empty (0 bytes): an interrupted download or save; '
                              'download or save it again')
    try:
        try:
            return torch.load(path, map_location='cpu', mmap=True, weights_only=False, pickle_module=_tolerant_pickle)
        except RuntimeError as e:
            if 'mmap' not in str(e):
                raise
            return torch.load(path, map_location='cpu', weights_only=False, pickle_module=_tolerant_pickle)
    except FileNotFoundError:
        raise CheckpointError(f'checkpoint not found: {path}') from None
    except Exception as e:  # corrupt, truncated and foreign files surface as many different errors
        raise UnreadableCheckpointError(damaged_file_message(path, e)) from e


def damaged_file_message(path: str, error: BaseException) -> str:
    """What a file torch cannot read looks like, from its first bytes, and what to do."""
    try:
        with open(path, 'rb') as f:
            head = f.read(64)
    except OSError:
        head = b''
    if head.startswith(b'PK\x03\x04'):
        what = 'a zip archive as PyTorch writes, but damaged or cut short (an interrupted download or save?)'
    elif head[:1] == b'\x80':
        what = 'a pickle in the pre-1.6 PyTorch format, but damaged or cut short'
    elif head.lstrip()[:1] in (b'<', b'{'):
        what = 'a text file (an HTML error page or JSON saved under a checkpoint name?)'
    else:
        what = 'not a PyTorch checkpoint (neither a zip archive nor a pickle)'
    return (f'cannot read checkpoint {path}: {what} [{type(error).__name__}: {error}]. '
            'Download or save it again, or point to the right file.')


def unwrap_state_dict(obj, path: str) -> Dict[str, torch.Tensor]:
    """The state dict inside a saved object (a bare state dict, or one under a wrapper key)."""
    for key in WRAPPER_KEYS:
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f'{path} holds no state dict of tensors (top-level: {type(obj).__name__})')
    return obj


def checkpoint_files(path: str) -> List[str]:
    """The weight files of a checkpoint: the file itself, or a Hugging Face directory's shards in order."""
    if not osp.exists(path):
        raise CheckpointError(f'checkpoint not found: {path}')
    if not osp.isdir(path):
        return [path]
    for index_name in SHARD_INDEXES:
        index = osp.join(path, index_name)
        if osp.isfile(index):
            files = sorted(set(_weight_map(index).values()))
            missing = [f for f in files if not osp.isfile(osp.join(path, f))]
            if missing:
                raise CheckpointError(f'{path} is missing shard(s) {missing} listed in {index_name}')
            return [osp.join(path, f) for f in files]
    for name in SINGLE_FILES:
        if osp.isfile(osp.join(path, name)):
            return [osp.join(path, name)]
    raise CheckpointError(f'{path} has no model.safetensors, pytorch_model.bin or shard index')


def _weight_map(index: str) -> Dict[str, str]:
    with open(index) as f:
        weight_map = json.load(f).get('weight_map')
    if not weight_map:
        raise CheckpointError(f'{index} has no weight_map')
    return weight_map


def read_config(path: str) -> Optional[dict]:
    """A Hugging Face directory's ``config.json``, or None (a file, or a directory without one)."""
    cfg_file = osp.join(path, 'config.json') if osp.isdir(path) else None
    if cfg_file is None or not osp.isfile(cfg_file):
        return None
    with open(cfg_file) as f:
        return json.load(f)


class ShardFile:
    """One weight file, opened without reading its tensors: ``keys()`` is cheap, ``items()`` yields one
    tensor at a time (safetensors read lazily; torch files memory-mapped)."""

    def __init__(self, path: str):
        self.path = path
        self._safetensors = path.endswith('.safetensors')
        self._state = None
        try:
            if self._safetensors:
                from safetensors import safe_open
                with safe_open(path, framework='pt') as f:
                    self._keys = list(f.keys())
            else:
                self._state = unwrap_state_dict(torch_load(path), path)
                self._keys = list(self._state)
        except CheckpointError:
            raise
        except Exception as e:  # corrupt or truncated files surface as many different errors
            raise CheckpointError(f'cannot read checkpoint {path}: {type(e).__name__}: {e}') from e

    def keys(self) -> List[str]:
        return list(self._keys)

    def items(self) -> Iterator[Tuple[str, torch.Tensor]]:
        if not self._safetensors:
            state, self._state = self._state, None  # handed out once: no reference kept behind the caller's back
            for key in self._keys:
                yield key, state.pop(key)
            return
        from safetensors import safe_open
        try:
            with safe_open(self.path, framework='pt') as f:
                for key in self._keys:
                    yield key, f.get_tensor(key)
        except Exception as e:
            raise CheckpointError(f'cannot read checkpoint {self.path}: {type(e).__name__}: {e}') from e


def all_keys(path: str, files: List[str], first: ShardFile) -> List[str]:
    """Every key of a checkpoint: from its shard index when it has one, else from its (only) file."""
    if osp.isdir(path):
        for index_name in SHARD_INDEXES:
            if osp.isfile(osp.join(path, index_name)):
                return list(_weight_map(osp.join(path, index_name)))
    return first.keys()


# ------------------------------------------------------------------ writing a destination whole
@contextlib.contextmanager
def atomic_destination(dst: str, overwrite: bool = False):
    """Yields a temporary path beside ``dst`` to write a checkpoint (a file or a folder) into; once the
    block succeeds, that replaces ``dst`` whole, by renames, after an fsync of everything written.

    An existing ``dst`` that is a file or a non-empty folder is refused unless ``overwrite``: a
    conversion into an earlier one must not leave its shards and index behind for a loader to read.
    On any error the temporary path is removed and ``dst`` is left as it was.
    """
    dst = osp.abspath(dst)
    if osp.exists(dst) and not overwrite and (not osp.isdir(dst) or os.listdir(dst)):
        held = sorted(os.listdir(dst)) if osp.isdir(dst) else None
        what = (f'a folder holding {len(held)} entries ({", ".join(held[:4])}{", ..." if len(held) > 4 else ""})'
                if held is not None else 'a file')
        raise CheckpointError(f'{dst} already exists ({what}): pass --overwrite to replace it whole, or choose '
                              'another destination')
    parent = osp.dirname(dst)
    os.makedirs(parent, exist_ok=True)
    tmp = osp.join(parent, f'.{osp.basename(dst)}.tmp-{os.getpid()}')
    old = osp.join(parent, f'.{osp.basename(dst)}.old-{os.getpid()}')
    try:
        try:
            yield tmp
            _fsync_tree(tmp)
        except Exception as e:
            if not _is_write_failure(e):
                raise
            raise CheckpointError(f'could not write {dst}: {type(e).__name__}: {str(e).strip().splitlines()[0][:300]}; '
                                  f'{_free_space(parent)} free in {parent} (a full disk, a quota or a file-size limit?); '
                                  f'nothing was left at {dst}' + (' (its earlier content is untouched)'
                                                                  if osp.exists(dst) else '')) from e
        if osp.exists(dst):
            os.replace(dst, old)  # a folder cannot be swapped in one rename: the old one steps aside first
        try:
            os.replace(tmp, dst)
        except OSError:
            if osp.exists(old) and not osp.exists(dst):
                os.replace(old, dst)  # put the old one back: nothing lost
            raise
        _fsync_dir(parent)
        _remove(old)
    finally:
        _remove(tmp)


def _is_write_failure(e: BaseException) -> bool:
    """A failed write, as the writers report one: an OSError (ENOSPC, EFBIG), torch's zip writer ('enforce
    fail at inline_container.cc ... unexpected pos') or safetensors' SafetensorError (an I/O error inside)."""
    if isinstance(e, OSError):
        return True
    text = str(e)
    return (type(e).__name__ == 'SafetensorError' or 'inline_container' in text or 'PytorchStreamWriter' in text
            or 'No space left' in text or 'File too large' in text)


def _free_space(folder: str) -> str:
    try:
        return f'{shutil.disk_usage(folder).free / 2**30:.2f} GiB'
    except OSError:
        return 'unknown space'


def _remove(path: str) -> None:
    if osp.isdir(path) and not osp.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif osp.lexists(path):
        os.remove(path)


def _fsync_tree(path: str) -> None:
    files = [path] if osp.isfile(path) else [osp.join(d, f) for d, _, fs in os.walk(path) for f in fs]
    for file in files:
        with open(file, 'rb') as f:
            os.fsync(f.fileno())
    if osp.isdir(path):
        _fsync_dir(path)


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems do not sync directories
        pass
    finally:
        os.close(fd)


# ------------------------------------------------------------------ identity
def _fingerprint_file(path: str, edge: int = 1 << 20) -> List:
    # Size plus the first and last MiB: cheap for a 24 GB file, and it tells apart any two
    # released checkpoints; a full hash would cost minutes per run.
    size = osp.getsize(path)
    h = hashlib.sha1()
    with open(path, 'rb') as f:
        h.update(f.read(edge))
        if size > edge:
            f.seek(max(edge, size - edge))
            h.update(f.read(edge))
    return [osp.basename(path), size, h.hexdigest()]


def checkpoint_identity(path: Optional[str]) -> dict:
    """What identifies a checkpoint's weights, independent of where it is stored."""
    if path is None:
        return dict(kind='none')
    if osp.isdir(path):
        names = sorted(f for f in os.listdir(path)
                       if f.endswith(('.safetensors', '.bin', '.pth', '.pt')) or f == 'config.json')
        return dict(kind='dir', files=[_fingerprint_file(osp.join(path, f)) for f in names])
    return dict(kind='file', files=[_fingerprint_file(path)])
