# A frozen InternViT-6B with a trained ViT-Adapter, FPN and Mask R-CNN heads: InternVL's frozen-backbone
# detection recipe (1x schedule, AdamW lr 1e-4, weight decay 0.05, 16 images per step) with the adapter
# in place of the simple feature pyramid (that one is internvit_6b_sfp_mask-rcnn_fpn_frozen_1x_coco.py).
# Windows of 16x16 tokens, global attention in blocks 11, 23, 35 and 47.
_base_ = ['../_base_/models/internvit_mask-rcnn_fpn.py', '../_base_/datasets/coco_instance.py',
          '../_base_/default_runtime_det.py', '../_base_/schedules/schedule_1x_det.py']
# The frozen backbone is stored in bf16 (11 GB instead of 22 GB for the 6B; nothing updates it): its weights
# are filled from the checkpoint without an fp32 copy, norms compute in fp32, features reach the fp32 adapter in fp32.
model = dict(backbone=dict(vit=dict(dtype='bfloat16')))
# the level embedding is looked up, not multiplied, like pos_embed
optim_wrapper = dict(paramwise_cfg=dict(no_decay_names=['level_embed']))
