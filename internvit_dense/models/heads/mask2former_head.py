"""Mask2Former for semantic segmentation: mmseg 1.x's ``Mask2FormerHead`` (on mmdet's pixel decoder and
transformer decoder), with slide inference fixed.

mmseg's head upsamples its mask predictions to the batch's ``pad_shape`` (or ``img_shape`` when there is
none). Slide inference runs the head once per window and, to say so, overwrites only ``img_shape`` with the
window's size (a ``torch.Size``): a padded test batch then gets window logits of the whole padded image's
size, which do not fit the window they are added into. mmseg's other heads (``BaseDecodeHead.predict_by_feat``)
take a ``torch.Size`` ``img_shape`` as the window's size; this head does the same.
"""
from typing import List, Tuple

import torch
from mmseg.models.decode_heads import Mask2FormerHead
from mmseg.utils import ConfigType
from torch import Tensor

from ..registry import SEG_MODELS


@SEG_MODELS.register_module()
class SlideSafeMask2FormerHead(Mask2FormerHead):
    """mmseg's ``Mask2FormerHead`` whose logits have the window's size in slide inference (same config keys)."""

    def predict(self, x: Tuple[Tensor], batch_img_metas: List[dict], test_cfg: ConfigType) -> Tensor:
        # mmseg resizes to pad_shape, left at the whole image's by slide inference (mmsegmentation PR 3752, issue 3666)
        if isinstance(batch_img_metas[0].get('img_shape'), torch.Size):  # set so by EncoderDecoder.slide_inference
            batch_img_metas = [dict(meta, pad_shape=tuple(meta['img_shape'])) for meta in batch_img_metas]
        return super().predict(x, batch_img_metas, test_cfg)
