# The comparison: internvit_6b_linear1_frozen_nyu.py's head and recipe on DINOv2 ViT-L/14 (timm, frozen), its
# last block ([23]: DINOv2's 1-block probe reads the last). NYU-Depth v2.
_base_ = ['../_base_/models/internvit_depth_linear.py', '../_base_/models/timm_dinov2_vitl14.py',
          '../_base_/datasets/nyu_depth.py', '../_base_/default_runtime_depth.py',
          '../_base_/schedules/schedule_depth_38k.py']
model = dict(data_preprocessor=dict(size={{_base_.crop_size}}, size_divisor=None),  # padded to the crop
             backbone={{_base_.timm_linear_backbone}}, decode_head=dict(in_channels={{_base_.timm_dims}}))
