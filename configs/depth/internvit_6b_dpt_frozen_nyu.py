# DINOv2's DPT depth head on frozen InternViT-6B, blocks [11, 23, 35, 47], NYU-Depth v2, max depth 10 m.
_base_ = ['../_base_/models/internvit_depth_dpt.py', '../_base_/datasets/nyu_depth.py',
          '../_base_/default_runtime_depth.py', '../_base_/schedules/schedule_depth_38k.py']
model = dict(data_preprocessor=dict(size={{_base_.crop_size}}, size_divisor=None),  # padded to the crop
             backbone=dict(dtype='bfloat16'))  # frozen: stored in bf16 (see internvit_6b_linear1_frozen_nyu.py)
