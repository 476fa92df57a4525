"""mmseg 1.2's ``DepthEstimator`` with what a ViT depth probe needs, and two of its traps fixed.

* The heads read DINOv2's [patch map, class token] pairs: a head with ``needs_class_token`` gets
  ``backbone.get_intermediate_layers(x, out_indices, reshape=True, return_class_token=True)`` (InternViT's
  and the library encoders' DINOv2-style interface) instead of ``backbone(x)`` (patch maps only).
* ``test_cfg.mode='slide'`` really slides. Upstream's ``inference`` tests ``mode == 'slide'`` and then
  ``mode == 'slide_flip'`` with an ``else`` that runs whole-image inference, so a slide result is
  overwritten by a whole-image one (open-mmlab/mmsegmentation issue 3655).
* The ground truth is padded with 0 (no depth), never 255. ``stack_batch`` pads ``gt_depth_map`` with the
  preprocessor's ``seg_pad_val`` (255 in every segmentation config), which mmseg's ``SiLogLoss`` counts as
  valid 255 m pixels; a depth model whose preprocessor pads with anything but 0 is refused when built.
* Flip test-time augmentation for any mode: ``test_cfg=dict(..., flip=True)`` averages the prediction with
  that of the mirrored image, mirrored back (upstream has it only as ``'slide_flip'``, which is kept).
"""
from typing import List

import torch
from mmengine.model import BaseTTAModel
from mmengine.structures import PixelData
from mmseg.models.segmentors import DepthEstimator
from torch import Tensor

from ..registry import SEG_MODELS

TEST_MODES = ('whole', 'slide', 'slide_flip')


@SEG_MODELS.register_module()
class ViTDepthEstimator(DepthEstimator):
    """``DepthEstimator`` for ViT features with a class token; see the module docstring."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        pad = getattr(self.data_preprocessor, 'seg_pad_val', 0)
        if pad != 0:
            raise ValueError(f'data_preprocessor.seg_pad_val={pad}: depth ground truth must be padded with 0 (no '
                             'depth), which the losses and metrics skip; any other value is learned as a real depth '
                             '(mmseg pads gt_depth_map with seg_pad_val, 255 in segmentation configs)')
        mode = (self.test_cfg or {}).get('mode', 'whole')
        if mode not in TEST_MODES:
            raise ValueError(f"test_cfg.mode={mode!r}: one of {TEST_MODES} (flip: test_cfg.flip=True)")

    def extract_feat(self, inputs: Tensor, batch_img_metas=None):
        if not getattr(self.decode_head, 'needs_class_token', False):
            return super().extract_feat(inputs, batch_img_metas)
        if self.with_neck:
            raise ValueError('a head that reads class tokens takes the backbone outputs directly: no neck')
        pairs = self.backbone.get_intermediate_layers(inputs, self.backbone.out_indices, reshape=True,
                                                      return_class_token=True)
        # a bf16 backbone's features reach the fp32 head in fp32
        return [(x.to(inputs.dtype), c.to(inputs.dtype)) for x, c in pairs]

    def _infer(self, inputs: Tensor, batch_img_metas: List[dict]) -> Tensor:
        mode = self.test_cfg.get('mode', 'whole')
        if mode == 'slide':  # an if/elif chain: upstream's second `if` sent 'slide' on to whole (issue 3655)
            return self.slide_inference(inputs, batch_img_metas)
        if mode == 'slide_flip':
            return self.slide_flip_inference(inputs, batch_img_metas)
        if mode == 'whole':
            return self.whole_inference(inputs, batch_img_metas)
        raise ValueError(f'test_cfg.mode={mode!r}: one of {TEST_MODES}')

    def inference(self, inputs: Tensor, batch_img_metas: List[dict]) -> Tensor:
        depth = self._infer(inputs, batch_img_metas)
        if self.test_cfg.get('flip', False) and self.test_cfg.get('mode') != 'slide_flip':
            depth = (depth + self._infer(inputs.flip(dims=(3, )), batch_img_metas).flip(dims=(3, ))) / 2
        return depth


@SEG_MODELS.register_module()
class DepthTTAModel(BaseTTAModel):
    """tools/test.py --tta for depth: the mean of the views' depth maps (each already resized to the image and
    un-flipped by ``postprocess_result``). mmseg's ``SegTTAModel`` merges class scores (``seg_logits``), which a
    depth model does not produce."""

    def merge_preds(self, data_samples_list: List[list]) -> list:
        merged = []
        for views in data_samples_list:
            depth = torch.stack([v.pred_depth_map.data for v in views]).mean(0)
            sample = views[0].new()  # the first view's metainfo and ground truth
            sample.pred_depth_map = PixelData(data=depth)
            merged.append(sample)
        return merged
