# InternViT + BN/1x1-conv head: the linear-probing recipe (frozen backbone, block 45 of 48).
# BNLinearHead is InternVL's FCNHead(num_convs=0, concat_input=False, with_norm=True) exactly: a BatchNorm
# (SyncBN, eps 1e-5, affine) on the 3200 input channels, then the 1x1 conv_seg; its 'decode_head.norm' is
# our 'decode_head.bn' when its released files load.
_base_ = ['./internvit_encoder_decoder.py']
model = dict(
    backbone=dict(out_indices=[44]),
    decode_head=dict(
        type='BNLinearHead',
        in_channels=3200,
        channels=3200,
        in_index=0,
        num_classes=150,
        dropout_ratio=0.0,
        norm_cfg={{_base_.norm_cfg}},
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)))
