# internvit_6b_linear4_frozen_nyu.py in small: a frozen tiny InternViT (4 blocks, 96 wide), DINOv2's linear depth
# probe on [patch, class token] of all 4 blocks, on the synthetic NYU set (tools/generate_synthetic_nyu.py).
# 64 bins instead of 256: the 1x1 conv into the bins at 4x the grid is most of a CPU step.
_base_ = ['../../_base_/models/internvit_depth_linear.py', '../../_base_/models/tiny_internvit.py',
          '../../_base_/datasets/synthetic_nyu.py', '../../_base_/default_runtime_depth.py',
          '../../_base_/schedules/schedule_depth_tiny.py']
model = dict(
    backbone=dict(arch={{_base_.tiny_arch}}, img_size=112, pretrain_size=112, out_indices=[0, 1, 2, 3],
                  init_cfg=None),
    decode_head=dict(in_channels=96, in_index=[0, 1, 2, 3], n_bins=64, norm_cfg={{_base_.tiny_norm_cfg}}))
