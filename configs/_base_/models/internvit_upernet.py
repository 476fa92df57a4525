# InternViT + 4-scale pyramid (mmseg's Feature2Pyramid) + UperNet with an FCN auxiliary head.
_base_ = ['./internvit_encoder_decoder.py']
model = dict(
    backbone=dict(out_indices=[11, 23, 35, 47]),
    # strides 14 -> 3.5, 7, 14, 28 px: x4 and x2 transposed convs, identity, max-pool. Exactly InternVL's
    # pyramid (up1..up4 inside its backbone, with_final_norm=False): ConvTranspose(2,2) -> channel LayerNorm
    # (eps 1e-6, no final norms) -> GELU -> ConvTranspose(2,2); ConvTranspose(2,2); identity; MaxPool(2).
    # Its released files load by renaming keys (backbone.up1.N -> neck.upsample_4x.N, up2 -> upsample_2x).
    neck=dict(type='Feature2Pyramid', embed_dim=3200, rescales=[4, 2, 1, 0.5], norm_cfg=dict(type='LN2d', eps=1e-6)),
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
    # InternVL's auxiliary FCN head: one 3x3 conv 3200 -> 1536 (its configs set channels=1536), BN, ReLU
    auxiliary_head=dict(
        type='FCNHead',
        in_channels=3200,
        in_index=1,
        channels=1536,
        num_convs=1,
        concat_input=False,
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg={{_base_.norm_cfg}},
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4)))
