"""The evaluation sets of the benchmark: where they live by default and how each is scored.

Kept free of heavy imports: ``sweep`` and ``eval`` read only the feature cache.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional


@dataclass(frozen=True)
class Variant:
    """An evaluation set and how it is scored (see :mod:`internvit_dense.linear_probe.scoring`).

    ``rule``: ``top1`` over all classes; ``subset``: logits restricted to the classes the
    set contains (ImageNet-A/-R); ``real``: correct if the prediction is in the image's
    ReaL label set, images without labels skipped.
    """
    name: str
    title: str
    path: str  # default folder, relative to the data root
    rule: str
    ann_file: Optional[str] = None  # used when ``path`` has no class folders
    paper_6b: Optional[float] = None  # InternViT-6B linear probe in the InternVL paper (top-1 %)


TRAIN_PATH, TRAIN_ANN = 'imagenet-1k/train', 'imagenet-1k/meta/train.txt'
REAL_JSON_CANDIDATES = ('imagenet-1k/real.json', 'imagenet-real/real.json', 'real.json')
VARIANTS: Dict[str, Variant] = {v.name: v for v in (
    Variant('in1k', 'ImageNet-1k val', 'imagenet-1k/val', 'top1', 'imagenet-1k/meta/val.txt', 88.2),
    Variant('real', 'ImageNet-ReaL', 'imagenet-1k/val', 'real', 'imagenet-1k/meta/val.txt', 90.4),
    Variant('v2', 'ImageNet-V2', 'imagenetv2', 'top1', None, 79.9),
    Variant('a', 'ImageNet-A', 'imagenet-a', 'subset', None, 77.5),
    Variant('r', 'ImageNet-R', 'imagenet-r', 'subset', None, 89.8),
    Variant('sketch', 'ImageNet-Sketch', 'imagenet-sketch', 'top1', None, 69.1),
)}
# The split of the feature cache that holds each variant's features (ReaL re-scores the val split).
CACHE_SPLIT = {name: ('in1k' if name == 'real' else name) for name in VARIANTS}
