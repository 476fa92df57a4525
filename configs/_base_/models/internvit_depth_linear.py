# DINOv2's linear depth probe (BNHead, classify=True) on frozen InternViT-6B: BN + 1x1 conv on [patch tokens,
# class token] of 1 or 4 blocks, upsampled x4, 256 uniform bins over min..max depth, "linear" normalisation;
# mmseg's SiLogLoss (its lambda is 0.5: sqrt(mean(d^2) - 0.5 mean(d)^2), d the log error, per image).
# Blocks for 48: one block = [44], block 45 of 48: InternVL's own linear probe (segmentation) reads it, and the 448 px
# releases keep only the first 45 blocks (the last 3 are specific to the 224 px contrastive stage); four blocks =
# [11, 23, 35, 47], evenly spaced and ending at the last block, as DINOv2's depth probe spaces its (ViT-g 40 blocks:
# 9, 19, 29, 39; ViT-L 24: 4, 11, 17, 23) and as InternVL's own 4-block heads read InternViT-6B.
_base_ = ['./internvit_depth.py']
model = dict(
    backbone=dict(out_indices=[44]),
    decode_head=dict(
        type='BNBinsDepthHead',
        in_channels=3200,
        in_index=[0],
        use_class_token=True,
        upsample=4,
        n_bins=256,
        norm_strategy='linear',
        with_bn=True,
        norm_cfg={{_base_.norm_cfg}},
        min_depth=1e-3,
        max_depth=10.0,
        align_corners=False,
        loss_decode=dict(type='SiLogLoss', loss_weight=1.0)))
linear4_out_indices = [11, 23, 35, 47]
