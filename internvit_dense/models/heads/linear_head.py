"""The linear-probing head of the InternVL segmentation recipe: BatchNorm, then a 1x1 conv."""
import torch
from mmcv.cnn import build_norm_layer
from mmseg.models.decode_heads.decode_head import BaseDecodeHead

from ..registry import SEG_MODELS


@SEG_MODELS.register_module()
class BNLinearHead(BaseDecodeHead):
    """Normalises the (frozen) features and classifies each position with a 1x1 conv.

    The norm matters for linear probing: frozen ViT features have per-channel
    scales that differ by orders of magnitude, which a plain linear layer trained
    with one learning rate copes with badly.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if self.in_channels != self.channels:
            raise ValueError(f'a linear head classifies its input directly: channels ({self.channels}) must equal '
                             f'in_channels ({self.in_channels})')
        self.bn = build_norm_layer(self.norm_cfg or dict(type='BN'), self.in_channels)[1]

    def forward(self, inputs) -> torch.Tensor:
        return self.cls_seg(self.bn(self._transform_inputs(inputs)))
