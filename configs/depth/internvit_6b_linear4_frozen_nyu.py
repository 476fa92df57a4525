# DINOv2's linear depth probe on 4 blocks of frozen InternViT-6B ("lin. 4" of DINOv2's NYU table: ViT-g 0.298 RMSE):
# blocks [11, 23, 35, 47] (why: configs/_base_/models/internvit_depth_linear.py), NYU-Depth v2, max depth 10 m.
_base_ = ['./internvit_6b_linear1_frozen_nyu.py']
model = dict(backbone=dict(out_indices={{_base_.linear4_out_indices}}), decode_head=dict(in_index=[0, 1, 2, 3]))
