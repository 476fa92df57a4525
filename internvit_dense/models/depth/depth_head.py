"""What the depth heads share: the depth range, the ground truth they learn from, and their losses.

mmseg 1.2's ``BaseDecodeHead`` is a classifier (``conv_seg``, class weights, a binary threshold); a depth
head keeps its ``predict`` (resize to the input) and ``loss`` (forward, then ``loss_by_feat``) and builds
none of the rest, as mmseg's own ``VPDDepthHead`` does.
"""
from typing import List, Sequence, Union

import torch
import torch.nn as nn
from mmengine.model import BaseModule
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.models.losses import SiLogLoss
from mmseg.models.utils import resize
from torch import Tensor

from ..registry import SEG_MODELS


class DepthDecodeHead(BaseDecodeHead):
    """Base of the depth heads: ``forward`` returns depth in metres, (B, 1, h, w).

    Args:
        in_channels: channels of one selected block's patch tokens (the backbone's width).
        in_index: which of the backbone's outputs the head reads.
        min_depth, max_depth: the data set's depth range (NYU 1e-3..10 m, KITTI 1e-3..80 m). Ground truth
            outside ``(min_depth, max_depth]`` is not learned from (see :meth:`valid_depth`).
        loss_decode: a loss config or a list of them, each called as ``loss(pred, gt)`` on (B, 1, H, W)
            tensors where invalid ground truth is 0.
        align_corners: of the bilinear resizes.
    """

    num_classes = 1
    out_channels = 1

    def __init__(self,
                 in_channels: int,
                 in_index: Union[int, Sequence[int]] = -1,
                 min_depth: float = 1e-3,
                 max_depth: float = 10.0,
                 loss_decode: Union[dict, List[dict]] = dict(type='SiLogLoss'),
                 align_corners: bool = False,
                 init_cfg=None):
        BaseModule.__init__(self, init_cfg=init_cfg)  # not BaseDecodeHead's: it builds a classifier
        if not 0 < min_depth < max_depth:
            raise ValueError(f'need 0 < min_depth < max_depth, got min_depth={min_depth}, max_depth={max_depth}')
        self.in_channels = in_channels
        self.in_index = list(in_index) if isinstance(in_index, (list, tuple)) else [in_index]
        self.min_depth, self.max_depth = float(min_depth), float(max_depth)
        self.align_corners = align_corners
        losses = loss_decode if isinstance(loss_decode, (list, tuple)) else [loss_decode]
        if not losses:
            raise ValueError('loss_decode is empty: a depth head needs at least one loss')
        self.loss_decode = nn.ModuleList([SEG_MODELS.build(cfg) for cfg in losses])

    def select(self, inputs: Sequence) -> list:
        """The backbone outputs the head reads, in ``in_index`` order."""
        try:
            return [inputs[i] for i in self.in_index]
        except IndexError:
            raise IndexError(f'{type(self).__name__}: in_index {self.in_index} but the backbone gives '
                             f'{len(inputs)} outputs (its out_indices)') from None

    def valid_depth(self, gt: Tensor) -> Tensor:
        """The ground truth with every pixel that must not count set to 0, which the losses skip: no measurement
        (0), padding, values beyond the range (KITTI's sparse maps hold 0 where no lidar point fell)."""
        keep = torch.isfinite(gt) & (gt > self.min_depth) & (gt <= self.max_depth)
        return torch.where(keep, gt, torch.zeros_like(gt))

    def loss_by_feat(self, pred_depth: Tensor, batch_data_samples) -> dict:
        gt = torch.stack([s.gt_depth_map.data for s in batch_data_samples]).to(pred_depth.dtype)
        gt = self.valid_depth(gt)
        pred = resize(pred_depth, size=gt.shape[2:], mode='bilinear', align_corners=self.align_corners)
        # mmseg's SiLogLoss takes sqrt(0) (a NaN gradient) for an image with no valid pixel (a crop of sky or of
        # holes): such an image gets a stand-in target and weight 0, without reading a value (the memory plan
        # traces this on fake tensors)
        has_valid = (gt > 0).flatten(1).any(1).to(pred.dtype)
        stand_in = torch.where(has_valid[:, None, None, None] > 0, gt, 2 * pred.detach())
        losses = {}
        for loss in self.loss_decode:
            if isinstance(loss, SiLogLoss):
                per_image = loss(pred, stand_in, reduction_override='none')
                value = (per_image * has_valid).sum() / has_valid.sum().clamp(min=1)
            else:
                value = loss(pred, gt)
            losses[loss.loss_name] = losses.get(loss.loss_name, 0) + value
        return losses

    def predict_by_feat(self, pred_depth: Tensor, batch_img_metas: List[dict]) -> Tensor:
        # BaseDecodeHead's: resize to the (padded) input; ours clamps to the range as DINOv2's evaluation does
        return super().predict_by_feat(pred_depth, batch_img_metas).clamp(self.min_depth, self.max_depth)


def split_class_token(feature):
    """A backbone output as (patch map (B, C, h, w), class token (B, C) or None)."""
    if isinstance(feature, (tuple, list)):
        if len(feature) != 2:
            raise ValueError(f'expected (patch map, class token), got a sequence of {len(feature)}')
        return feature[0], feature[1]
    return feature, None
