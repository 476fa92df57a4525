# InternViT + ViT-Adapter (4 maps at strides 4/8/16/32, 3200 channels) + UperNet with an FCN auxiliary head.
# The heads are internvit_upernet.py's (UperNet 1536 ch, FCN aux on level 1) except the auxiliary head's width:
# 256 channels, mmseg's and ViT-Adapter's (InternVL's plain-ViT UperNet uses 1536; its adapter head settings
# are not in our reference notes). The adapter builds the pyramid itself: no neck.
_base_ = ['./internvit_upernet.py']
model = dict(
    backbone=dict(
        _delete_=True,
        type='InternViTAdapter',
        vit=dict(
            arch='6b',
            img_size=504,
            drop_path_rate=0.0,
            frozen=True,
            # a Hugging Face repository, fetched once into its cache; a local path works too (docs/checkpoints.md)
            init_cfg=dict(type='Pretrained', checkpoint='OpenGVLab/InternViT-6B-224px')),
        interaction_indexes=[[0, 11], [12, 23], [24, 35], [36, 47]],
        num_heads=25,  # value width 3200 * 0.5 = 1600 -> 64 per head
        n_points=4,
        deform_ratio=0.5,
        cffn_ratio=0.25,
        extra_extractors=2,
        conv_inplanes=64,
        norm_cfg={{_base_.norm_cfg}},
        # the frozen ViT's blocks still backpropagate (into the injectors): checkpoint them
        with_cp=True),
    neck=None,
    auxiliary_head=dict(channels=256))
