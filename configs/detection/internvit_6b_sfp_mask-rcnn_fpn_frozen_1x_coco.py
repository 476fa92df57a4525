# InternVL's own COCO detector: a frozen InternViT-6B, its last block through a simple feature pyramid
# (ViTDet) and FPN into Mask R-CNN; all 48 blocks attend within 16x16-token windows; 1x schedule,
# AdamW lr 1e-4, weight decay 0.05, 16 images per step. (InternVL trained it with DeepSpeed ZeRO-1 in
# fp16; here --amp gives mixed precision.)
_base_ = ['../_base_/models/internvit_sfp_mask-rcnn_fpn.py', '../_base_/datasets/coco_instance.py',
          '../_base_/default_runtime_det.py', '../_base_/schedules/schedule_1x_det.py']
# The frozen backbone is stored in bf16 (11 GB instead of 22 GB for the 6B; nothing updates it): its weights
# are filled from the checkpoint without an fp32 copy, norms compute in fp32, features reach the fp32 head in fp32.
model = dict(backbone=dict(dtype='bfloat16'))
