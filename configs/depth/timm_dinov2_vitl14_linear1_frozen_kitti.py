# timm_dinov2_vitl14_linear1_frozen_nyu.py on KITTI (Eigen split): max depth 80 m, benchmark crop, slide test,
# Garg crop.
_base_ = ['../_base_/models/internvit_depth_linear.py', '../_base_/models/timm_dinov2_vitl14.py',
          '../_base_/datasets/kitti_depth.py', '../_base_/default_runtime_depth.py',
          '../_base_/schedules/schedule_depth_38k.py']
model = dict(data_preprocessor=dict(size={{_base_.crop_size}}, size_divisor=None),  # padded to the crop
             backbone={{_base_.timm_linear_backbone}},
             decode_head=dict(in_channels={{_base_.timm_dims}}, max_depth=80.0), test_cfg={{_base_.kitti_test_cfg}})
