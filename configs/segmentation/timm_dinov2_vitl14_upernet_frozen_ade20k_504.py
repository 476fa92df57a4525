# The head-tuning recipe (internvit_6b_upernet_frozen_ade20k_504.py) with another encoder: a frozen
# DINOv2 ViT-L/14 from timm, blocks 6/12/18/24 -> pyramid -> UperNet + FCN aux. Same data, schedule and heads.
_base_ = ['../_base_/models/internvit_upernet.py', '../_base_/models/timm_dinov2_vitl14.py',
          '../_base_/datasets/ade20k_504.py', '../_base_/default_runtime.py', '../_base_/schedules/schedule_80k.py']
model = dict(
    backbone={{_base_.timm_upernet_backbone}},
    neck=dict(embed_dim={{_base_.timm_dims}}),
    decode_head=dict(in_channels=[{{_base_.timm_dims}}] * 4),
    auxiliary_head=dict(in_channels={{_base_.timm_dims}}))
