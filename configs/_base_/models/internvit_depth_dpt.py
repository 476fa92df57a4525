# DINOv2's DPT depth head on frozen InternViT-6B: 4 blocks reassembled with the "project" readout, fusion,
# 256 channels, ReLU(output) + min depth; mmseg's SiLogLoss (lambda 0.5) + DINOv2's gradient-matching loss
# (weight 0.5, 4 scales). Blocks [11, 23, 35, 47]: evenly spaced, ending at the last (see internvit_depth_linear.py).
_base_ = ['./internvit_depth.py']
model = dict(
    backbone=dict(out_indices=[11, 23, 35, 47]),
    decode_head=dict(
        type='DPTDepthHead',
        in_channels=3200,
        in_index=[0, 1, 2, 3],
        channels=256,
        post_process_channels=[400, 800, 1600, 3200],  # C/8, C/4, C/2, C as DINOv2's
        readout_type='project',
        patch_size=14,
        norm_cfg=None,  # DINOv2's DPT head has no norm in its fusion blocks
        min_depth=1e-3,
        max_depth=10.0,
        align_corners=False,
        loss_decode=[dict(type='SiLogLoss', loss_weight=1.0),
                     dict(type='GradientMatchingLoss', scales=4, loss_weight=0.5)]))
