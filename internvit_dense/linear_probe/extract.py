"""Running the frozen backbone over the splits once and filling the feature cache.

:func:`run_extract` is ``tools/linear_probe.py extract``: it builds the encoder (our
InternViT, a timm model or a Hugging Face model, see
:mod:`internvit_dense.models.backbones.library_encoders`), finds the splits under a data
root and fills one cache per (encoder, weights, input size, blocks).

Images go through the same mmcv pipelines as the training config (BGR uint8, then
normalised on the device like ``ImgDataPreprocessor(bgr_to_rgb=True)``). Augmented
training views are seeded per (seed, view, image), so a view is the same whichever
worker, batch or run produces it: a resumed extraction equals an uninterrupted one.
"""
from __future__ import annotations

import json
import os.path as osp
import time
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmcv.transforms import Compose
from torch.utils.data import DataLoader, Dataset

from internvit_dense.checkpoint import resolve_checkpoint
from internvit_dense.datasets.imagenet_transforms import IMAGENET_MEAN, IMAGENET_STD
from internvit_dense.models.classifiers.linear_probe import block_tokens

from .cache import FeatureCache, Key, checkpoint_identity

EXTRACT_SPLITS = ('train', 'in1k', 'v2', 'sketch', 'a', 'r')  # cache split names; ReaL rides on in1k
PRECISION_DTYPES = dict(fp32=torch.float32, bf16=torch.bfloat16, fp16=torch.float16)


class ExtractError(ValueError):
    """A request extract cannot serve (missing data, unknown split, bad blocks); the message says what to fix."""


def eval_pipeline(img_size: int, resize_size: Optional[int] = None) -> List[dict]:
    """Resize the short edge (to ``img_size`` by default, as InternVL's linear probe does), centre-crop."""
    return [dict(type='LoadImageFromFile'),
            dict(type='ResizeShortEdge', size=resize_size or img_size, interpolation='bicubic'),
            dict(type='CenterCrop', crop_size=img_size)]


def train_pipeline(img_size: int) -> List[dict]:
    return [dict(type='LoadImageFromFile'),
            dict(type='RandomResizedCrop', size=img_size, interpolation='bicubic'),
            dict(type='RandomFlip', prob=0.5, direction='horizontal')]


class ImageRows(Dataset):
    """Row ``r`` of a split is view ``r // N`` of image ``r % N``, through ``pipeline``."""

    def __init__(self, paths: Sequence[str], pipeline: List[dict], seed: Optional[int] = None, views: int = 1):
        self.paths = list(paths)
        self.views = views
        self.pipeline_cfg = pipeline
        self.pipeline = None  # built lazily: in each worker, after the registries are populated
        self.seed = seed

    def __len__(self):
        return self.views * len(self.paths)

    def __getitem__(self, row: int):
        if self.pipeline is None:
            import internvit_dense.datasets.imagenet_transforms  # noqa: F401  (registers the transforms)
            self.pipeline = Compose(self.pipeline_cfg)
        view, image = divmod(row, len(self.paths))
        if self.seed is not None:
            np.random.seed(np.random.SeedSequence([self.seed, view, image]).generate_state(1)[0])
        out = self.pipeline(dict(img_path=self.paths[image]))
        img = out['img']
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1), row


def chunk_batches(cache: FeatureCache, split: str, batch_size: int) -> Iterator[List[int]]:
    """Batches of rows of the pending chunks; a batch never spans two chunks, so batch
    contents (and the numbers computed from them) do not depend on where a run resumed."""
    for chunk in cache.pending_chunks(split):
        rows = list(cache.chunk_rows(split, chunk))
        for i in range(0, len(rows), batch_size):
            yield rows[i:i + batch_size]


def normalise(images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return (images.flip(1).float() - mean) / std  # BGR -> RGB first


@torch.no_grad()
def backbone_features(backbone, images: torch.Tensor, blocks: Sequence[int]) -> Dict[Key, np.ndarray]:
    """Features in fp32 whatever the backbone's dtype (a bf16 6B model casts its input itself)."""
    tokens = block_tokens(backbone, normalise(images), blocks)
    out = {}
    for block, (cls_tok, mean_patch) in zip(blocks, tokens):
        out[('cls', block)] = cls_tok.float().cpu().numpy()
        out[('patch', block)] = mean_patch.float().cpu().numpy()
    return out


def extract_split(cache: FeatureCache, split: str, paths: Sequence[str], labels: Sequence[int], backbone,
                  pipeline: List[dict], views: int = 1, seed: Optional[int] = None, batch_size: int = 64,
                  chunk_size: int = 1024, num_workers: int = 2, dtype: str = 'float16',
                  meta: Optional[dict] = None, progress: bool = True,
                  on_batch: Optional[Callable[[int], None]] = None) -> dict:
    """Fills ``split`` of ``cache`` (resuming a partial one) and returns its manifest entry.

    ``seed`` makes the pipeline's randomness reproducible per view (needed for augmented
    training views); ``on_batch(rows_in_batch)`` is called after each backbone batch.
    """
    info = cache.prepare_split(split, paths, labels, backbone.embed_dims, views, chunk_size, dtype, meta)
    if info['complete']:
        return info
    device = next(backbone.parameters()).device
    dataset = ImageRows(paths, pipeline, seed, views)
    loader = DataLoader(dataset, batch_sampler=list(chunk_batches(cache, split, batch_size)),
                        num_workers=num_workers, pin_memory=device.type == 'cuda',
                        persistent_workers=False)
    done_rows = sum(len(cache.chunk_rows(split, c)) for c in info['done'])
    bar = _progress(progress, total=info['rows'], initial=done_rows, desc=f'extract {split}')
    pending: Dict[int, Dict[Key, list]] = {}
    try:
        for images, rows in loader:
            feats = backbone_features(backbone, images.to(device, non_blocking=True), cache.blocks)
            chunk = int(rows[0]) // info['chunk_size']
            buf = pending.setdefault(chunk, {k: [] for k in feats})
            for k, v in feats.items():
                buf[k].append(v)
            if on_batch is not None:
                on_batch(len(rows))
            if bar is not None:
                bar.update(len(rows))
            if int(rows[-1]) == cache.chunk_rows(split, chunk).stop - 1:
                cache.write_chunk(split, chunk, {k: np.concatenate(v) for k, v in pending.pop(chunk).items()})
    finally:
        if bar is not None:
            bar.close()
        cache.close()
    return cache.splits[split]


def _progress(enabled: bool, **kwargs):
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(unit='img', dynamic_ncols=True, **kwargs)


# ------------------------------------------------------------------ the command
def build_encoder(encoder: str = 'internvit', checkpoint: Optional[str] = None, arch=None, img_size: int = 224,
                  patch_size: Optional[int] = None, pretrain_size: Optional[int] = None, random_init: bool = False,
                  seed: int = 0, model_kwargs: Optional[dict] = None,
                  dtype: Optional[torch.dtype] = None) -> Tuple[torch.nn.Module, dict, str]:
    """(frozen encoder in eval mode, its cache identity, a default cache name).

    ``encoder``: ``'internvit'`` (``checkpoint`` in any supported format, ``arch`` needed for a
    ``.pth`` or ``random_init``), ``'timm:NAME'`` (``checkpoint`` a local weights file) or
    ``'hf:DIR'`` (a local transformers folder). ``model_kwargs``: more arguments for
    ``timm.create_model`` (a timm encoder only).
    """
    from internvit_dense.models.backbones import InternViT
    from internvit_dense.models.backbones.library_encoders import HFEncoder, TimmEncoder, parse_encoder

    kind, name = parse_encoder(encoder)
    if isinstance(arch, str) and arch.strip().startswith('{'):
        arch = json.loads(arch)
    if model_kwargs and kind != 'timm':
        raise ExtractError('--model-kwargs are arguments of timm.create_model: timm:NAME encoders only')
    if kind != 'internvit' and (arch or patch_size or pretrain_size):
        raise ExtractError('--arch, --patch-size and --pretrain-size describe an InternViT; '
                           f'{encoder} takes its architecture from timm / its config.json')
    if kind == 'hf':
        if checkpoint or random_init:
            raise ExtractError('hf:DIR is the weights: no --checkpoint / --random-init')
        model = HFEncoder(name, frozen=True)
        ident = dict(encoder=model.identity(), checkpoint=checkpoint_identity(name))
        return model.eval(), ident, osp.basename(osp.normpath(name))
    if kind == 'timm':
        if not checkpoint and not random_init:
            raise ExtractError(f'{encoder}: pass --checkpoint FILE (local weights; timm would otherwise download '
                               'them from the Hugging Face hub, which this tool never does) or --random-init')
        torch.manual_seed(seed)
        model = TimmEncoder(name, checkpoint=checkpoint, frozen=True, model_kwargs=model_kwargs)
        model.init_weights()
        ident = dict(encoder=model.identity(), checkpoint=(dict(kind='random', seed=seed) if random_init
                                                           else checkpoint_identity(checkpoint)))
        return model.eval(), ident, name.split('.')[0] if random_init else osp.splitext(osp.basename(checkpoint))[0]

    # an InternViT is built in the run's dtype straight from the checkpoint (on meta: no fp32 copy first)
    kwargs = dict(img_size=img_size, frozen=True, dtype=dtype)
    if patch_size:
        kwargs['patch_size'] = patch_size
    if pretrain_size:
        kwargs['pretrain_size'] = pretrain_size
    if random_init:
        if arch is None:
            raise ExtractError('--random-init needs --arch')
        torch.manual_seed(seed)
        model = InternViT(arch=arch, **kwargs)
    else:
        if not checkpoint:
            raise ExtractError('InternViT: pass --checkpoint (weights in any supported format) or --random-init')
        if arch is not None:
            kwargs['arch'] = arch
        spec, checkpoint = checkpoint, resolve_checkpoint(checkpoint)  # a Hub name: its cached copy
        model = InternViT.from_pretrained(checkpoint, **kwargs)
    # InternViT caches keep the identity they had before other encoders existed (no 'encoder' entry).
    ident = dict(checkpoint=(dict(kind='random', seed=seed) if random_init else checkpoint_identity(checkpoint)),
                 arch=model.arch, patch_size=model.patch_size, pretrain_size=model.pretrain_size)
    name = 'random' if random_init else osp.splitext(osp.basename(osp.normpath(spec)))[0]
    return model.eval(), ident, name


def parse_blocks(text: Optional[str], depth: int) -> List[int]:
    """``'lastN'`` or comma-separated block indices (negative from the end); default: the last 4."""
    if text is None:
        text = f'last{min(4, depth)}'
    if text.startswith('last'):
        n = int(text[4:])
        if not 1 <= n <= depth:
            raise ExtractError(f'--blocks {text}: the backbone has {depth} blocks')
        return list(range(depth - n, depth))
    return sorted({int(b) % depth for b in text.split(',')})


def find_splits(data_root: str, splits: Optional[Sequence[str]] = None, overrides: Optional[Dict[str, str]] = None
                ) -> Tuple[Dict[str, Tuple[str, Optional[str]]], List[Tuple[str, str]]]:
    """({split: (folder, ann_file or None)} of the splits asked for / present, [(split, folder) missing])."""
    from internvit_dense.datasets.imagenet import TRAIN_ANN, TRAIN_PATH, VARIANTS, class_folders, resolve_class_root

    overrides = dict(overrides or {})
    unknown = set(overrides) - set(EXTRACT_SPLITS)
    if unknown:
        raise ExtractError(f'--path: unknown split(s) {sorted(unknown)}; splits are {",".join(EXTRACT_SPLITS)}')
    found, missing = {}, []
    for split in splits or EXTRACT_SPLITS:
        if split not in EXTRACT_SPLITS:
            raise ExtractError(f'unknown split {split!r}; splits are {",".join(EXTRACT_SPLITS)} (ReaL uses in1k)')
        rel, ann = (TRAIN_PATH, TRAIN_ANN) if split == 'train' else (VARIANTS[split].path, VARIANTS[split].ann_file)
        folder = overrides.get(split, osp.join(data_root, rel))
        ann = osp.join(data_root, ann) if ann else None
        if class_folders(resolve_class_root(folder)) or (ann and osp.isfile(ann) and osp.isdir(folder)):
            found[split] = (folder, ann)
        else:
            missing.append((split, folder))
    if splits and missing:
        raise ExtractError('not found: ' + ', '.join(f'{s} ({f})' for s, f in missing))
    return found, missing


def run_extract(data_root: str, encoder: str = 'internvit', checkpoint: Optional[str] = None, arch=None,
                random_init: bool = False, img_size: int = 224, resize_size: Optional[int] = None,
                patch_size: Optional[int] = None, pretrain_size: Optional[int] = None,
                model_kwargs: Optional[dict] = None, blocks: Optional[str] = None,
                splits: Optional[Sequence[str]] = None, paths: Optional[Dict[str, str]] = None,
                real_json: Optional[str] = None, train_views: int = 0, cache_root: str = 'work_dirs/linear_probe/cache',
                name: Optional[str] = None, batch_size: int = 64, chunk_size: int = 1024, workers: int = 4,
                device: Optional[str] = None, precision: Optional[str] = None, dtype: str = 'float16', seed: int = 0,
                restart: bool = False, progress: bool = True, log=print) -> FeatureCache:
    """Extracts every split asked for (or found) into the encoder's cache; resumable. Returns the cache.

    Raises :class:`ExtractError` for a request that cannot be served; ``KeyboardInterrupt``
    leaves the finished chunks in the cache (rerun to continue).
    """
    from internvit_dense.datasets.imagenet import (class_subset, find_real_json, list_split, real_labels_for,
                                                   train_wnids)

    device = device or ('cuda' if torch.cuda.is_available() else 'cpu')
    precision = precision or ('bf16' if device.startswith('cuda') else 'fp32')
    paths = dict(paths or {})
    train_dir = paths.get('train')
    wnids = train_wnids(data_root, train_path=osp.abspath(train_dir) if train_dir else None)
    found, missing = find_splits(data_root, splits, paths)
    if not found:
        raise ExtractError(f'no split found under {data_root}; see internvit_dense/datasets/imagenet.py')

    model, identity, default_name = build_encoder(encoder, checkpoint, arch, img_size, patch_size, pretrain_size,
                                                  random_init, seed, model_kwargs, PRECISION_DTYPES[precision])
    block_list = parse_blocks(blocks, model.depth)
    model.to(device=device, dtype=PRECISION_DTYPES[precision])
    identity.update(img_size=img_size, resize_size=resize_size or img_size, blocks=block_list, precision=precision,
                    dtype=dtype)
    cache = FeatureCache.for_identity(cache_root, identity, name or default_name)
    log(f'feature cache: {cache.root}\n  encoder: {encoder if encoder != "internvit" else "InternViT"}, '
        f'{model.depth} blocks x {model.embed_dims} dims, caching blocks {block_list} (cls + mean patch), '
        f'{precision} on {device}, stored as {dtype}')
    for split, folder in missing:
        log(f'  {split}: not found at {folder}, skipped')

    start = time.time()
    computed = {}
    for split, (folder, ann) in found.items():
        items = list_split(folder, wnids, ann)
        meta = dict(classes=wnids, variant=split, folder=osp.abspath(folder))
        if split in ('a', 'r'):
            meta['class_subset'] = class_subset(items)
        if split == 'in1k':
            real = find_real_json(data_root, real_json)
            if real:
                meta['real_labels'] = real_labels_for(items, real)
                meta['real_json'] = osp.abspath(real)
        augment = split == 'train' and train_views > 0
        pipeline = train_pipeline(img_size) if augment else eval_pipeline(img_size, resize_size)
        if restart and not cache.is_complete(split):
            cache.drop_split(split)
        for problem in cache.drop_if_damaged(split):
            log(f'  {split}: {problem}; extracting the split again')
        before = len(cache.splits.get(split, {}).get('done', []))
        try:
            info = extract_split(cache, split, [p for p, _ in items], [lab for _, lab in items], model, pipeline,
                                 views=train_views if augment else 1, seed=seed, batch_size=batch_size,
                                 chunk_size=chunk_size, num_workers=workers, dtype=dtype, meta=meta,
                                 progress=progress)
        except KeyboardInterrupt:
            info = cache.splits[split]
            log(f'\ninterrupted: {split} has {len(info["done"])}/{info["num_chunks"]} chunks; '
                'rerun the same command to finish without recomputing them')
            raise
        computed[split] = (info, len(info['done']) - before)

    log(f'\nextraction finished in {time.time() - start:.1f} s: {cache.root}')
    log(f"{'split':<8}{'images':>8}{'views':>7}{'chunks':>8}{'computed':>10}  status")
    for split, (info, new) in computed.items():
        status = 'complete' if info['complete'] else 'INCOMPLETE'
        log(f"{split:<8}{info['num_images']:>8}{info['views']:>7}{info['num_chunks']:>8}{new:>10}  {status}")
    return cache
