"""Running the frozen backbone over a split once and filling the feature cache.

Images go through the same mmcv pipelines as the training config (BGR uint8, then
normalised on the device like ``ImgDataPreprocessor(bgr_to_rgb=True)``). Augmented
training views are seeded per (seed, view, image), so a view is the same whichever
worker, batch or run produces it: a resumed extraction equals an uninterrupted one.
"""
from __future__ import annotations

from typing import Callable, Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch
from mmcv.transforms import Compose
from torch.utils.data import DataLoader, Dataset

from internvit_dense.datasets.imagenet_transforms import IMAGENET_MEAN, IMAGENET_STD
from internvit_dense.models.classifiers.linear_probe import block_tokens

from .cache import FeatureCache, Key


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
