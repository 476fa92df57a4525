"""Linear probing: a frozen InternViT, a feature from its blocks, BatchNorm and one linear layer.

The feature (InternVL's ``cls_patch_concat``, generalised DINOv2-style) is the cls
tokens of the last ``n_last_blocks`` blocks, followed, with ``avgpool``, by the mean
of the last block's patch tokens. ``n_last_blocks=1, avgpool=True`` is InternVL's
recipe: [cls || mean patch] of the last block, 6400-d for the 6B model.

The head is BatchNorm (eps 1e-6) and a linear layer initialised N(0, 0.01). The
BatchNorm has affine parameters with ``bn_affine=True``, as InternVL's own head
(``SyncBatchNorm(6400, eps=1e-6)`` + ``Linear(6400, 1000)``, 6,413,800 trainable
parameters for 6B on ImageNet-1k; its released ``intern_vit_6b_224px_head.pth`` holds
them); without, only the linear layer learns (6,401,000) and the function class is the same.
"""
from __future__ import annotations

import logging
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.logging import print_log
from mmengine.model import BaseModel
from mmengine.registry import MODELS
from mmengine.structures import BaseDataElement


def block_tokens(backbone, images: torch.Tensor, blocks: Sequence[int]) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """(cls token (B, C), mean of patch tokens (B, C)) of each of ``blocks``, in that order."""
    outs = backbone.get_intermediate_layers(images, n=list(blocks), return_class_token=True)
    return [(cls_tok, patches.mean(dim=1)) for patches, cls_tok in outs]


def probe_feature(tokens: Sequence[Tuple[torch.Tensor, torch.Tensor]], avgpool: bool) -> torch.Tensor:
    """Concatenate the cls tokens of ``tokens`` (oldest block first), then the last block's mean patch."""
    parts = [cls_tok for cls_tok, _ in tokens]
    if avgpool:
        parts.append(tokens[-1][1])
    return torch.cat(parts, dim=-1)


class LinearProbeHead(nn.Module):
    """BatchNorm1d(eps=1e-6, affine or not) + Linear, the linear layer initialised N(0, 0.01)."""

    def __init__(self, in_dims: int, num_classes: int, bn_eps: float = 1e-6, init_std: float = 0.01,
                 bn_affine: bool = False):
        super().__init__()
        self.bn = nn.BatchNorm1d(in_dims, affine=bn_affine, eps=bn_eps)
        self.fc = nn.Linear(in_dims, num_classes)
        nn.init.normal_(self.fc.weight, std=init_std)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Statistics in fp32: under AMP a 6400-d batch variance in fp16 loses the small features. In the BatchNorm's
        # own dtype, which is fp32 except under DeepSpeed bf16/fp16: it casts every module, buffers included
        # (configs/_base_/deepspeed/zero1_bf16.py), and BatchNorm refuses an input of another dtype than its weights.
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = self.bn(x.to(self.bn.running_mean.dtype))
        return self.fc(x)


@MODELS.register_module()
class LinearProbeClassifier(BaseModel):
    """Frozen backbone + :class:`LinearProbeHead`, trained through the mmengine runner.

    Args:
        backbone: an ``InternViT`` config; ``frozen=True`` is forced (this is a probe).
        num_classes: 1000 for ImageNet-1k.
        n_last_blocks / avgpool: the feature, see the module docstring.
        bn_affine: the head's BatchNorm has a learned scale and shift (InternVL's head).
        save_backbone: put the backbone's weights into checkpoints. ``None`` (default):
            only when they cannot be rebuilt, i.e. unless the backbone is loaded from a
            pretrained checkpoint; a head-only checkpoint of the 6B probe is 26 MB instead
            of 24 GB, and loading it fills the backbone from that pretrained checkpoint.
    """

    def __init__(self, backbone: dict, num_classes: int = 1000, n_last_blocks: int = 1, avgpool: bool = True,
                 bn_eps: float = 1e-6, init_std: float = 0.01, bn_affine: bool = False,
                 save_backbone: Optional[bool] = None,
                 data_preprocessor: Optional[dict] = None, init_cfg: Optional[dict] = None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        backbone = dict(backbone, frozen=True)
        self.backbone = MODELS.build(backbone)
        depth = self.backbone.depth
        if not 1 <= n_last_blocks <= depth:
            raise ValueError(f'n_last_blocks must be in 1..{depth}, got {n_last_blocks}')
        self.blocks = list(range(depth - n_last_blocks, depth))
        self.avgpool = avgpool
        self.num_classes = num_classes
        in_dims = self.backbone.embed_dims * (n_last_blocks + int(avgpool))
        self.head = LinearProbeHead(in_dims, num_classes, bn_eps, init_std, bn_affine)
        pretrained = (backbone.get('init_cfg') or {}).get('type') == 'Pretrained'
        self.save_backbone = (not pretrained) if save_backbone is None else save_backbone
        if not self.save_backbone and not pretrained:
            raise ValueError('save_backbone=False needs a backbone with a Pretrained init_cfg: otherwise a '
                             'checkpoint could not be used again')
        self.register_load_state_dict_post_hook(LinearProbeClassifier._fill_backbone_if_missing)

    # ------------------------------------------------------------ forward
    def extract_feat(self, inputs: torch.Tensor) -> torch.Tensor:
        return probe_feature(block_tokens(self.backbone, inputs, self.blocks), self.avgpool)

    def forward(self, inputs: torch.Tensor, data_samples: Optional[List[BaseDataElement]] = None,
                mode: str = 'tensor'):
        logits = self.head(self.extract_feat(inputs))
        if mode == 'tensor':
            return logits
        if mode == 'loss':
            labels = torch.cat([s.gt_label for s in data_samples]).to(logits.device)
            return dict(loss=F.cross_entropy(logits.float(), labels))
        if mode == 'predict':
            return self._predictions(logits, data_samples)
        raise ValueError(f"mode must be 'tensor', 'loss' or 'predict', got {mode!r}")

    @staticmethod
    def _predictions(logits: torch.Tensor, data_samples) -> List[BaseDataElement]:
        scores = logits.float().softmax(dim=-1).cpu()
        out = []
        for i, score in enumerate(scores):
            sample = data_samples[i] if data_samples is not None else BaseDataElement()
            sample.pred_score = score
            sample.pred_label = score.argmax().view(1)
            out.append(sample)
        return out

    # --------------------------------------------------- head-only checkpoints
    def state_dict(self, *args, destination=None, prefix: str = '', keep_vars: bool = False):
        sd = super().state_dict(*args, destination=destination, prefix=prefix, keep_vars=keep_vars)
        if not self.save_backbone:
            for key in [k for k in sd if k.startswith(prefix + 'backbone.')]:
                del sd[key]
        return sd

    @staticmethod
    def _fill_backbone_if_missing(module: 'LinearProbeClassifier', incompatible):
        """A head-only checkpoint: take the frozen backbone from its pretrained checkpoint instead."""
        missing = [k for k in incompatible.missing_keys if k.startswith('backbone.')]
        if not missing or module.save_backbone:
            return
        if not module.backbone.is_init:
            print_log('LinearProbeClassifier: the checkpoint holds the head only; loading the frozen backbone '
                      f"from {module.backbone.init_cfg['checkpoint']}", logger='current', level=logging.INFO)
            module.backbone.init_weights()
        for k in missing:
            incompatible.missing_keys.remove(k)


def count_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
