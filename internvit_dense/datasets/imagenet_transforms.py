"""Classification transforms that mmcv 2.x lacks: random-resized crop, short-edge resize, packing.

mmcv supplies ``LoadImageFromFile``, ``RandomFlip`` and ``CenterCrop``; with these the
linear-probe pipelines read like torchvision's (``RandomResizedCrop + flip`` for
training, ``Resize(short edge) + CenterCrop`` for evaluation). Images stay BGR uint8
HWC, as mmcv loads them; the data preprocessor converts and normalises on the device.

Randomness comes from ``np.random`` (as in mmcv's own transforms), so that seeding it
per sample makes a view reproducible (the feature cache relies on that).
"""
from __future__ import annotations

import math
from typing import Sequence, Tuple, Union

import mmcv
import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmengine.registry import TRANSFORMS
from mmengine.structures import BaseDataElement

# ImageNet statistics in RGB order, 0-255 scale (the preprocessor converts BGR first).
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


def _pair(size: Union[int, Sequence[int]]) -> Tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


@TRANSFORMS.register_module()
class RandomResizedCrop(BaseTransform):
    """Crop a random area (``scale`` of the image) and aspect ratio (``ratio``, log-uniform),
    resized to ``size``; after 10 failed draws, the largest central crop of a clamped ratio.

    Args:
        size: output side, or (h, w).
    """

    def __init__(self, size: Union[int, Sequence[int]], scale: Tuple[float, float] = (0.08, 1.0),
                 ratio: Tuple[float, float] = (3 / 4, 4 / 3), interpolation: str = 'bicubic'):
        self.size = _pair(size)
        self.scale = tuple(scale)
        self.ratio = tuple(ratio)
        self.interpolation = interpolation

    def crop_box(self, h: int, w: int) -> Tuple[int, int, int, int]:
        """(top, left, height, width) of the crop in an h x w image."""
        area = h * w
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * np.random.uniform(*self.scale)
            aspect = math.exp(np.random.uniform(*log_ratio))
            cw = int(round(math.sqrt(target * aspect)))
            ch = int(round(math.sqrt(target / aspect)))
            if 0 < cw <= w and 0 < ch <= h:
                return int(np.random.randint(0, h - ch + 1)), int(np.random.randint(0, w - cw + 1)), ch, cw
        aspect = w / h
        if aspect < self.ratio[0]:
            cw, ch = w, int(round(w / self.ratio[0]))
        elif aspect > self.ratio[1]:
            ch, cw = h, int(round(h * self.ratio[1]))
        else:
            ch, cw = h, w
        return (h - ch) // 2, (w - cw) // 2, ch, cw

    def transform(self, results: dict) -> dict:
        img = results['img']
        top, left, ch, cw = self.crop_box(*img.shape[:2])
        crop = img[top:top + ch, left:left + cw]
        results['img'] = mmcv.imresize(crop, (self.size[1], self.size[0]), interpolation=self.interpolation)
        results['img_shape'] = results['img'].shape[:2]
        return results

    def __repr__(self):
        return f'{type(self).__name__}(size={self.size}, scale={self.scale}, ratio={self.ratio})'


@TRANSFORMS.register_module()
class ResizeShortEdge(BaseTransform):
    """Resize so that the short edge is ``size``, keeping the aspect ratio (torchvision's ``Resize(int)``)."""

    def __init__(self, size: int, interpolation: str = 'bicubic'):
        self.size = int(size)
        self.interpolation = interpolation

    def transform(self, results: dict) -> dict:
        img = results['img']
        h, w = img.shape[:2]
        if h <= w:
            nh, nw = self.size, max(1, int(self.size * w / h))
        else:
            nh, nw = max(1, int(self.size * h / w)), self.size
        if (nh, nw) != (h, w):
            img = mmcv.imresize(img, (nw, nh), interpolation=self.interpolation)
        results['img'] = img
        results['img_shape'] = img.shape[:2]
        return results

    def __repr__(self):
        return f'{type(self).__name__}(size={self.size})'


@TRANSFORMS.register_module()
class PackClsInputs(BaseTransform):
    """-> ``dict(inputs=CHW uint8 tensor, data_samples=BaseDataElement(gt_label, [real_labels], metainfo))``."""

    META_KEYS = ('img_path', 'ori_shape', 'img_shape', 'sample_idx')

    def transform(self, results: dict) -> dict:
        img = np.ascontiguousarray(results['img'])
        if img.ndim == 2:
            img = img[..., None]
        sample = BaseDataElement(metainfo={k: results[k] for k in self.META_KEYS if k in results})
        sample.gt_label = torch.tensor([int(results['gt_label'])])
        if 'real_labels' in results:
            # ReaL sets vary in length; kept as a metainfo list so collation leaves them alone.
            sample.set_metainfo(dict(real_labels=list(results['real_labels'])))
        return dict(inputs=torch.from_numpy(img).permute(2, 0, 1).contiguous(), data_samples=sample)
