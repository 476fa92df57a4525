# internvit_6b_dpt_frozen_nyu.py on KITTI (Eigen split): max depth 80 m, the benchmark crop 352 x 1216 cut to
# 350 x 1204 for training and slid over at test (configs/_base_/datasets/kitti_depth.py), Garg's crop.
_base_ = ['../_base_/models/internvit_depth_dpt.py', '../_base_/datasets/kitti_depth.py',
          '../_base_/default_runtime_depth.py', '../_base_/schedules/schedule_depth_38k.py']
model = dict(data_preprocessor=dict(size={{_base_.crop_size}}, size_divisor=None),  # padded to the crop
             backbone=dict(dtype='bfloat16'), decode_head=dict(max_depth=80.0), test_cfg={{_base_.kitti_test_cfg}})
