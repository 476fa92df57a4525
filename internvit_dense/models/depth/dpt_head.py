"""The DPT depth head of DINOv2's depth evaluation (Ranftl et al., "Vision Transformers for Dense Prediction").

Four blocks' [patch map, class token] pairs are *reassembled* into a 4-level pyramid: the "project" readout
(the class token concatenated to every patch, Linear 2C -> C, GELU), a 1x1 conv to ``post_process_channels``,
then x4 (transposed conv), x2 (transposed conv), x1, x1/2 (stride-2 conv); a 3x3 conv takes each level to
``channels``; *fusion* runs coarse to fine (pre-activation residual conv units, x2 bilinear upsampling, 1x1
projection); a 3x3 ConvModule and the depth *head* (3x3 conv to C/2, x2 upsampling, 3x3 conv to 32, ReLU, 1x1
conv to 1) follow, and the depth is ``ReLU(output) + min_depth``. The reassemble and fusion blocks are
mmseg's (``mmseg.models.decode_heads.dpt_head``: the same modules, from the same DPT code), so only the depth
output is written here.
"""
from typing import Optional, Sequence

import torch.nn as nn
from mmcv.cnn import ConvModule
from mmseg.models.decode_heads.dpt_head import FeatureFusionBlock, ReassembleBlocks
from torch import Tensor

from ..registry import SEG_MODELS
from .depth_head import DepthDecodeHead, split_class_token


@SEG_MODELS.register_module()
class DPTDepthHead(DepthDecodeHead):
    """DPT on 4 blocks of a ViT, depth by regression.

    Args:
        in_channels: the backbone's width C.
        in_index: the 4 backbone outputs to reassemble, shallow to deep.
        channels: the fusion width (DINOv2: 256).
        post_process_channels: the reassembled levels' widths, fine to coarse (DINOv2: C/8, C/4, C/2, C).
        readout_type: ``'project'`` (DINOv2's), ``'add'`` or ``'ignore'``.
        patch_size: the backbone's patch size (14).
        norm_cfg, act_cfg: of the fusion blocks' conv units and of the last ConvModule.
        init_depth: the bias of the last conv at the start, in metres (see below).
    """

    def __init__(self,
                 in_channels: int,
                 in_index: Sequence[int] = (0, 1, 2, 3),
                 channels: int = 256,
                 post_process_channels: Optional[Sequence[int]] = None,
                 readout_type: str = 'project',
                 patch_size: int = 14,
                 norm_cfg: Optional[dict] = None,
                 act_cfg: dict = dict(type='ReLU'),
                 init_depth: float = 1.0,
                 **kwargs):
        super().__init__(in_channels=in_channels, in_index=in_index, **kwargs)
        if len(self.in_index) != 4:
            raise ValueError(f'DPT reassembles 4 blocks; in_index has {len(self.in_index)}: {self.in_index}')
        post = list(post_process_channels or [in_channels // 2**(3 - i) for i in range(4)])
        self.readout_type = readout_type
        self.channels = channels
        self.reassemble_blocks = ReassembleBlocks(in_channels, post, readout_type, patch_size)
        self.convs = nn.ModuleList(
            [ConvModule(c, channels, kernel_size=3, padding=1, act_cfg=None, bias=False) for c in post])
        self.fusion_blocks = nn.ModuleList(
            [FeatureFusionBlock(channels, act_cfg, norm_cfg) for _ in range(4)])
        self.fusion_blocks[0].res_conv_unit1 = None  # the coarsest level has nothing coarser to fuse
        self.project = ConvModule(channels, channels, kernel_size=3, padding=1, norm_cfg=norm_cfg)
        self.conv_depth = nn.Sequential(
            nn.Conv2d(channels, channels // 2, kernel_size=3, padding=1),
            nn.Upsample(scale_factor=2, mode='bilinear', align_corners=True),
            nn.Conv2d(channels // 2, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 1, kernel_size=1))
        # The output is ReLU(x) + min_depth: started near 0 (PyTorch's default bias), most pixels begin below 0,
        # where the ReLU passes no gradient, and the tiny config's head died there (every prediction min_depth
        # after 50 iterations). Starting at init_depth metres keeps the ReLU open from the first step.
        nn.init.constant_(self.conv_depth[-1].bias, init_depth)

    @property
    def needs_class_token(self) -> bool:
        return self.readout_type != 'ignore'

    def forward(self, inputs) -> Tensor:
        pairs = []
        for feature in self.select(inputs):
            x, cls_tok = split_class_token(feature)
            if cls_tok is None and self.needs_class_token:
                raise ValueError(f"DPTDepthHead(readout_type='{self.readout_type}') got no class token: build it "
                                 'in a ViTDepthEstimator, which asks the backbone for (patch map, class token) pairs')
            pairs.append([x, cls_tok])
        levels = [conv(x) for conv, x in zip(self.convs, self.reassemble_blocks(pairs))]
        out = self.fusion_blocks[0](levels[-1])
        for i in range(1, 4):
            out = self.fusion_blocks[i](out, levels[-(i + 1)])
        return self.conv_depth(self.project(out)).relu() + self.min_depth
