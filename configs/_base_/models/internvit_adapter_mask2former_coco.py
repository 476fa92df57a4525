# InternViT-6B + ViT-Adapter + mmdet's Mask2Former for COCO panoptic segmentation (80 things + 53 stuff; the
# instance configs set num_stuff_classes=0 and panoptic_on=False). The decoder (256 wide, 100 queries, 6
# pixel-decoder layers, 9 decoder layers), losses, matcher and point sampling follow ViT-Adapter's
# detection/configs/mask2former/mask2former_beitv2_adapter_large_16x1_3x_coco-panoptic.py (BEiTv2-L: PQ 58.4), in
# mmdet 3.x's key names as its configs/mask2former/mask2former_r50_8xb2-lsj-50e_coco-panoptic.py writes them.
# The adapter is internvit_mask-rcnn_fpn.py's: 16 px patches, 16x16-token windows, 4 global blocks.
num_things_classes = 80
num_stuff_classes = 53
num_classes = num_things_classes + num_stuff_classes
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    type='Mask2Former',
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_size_divisor=32,
        pad_mask=True,
        mask_pad_value=0,
        pad_seg=True,
        seg_pad_value=255),
    backbone=dict(
        type='InternViTAdapter',
        vit=dict(
            arch='6b',
            img_size=800,
            patch_size=16,
            pretrain_size=256,
            drop_path_rate=0.0,
            frozen=True,
            window_size=16,
            global_blocks=[11, 23, 35, 47],
            init_cfg=dict(type='Pretrained', checkpoint='pretrained/intern_vit_6b_224px.pth')),
        interaction_indexes=[[0, 11], [12, 23], [24, 35], [36, 47]],
        num_heads=25,  # value width 3200 * 0.5 = 1600 -> 64 per head
        n_points=4,
        deform_ratio=0.5,
        cffn_ratio=0.25,
        extra_extractors=2,
        conv_inplanes=64,
        norm_cfg=norm_cfg,
        with_cp=True),  # the frozen ViT's blocks backpropagate into the injectors: checkpoint them
    panoptic_head=dict(
        type='Mask2FormerHead',
        in_channels=[3200, 3200, 3200, 3200],
        strides=[4, 8, 16, 32],
        feat_channels=256,
        out_channels=256,
        num_things_classes=num_things_classes,
        num_stuff_classes=num_stuff_classes,
        num_queries=100,
        num_transformer_feat_level=3,
        pixel_decoder=dict(
            type='MSDeformAttnPixelDecoder',
            num_outs=3,
            norm_cfg=dict(type='GN', num_groups=32),
            act_cfg=dict(type='ReLU'),
            encoder=dict(
                num_layers=6,
                layer_cfg=dict(
                    self_attn_cfg=dict(embed_dims=256, num_heads=8, num_levels=3, num_points=4, dropout=0.0,
                                       batch_first=True),
                    ffn_cfg=dict(embed_dims=256, feedforward_channels=1024, num_fcs=2, ffn_drop=0.0,
                                 act_cfg=dict(type='ReLU', inplace=True)))),
            positional_encoding=dict(num_feats=128, normalize=True)),
        enforce_decoder_input_project=False,
        positional_encoding=dict(num_feats=128, normalize=True),
        transformer_decoder=dict(
            return_intermediate=True,
            num_layers=9,
            layer_cfg=dict(
                self_attn_cfg=dict(embed_dims=256, num_heads=8, dropout=0.0, batch_first=True),
                cross_attn_cfg=dict(embed_dims=256, num_heads=8, dropout=0.0, batch_first=True),
                ffn_cfg=dict(embed_dims=256, feedforward_channels=2048, num_fcs=2, ffn_drop=0.0,
                             act_cfg=dict(type='ReLU', inplace=True))),
            init_cfg=None),
        # class weight 0.1 for the last entry, "no object"
        loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=2.0, reduction='mean',
                      class_weight=[1.0] * num_classes + [0.1]),
        loss_mask=dict(type='CrossEntropyLoss', use_sigmoid=True, reduction='mean', loss_weight=5.0),
        loss_dice=dict(type='DiceLoss', use_sigmoid=True, activate=True, reduction='mean', naive_dice=True, eps=1.0,
                       loss_weight=5.0)),
    panoptic_fusion_head=dict(type='MaskFormerFusionHead', num_things_classes=num_things_classes,
                              num_stuff_classes=num_stuff_classes, loss_panoptic=None, init_cfg=None),
    train_cfg=dict(
        num_points=12544,
        oversample_ratio=3.0,
        importance_sample_ratio=0.75,
        assigner=dict(type='HungarianAssigner',
                      match_costs=[dict(type='ClassificationCost', weight=2.0),
                                   dict(type='CrossEntropyLossCost', weight=5.0, use_sigmoid=True),
                                   dict(type='DiceCost', weight=5.0, pred_act=True, eps=1.0)]),
        sampler=dict(type='MaskPseudoSampler')),
    test_cfg=dict(panoptic_on=True, semantic_on=False, instance_on=True, max_per_image=100, iou_thr=0.8,
                  filter_low_score=True),
    init_cfg=None)
