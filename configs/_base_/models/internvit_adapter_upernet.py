# InternViT + ViT-Adapter (4 maps at strides 4/8/16/32, 3200 channels) + UperNet with an FCN auxiliary head.
# The heads mirror internvit_upernet.py (UperNet 1536 ch, FCN aux on level 1): InternVL's own adapter
# head settings are not in our reference notes.
norm_cfg = dict(type='SyncBN', requires_grad=True)
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=(504, 504))
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='InternViTAdapter',
        vit=dict(
            arch='6b',
            img_size=504,
            drop_path_rate=0.0,
            frozen=True,
            init_cfg=dict(type='Pretrained', checkpoint='pretrained/intern_vit_6b_224px.pth')),
        interaction_indexes=[[0, 11], [12, 23], [24, 35], [36, 47]],
        num_heads=25,  # value width 3200 * 0.5 = 1600 -> 64 per head
        n_points=4,
        deform_ratio=0.5,
        cffn_ratio=0.25,
        extra_extractors=2,
        conv_inplanes=64,
        norm_cfg=norm_cfg,
        # the frozen ViT's blocks still backpropagate (into the injectors): checkpoint them
        with_cp=True),
    decode_head=dict(
        type='UPerHead',
        in_channels=[3200, 3200, 3200, 3200],
        in_index=[0, 1, 2, 3],
        pool_scales=(1, 2, 3, 6),
        channels=1536,
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg=norm_cfg,
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
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4)),
    train_cfg=dict(),
    test_cfg=dict(mode='slide', crop_size=(504, 504), stride=(322, 322)))
