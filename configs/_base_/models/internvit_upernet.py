# InternViT + 4-scale pyramid (mmseg's Feature2Pyramid) + UperNet with an FCN auxiliary head.
_base_ = ['./internvit_encoder_decoder.py']
model = dict(
    backbone=dict(out_indices=[11, 23, 35, 47]),
    # strides 14 -> 3.5, 7, 14, 28 px: x4 and x2 transposed convs, identity, max-pool
    neck=dict(type='Feature2Pyramid', embed_dim=3200, rescales=[4, 2, 1, 0.5], norm_cfg=dict(type='LN2d')),
    decode_head=dict(
        type='UPerHead',
        in_channels=[3200, 3200, 3200, 3200],
        in_index=[0, 1, 2, 3],
        pool_scales=(1, 2, 3, 6),
        channels=1536,
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg={{_base_.norm_cfg}},
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=dict(
        type='FCNHead',
        in_channels=3200,
        in_index=1,
        channels=256,
        num_convs=1,
        concat_input=False,
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg={{_base_.norm_cfg}},
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4)))
