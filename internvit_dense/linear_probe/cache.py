"""An on-disk, memory-mappable cache of backbone features, filled chunk by chunk.

Layout of one cache (one backbone checkpoint, architecture, input size and set of blocks)::

    <cache>/manifest.json            identity + per split: shape, chunks done, complete
    <cache>/<split>/cls_block47.npy  (rows, C) cls token of block 47, one row per image view
    <cache>/<split>/patch_block47.npy (rows, C) mean of block 47's patch tokens
    <cache>/<split>/labels.npy       (images,) class index
    <cache>/<split>/meta.json        image paths and what scoring needs (ReaL sets, class subset)

Rows are ``view * images + image``: evaluation splits have one view, a training split
may have several augmented views. Arrays are ``.npy`` files (``np.load(mmap_mode='r')``
opens them without reading). The cache directory name is a hash of its identity, so
features of different checkpoints, sizes or blocks never mix.

Resuming: a chunk's rows are written and flushed before the manifest marks the chunk
done (the manifest is replaced atomically), so an interrupted extraction loses at most
the chunk in flight and a rerun computes only what is missing.
"""
from __future__ import annotations

import hashlib
import json
import os
import os.path as osp
import time
import warnings
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

# the one reading of a checkpoint's identity, shared with LoRA checkpoints (they record the base they adapt)
from internvit_dense.checkpoint.files import checkpoint_identity  # noqa: F401

MANIFEST = 'manifest.json'
FORMAT_VERSION = 1
KINDS = ('cls', 'patch')
Key = Tuple[str, int]  # ('cls' | 'patch', block index)


class CacheError(RuntimeError):
    """A cache that does not match what is asked of it."""


def cache_key(identity: dict) -> str:
    return hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]


def array_name(kind: str, block: int) -> str:
    return f'{kind}_block{block:02d}.npy'


def items_fingerprint(paths: Sequence[str], labels: Sequence[int]) -> str:
    h = hashlib.sha1()
    for p, label in zip(paths, labels):
        h.update(f'{p}\t{label}\n'.encode())
    return h.hexdigest()


def _npy_problem(path: str, shape: tuple, dtype: np.dtype) -> Optional[str]:
    """What makes ``path`` not a whole ``.npy`` of ``shape`` and ``dtype``, or None (reads the header only)."""
    if not osp.isfile(path):
        return 'is missing'
    size = osp.getsize(path)
    try:
        with open(path, 'rb') as f:
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            header_shape, _, header_dtype = read_header(f)
            data_start = f.tell()
    except (ValueError, OSError, EOFError) as e:
        return f'is not a readable .npy file ({size} bytes: {e})'
    if tuple(header_shape) != tuple(shape) or header_dtype != dtype:
        return f'holds {header_dtype} {tuple(header_shape)}, the manifest says {dtype} {tuple(shape)}'
    need = data_start + int(np.prod(shape)) * dtype.itemsize
    if size < need:
        return f'is truncated ({size} bytes, its {dtype} {tuple(shape)} array needs {need})'
    return None


def _write_json_atomic(path: str, obj) -> None:
    tmp = f'{path}.tmp{os.getpid()}'
    with open(tmp, 'w') as f:
        json.dump(obj, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@dataclass
class SplitFeatures:
    """A finished (or partial) split, memory-mapped: ``arrays[(kind, block)]`` is (views * images, C)."""
    name: str
    labels: np.ndarray
    views: int
    arrays: Dict[Key, np.ndarray]
    meta: dict = field(default_factory=dict)

    @property
    def num_images(self) -> int:
        return len(self.labels)

    def rows(self, images: np.ndarray, views: Optional[np.ndarray] = None) -> np.ndarray:
        views = np.zeros_like(images) if views is None else views
        return views * self.num_images + images


class FeatureCache:
    """One cache directory; see the module docstring.

    Args:
        root: the cache directory (``<cache root>/<name>-<key>`` by :meth:`for_identity`).
        identity: required to create a cache; checked against the manifest when opening one.
    """

    def __init__(self, root: str, identity: Optional[dict] = None):
        self.root = osp.abspath(root)
        path = osp.join(self.root, MANIFEST)
        if osp.isfile(path):
            with open(path) as f:
                self.manifest = json.load(f)
            if identity is not None and self.manifest['identity'] != identity:
                raise CacheError(f'{self.root} holds features of a different backbone/input:\n'
                                 f'  cached:    {json.dumps(self.manifest["identity"], sort_keys=True)}\n'
                                 f'  requested: {json.dumps(identity, sort_keys=True)}')
        elif identity is None:
            raise CacheError(f'{self.root} is not a feature cache (no {MANIFEST}); run `linear_probe.py extract`')
        else:
            os.makedirs(self.root, exist_ok=True)
            self.manifest = dict(format=FORMAT_VERSION, key=cache_key(identity), identity=identity, splits={},
                                 created=time.strftime('%Y-%m-%d %H:%M:%S'))
            self._save()
        self._open: Dict[str, Dict[Key, np.ndarray]] = {}

    @classmethod
    def for_identity(cls, cache_root: str, identity: dict, name: str = 'features') -> 'FeatureCache':
        return cls(osp.join(cache_root, f'{name}-{cache_key(identity)}'), identity)

    # ------------------------------------------------------------ manifest
    def _save(self) -> None:
        _write_json_atomic(osp.join(self.root, MANIFEST), self.manifest)

    @property
    def identity(self) -> dict:
        return self.manifest['identity']

    @property
    def blocks(self) -> List[int]:
        return list(self.identity['blocks'])

    @property
    def dim(self) -> int:
        """Width of every cached array."""
        for info in self.splits.values():
            return int(info['dim'])
        if 'dim' in self.identity:
            return int(self.identity['dim'])
        return int(self.identity['arch']['embed_dims'])

    @property
    def splits(self) -> Dict[str, dict]:
        return self.manifest['splits']

    def is_complete(self, split: str) -> bool:
        return split in self.splits and self.splits[split]['complete']

    def keys(self) -> List[Key]:
        return [(kind, b) for b in self.blocks for kind in KINDS]

    # -------------------------------------------------------------- writing
    def prepare_split(self, split: str, paths: Sequence[str], labels: Sequence[int], dim: int, views: int = 1,
                      chunk_size: int = 1024, dtype: str = 'float16', meta: Optional[dict] = None) -> dict:
        """Creates the split's arrays, or checks that an existing partial split is the same job."""
        fp = items_fingerprint(paths, labels)
        want = dict(num_images=len(paths), views=views, rows=views * len(paths), dim=dim, chunk_size=chunk_size,
                    dtype=dtype, items=fp)
        info = self.splits.get(split)
        if info is not None:
            diff = {k: (info.get(k), v) for k, v in want.items() if info.get(k) != v}
            if diff:
                raise CacheError(f'split {split!r} of {self.root} was started with other settings '
                                 f'(cached, requested): {diff}; finish it with the same ones, or delete '
                                 f'{osp.join(self.root, split)} and its manifest entry by extracting with --restart')
            if not self.drop_if_damaged(split):
                return info
        d = osp.join(self.root, split)
        os.makedirs(d, exist_ok=True)
        np.save(osp.join(d, 'labels.npy'), np.asarray(labels, dtype=np.int64))
        _write_json_atomic(osp.join(d, 'meta.json'), dict(meta or {}, paths=list(paths)))
        for kind, block in self.keys():
            arr = np.lib.format.open_memmap(osp.join(d, array_name(kind, block)), mode='w+', dtype=dtype,
                                            shape=(want['rows'], dim))
            del arr  # created (sparse); rows are written by write_chunk
        info = dict(want, num_chunks=-(-want['rows'] // chunk_size), done=[], complete=want['rows'] == 0)
        self.splits[split] = info
        self._save()
        return info

    def drop_split(self, split: str) -> None:
        self._open.pop(split, None)
        if split in self.splits:
            del self.splits[split]
            self._save()
        d = osp.join(self.root, split)
        if osp.isdir(d):
            for f in os.listdir(d):
                os.remove(osp.join(d, f))
            os.rmdir(d)

    def damaged_files(self, split: str) -> List[str]:
        """The files of ``split`` that do not hold what its manifest says (missing, another shape or dtype,
        or shorter than their header promises: a copy or a disk cut them short), each with the reason.

        Chunks are marked done only once written, so a whole file is the cache's promise; a short one
        otherwise surfaces as numpy's 'mmap length is greater than file size' in every later sweep."""
        info = self.splits[split]
        d = osp.join(self.root, split)
        want = [(array_name(kind, block), (info['rows'], info['dim']), np.dtype(info['dtype']))
                for kind, block in self.keys()]
        want.append(('labels.npy', (info['num_images'],), np.dtype(np.int64)))
        problems = [f'{osp.join(d, "meta.json")} is missing'] if not osp.isfile(osp.join(d, 'meta.json')) else []
        for name, shape, dtype in want:
            path = osp.join(d, name)
            problem = _npy_problem(path, shape, dtype)
            if problem:
                problems.append(f'{path} {problem}')
        return problems

    def drop_if_damaged(self, split: str) -> List[str]:
        """Drops ``split`` (files and manifest entry) when a file of it is damaged, so that the next
        extraction computes it again; returns what was wrong (empty: nothing dropped)."""
        if split not in self.splits:
            return []
        problems = self.damaged_files(split)
        if problems:
            warnings.warn(f'split {split!r} of the feature cache {self.root} is damaged: {"; ".join(problems)}; '
                          'extracting it again', stacklevel=2)
            self.drop_split(split)
        return problems

    def pending_chunks(self, split: str) -> List[int]:
        info = self.splits[split]
        done = set(info['done'])
        return [c for c in range(info['num_chunks']) if c not in done]

    def chunk_rows(self, split: str, chunk: int) -> range:
        info = self.splits[split]
        start = chunk * info['chunk_size']
        return range(start, min(start + info['chunk_size'], info['rows']))

    def _arrays(self, split: str, mode: str) -> Dict[Key, np.ndarray]:
        if mode == 'r+' and split in self._open:
            return self._open[split]
        d = osp.join(self.root, split)
        arrays = {k: np.load(osp.join(d, array_name(*k)), mmap_mode=mode) for k in self.keys()}
        if mode == 'r+':
            self._open[split] = arrays
        return arrays

    def write_chunk(self, split: str, chunk: int, values: Dict[Key, np.ndarray]) -> None:
        """Writes a whole chunk, flushes it, then records it as done."""
        info = self.splits[split]
        rows = self.chunk_rows(split, chunk)
        arrays = self._arrays(split, 'r+')
        for key, arr in arrays.items():
            v = values[key]
            if v.shape != (len(rows), info['dim']):
                raise ValueError(f'chunk {chunk} of {split}: {key} has shape {v.shape}, '
                                 f'expected {(len(rows), info["dim"])}')
            if arr.dtype == np.float16 and np.abs(v).max(initial=0) > np.finfo(np.float16).max:
                raise CacheError(f'{key} features exceed the float16 range; extract with --dtype float32')
            arr[rows.start:rows.stop] = v
        for arr in arrays.values():
            arr.flush()
        info['done'] = sorted(set(info['done']) | {chunk})
        info['complete'] = len(info['done']) == info['num_chunks']
        self._save()

    def close(self) -> None:
        for arrays in self._open.values():
            for arr in arrays.values():
                arr.flush()
        self._open.clear()

    # -------------------------------------------------------------- reading
    def load(self, split: str, keys: Optional[Iterable[Key]] = None, allow_partial: bool = False) -> SplitFeatures:
        if split not in self.splits:
            raise CacheError(f'split {split!r} is not in the cache {self.root} (has: {sorted(self.splits)})')
        info = self.splits[split]
        if not info['complete'] and not allow_partial:
            raise CacheError(f'split {split!r} of {self.root} is incomplete ({len(info["done"])}/'
                             f'{info["num_chunks"]} chunks); rerun the extraction to finish it')
        problems = self.damaged_files(split)
        if problems:
            raise CacheError(f'split {split!r} of {self.root} is damaged: {"; ".join(problems)}. Run '
                             '`tools/linear_probe.py extract` again with the same arguments: it extracts the '
                             'damaged split again')
        d = osp.join(self.root, split)
        keys = self.keys() if keys is None else list(keys)
        arrays = {k: np.load(osp.join(d, array_name(*k)), mmap_mode='r') for k in keys}
        with open(osp.join(d, 'meta.json')) as f:
            meta = json.load(f)
        return SplitFeatures(split, np.load(osp.join(d, 'labels.npy')), info['views'], arrays, meta)
