# DINOv2's linear depth probe on 1 block of frozen InternViT-6B: block 45 of 48 ([44]; why:
# configs/_base_/models/internvit_depth_linear.py), NYU-Depth v2, max depth 10 m.
_base_ = ['../_base_/models/internvit_depth_linear.py', '../_base_/datasets/nyu_depth.py',
          '../_base_/default_runtime_depth.py', '../_base_/schedules/schedule_depth_38k.py']
# The frozen backbone is stored in bf16 (11 GB instead of 22 GB): filled from the checkpoint without an fp32 copy,
# norms in fp32, features to the fp32 head in fp32 (as the segmentation configs).
model = dict(data_preprocessor=dict(size={{_base_.crop_size}}, size_divisor=None),  # padded to the crop
             backbone=dict(dtype='bfloat16'))
