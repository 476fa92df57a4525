"""Mask2Former for semantic segmentation: mmseg 1.x's ``Mask2FormerHead`` (on mmdet's pixel decoder and
transformer decoder), with slide inference fixed.

mmseg's head upsamples its mask predictions to the batch's ``pad_shape`` (or ``img_shape`` when there is
none). Slide inference runs the head once per window and, to say so, overwrites only ``img_shape`` with the
window's size (a ``torch.Size``): a padded test batch then gets window logits of the whole padded image's
size, which do not fit the window they are added into. mmseg's other heads (``BaseDecodeHead.predict_by_feat``)
take a ``torch.Size`` ``img_shape`` as the window's size; this head does the same.

Its decoder's position encoding (mmdet's fp32 ``SinePositionalEncoding``) has the dtype of the head's weights, so
that a head cast whole to bf16 (DeepSpeed bf16) runs (``fp32_ops.encoding_in_dtype_of``), and its losses are
computed in fp32 whatever the head's dtype.
"""
from typing import List, Tuple

import torch
from mmseg.models.decode_heads import Mask2FormerHead
from mmseg.utils import ConfigType
from torch import Tensor

from ..fp32_ops import encoding_in_dtype_of
from ..registry import SEG_MODELS


@SEG_MODELS.register_module()
class SlideSafeMask2FormerHead(Mask2FormerHead):
    """mmseg's ``Mask2FormerHead`` whose logits have the window's size in slide inference (same config keys)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        encoding_in_dtype_of(self.decoder_positional_encoding, lambda: self.query_embed.weight)

    def loss_by_feat(self, all_cls_scores: List[Tensor], all_mask_preds: List[Tensor], batch_gt_instances,
                     batch_img_metas: List[dict]) -> dict:
        # fp32: mmdet samples the bf16 masks of a bf16 head at fp32 points (grid_sample wants one dtype), and the
        # dice and sigmoid losses average 12544 points per mask; under autocast this is what grid_sample did already
        return super().loss_by_feat([c.float() for c in all_cls_scores], [m.float() for m in all_mask_preds],
                                    batch_gt_instances, batch_img_metas)

    def predict(self, x: Tuple[Tensor], batch_img_metas: List[dict], test_cfg: ConfigType) -> Tensor:
        # mmseg resizes to pad_shape, left at the whole image's by slide inference (mmsegmentation PR 3752, issue 3666)
        if isinstance(batch_img_metas[0].get('img_shape'), torch.Size):  # set so by EncoderDecoder.slide_inference
            batch_img_metas = [dict(meta, pad_shape=tuple(meta['img_shape'])) for meta in batch_img_metas]
        return super().predict(x, batch_img_metas, test_cfg)
