# The linear-probing recipe (internvit_6b_linear_frozen_ade20k_504.py) with another encoder: a frozen
# DINOv2 ViT-L/14 from timm, BN + 1x1 conv on its last block. Same data, schedule and head.
_base_ = ['../_base_/models/internvit_linear.py', '../_base_/models/timm_dinov2_vitl14.py',
          '../_base_/datasets/ade20k_504.py', '../_base_/default_runtime.py', '../_base_/schedules/schedule_80k.py']
model = dict(
    backbone={{_base_.timm_linear_backbone}},
    decode_head=dict(in_channels={{_base_.timm_dims}}, channels={{_base_.timm_dims}}))
optim_wrapper = dict(optimizer=dict(weight_decay=0.0))
