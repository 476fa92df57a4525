"""The linear depth probe of DINOv2's depth evaluation (``BNHead`` with ``classify=True``), restated.

Per selected block, the patch map and the class token broadcast over it are concatenated (2C channels);
the blocks' maps are resized to the first one's grid times ``upsample`` (4) and concatenated; a
BatchNorm and a 1x1 conv give ``n_bins`` (256) scores per pixel; the scores are made a distribution by
"linear" normalisation (ReLU, + 0.1, divided by their sum: AdaBins') and the depth is the expectation
over bin centres spread uniformly ("UD") from ``min_depth`` to ``max_depth``.

DINOv2's published ``BNHead`` has its BatchNorm commented out (and its hub models load without one);
the paper and the issue describe BN + linear, which is ``with_bn=True`` here, the default; ``with_bn=False``
gives the published code's head. Its log-spaced "SID" bins are not offered: its code spaces
``torch.logspace(min, max)``, i.e. 10^min..10^max, and none of its configs use them.
"""
from typing import Optional, Sequence, Union

import torch
import torch.nn as nn
from mmcv.cnn import build_norm_layer
from mmseg.models.utils import resize
from torch import Tensor

from ..registry import SEG_MODELS
from .depth_head import DepthDecodeHead, split_class_token

NORM_STRATEGIES = ('linear', 'softmax')


@SEG_MODELS.register_module()
class BNBinsDepthHead(DepthDecodeHead):
    """BatchNorm + 1x1 conv into depth bins, on [patch tokens, class token] of 1 or 4 blocks.

    Args:
        in_channels: the backbone's width C (each selected block gives 2C channels with the class token).
        in_index: the backbone outputs to read (``out_indices`` picks the blocks; this picks among them).
        use_class_token: concatenate the class token to every patch (DINOv2's "[patch, cls]"); needs a
            backbone output pair per block (``ViTDepthEstimator`` asks for them).
        upsample: the grid is upsampled this many times before the norm and the conv (DINOv2: 4).
        n_bins: depth bins (DINOv2: 256), uniform between ``min_depth`` and ``max_depth``.
        norm_strategy: ``'linear'`` (DINOv2's) or ``'softmax'``.
        with_bn: the BatchNorm before the conv (see the module docstring).
        norm_cfg: its config (SyncBN on GPUs, BN on a CPU).
    """

    def __init__(self,
                 in_channels: int,
                 in_index: Union[int, Sequence[int]] = -1,
                 use_class_token: bool = True,
                 upsample: int = 4,
                 n_bins: int = 256,
                 norm_strategy: str = 'linear',
                 with_bn: bool = True,
                 norm_cfg: Optional[dict] = None,
                 **kwargs):
        super().__init__(in_channels=in_channels, in_index=in_index, **kwargs)
        if norm_strategy not in NORM_STRATEGIES:
            raise ValueError(f'norm_strategy must be one of {NORM_STRATEGIES}, got {norm_strategy!r}')
        if n_bins < 2 or upsample < 1:
            raise ValueError(f'need n_bins >= 2 and upsample >= 1, got n_bins={n_bins}, upsample={upsample}')
        self.use_class_token = use_class_token
        self.upsample = upsample
        self.n_bins = n_bins
        self.norm_strategy = norm_strategy
        self.feat_channels = in_channels * len(self.in_index) * (2 if use_class_token else 1)
        self.bn = build_norm_layer(norm_cfg or dict(type='BN'), self.feat_channels)[1] if with_bn else nn.Identity()
        self.conv_depth = nn.Conv2d(self.feat_channels, n_bins, kernel_size=1)
        self.register_buffer('bin_centres', torch.linspace(self.min_depth, self.max_depth, n_bins), persistent=False)

    @property
    def needs_class_token(self) -> bool:
        return self.use_class_token

    def features(self, inputs) -> Tensor:
        """The concatenated, upsampled (B, feat_channels, H, W) map the norm and the conv read."""
        maps = []
        for feature in self.select(inputs):
            x, cls_tok = split_class_token(feature)
            if self.use_class_token:
                if cls_tok is None:
                    raise ValueError('BNBinsDepthHead(use_class_token=True) got no class token: build it in a '
                                     'ViTDepthEstimator, which asks the backbone for (patch map, class token) pairs')
                x = torch.cat([x, cls_tok[:, :, None, None].expand_as(x)], dim=1)
            maps.append(x)
        size = [s * self.upsample for s in maps[0].shape[2:]]
        maps = [resize(m, size=size, mode='bilinear', align_corners=self.align_corners) for m in maps]
        return torch.cat(maps, dim=1)

    def bins_to_depth(self, logits: Tensor) -> Tensor:
        """(B, n_bins, H, W) scores -> (B, 1, H, W) expected depth over the bin centres."""
        if self.norm_strategy == 'linear':
            probs = torch.relu(logits) + 0.1
            probs = probs / probs.sum(dim=1, keepdim=True)
        else:
            probs = logits.softmax(dim=1)
        return torch.einsum('bkhw,k->bhw', probs, self.bin_centres.to(probs.dtype))[:, None]

    def forward(self, inputs) -> Tensor:
        return self.bins_to_depth(self.conv_depth(self.bn(self.features(inputs))))
