# internvit_6b_dpt_frozen_nyu.py in small: a frozen tiny InternViT (4 blocks, 96 wide), DINOv2's DPT depth head
# (32 channels instead of 256) with SiLog + gradient matching, on the synthetic NYU set.
_base_ = ['../../_base_/models/internvit_depth_dpt.py', '../../_base_/models/tiny_internvit.py',
          '../../_base_/datasets/synthetic_nyu.py', '../../_base_/default_runtime_depth.py',
          '../../_base_/schedules/schedule_depth_tiny.py']
model = dict(
    backbone=dict(arch={{_base_.tiny_arch}}, img_size=112, pretrain_size=112, out_indices=[0, 1, 2, 3],
                  init_cfg=None),
    decode_head=dict(in_channels=96, channels=32, post_process_channels=[12, 24, 48, 96]))
