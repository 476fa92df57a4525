# InternViT-6B + ViT-Adapter (4 maps at strides 4/8/16/32, 3200 channels) + Mask2Former for semantic segmentation.
# The decoder follows ViT-Adapter's segmentation/configs/ade20k/mask2former_beitv2_adapter_large_896_80k_ade20k_ss.py
# (feat/out channels 1024, 200 queries, 6 pixel-decoder layers of 32-head deformable attention, 9 decoder layers
# of 32 heads, FFN 4096; losses, matcher and point sampling of its mask2former_beit.py base)
# in mmseg 1.x's key names, as mmseg's configs/mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py writes them:
# mmseg's Mask2FormerHead on mmdet's MSDeformAttnPixelDecoder and Mask2FormerTransformerDecoder. Our head type is
# a subclass that fixes slide inference (internvit_dense/models/heads/mask2former_head.py); importing it (the
# runtime's custom_imports of internvit_dense.models) imports mmdet.models, which mmseg's Mask2Former configs import.
_base_ = ['./internvit_adapter_upernet.py']
num_classes = 150
decoder_dims = 1024  # ViT-Adapter's for BEiT-L (embed 1024); the 3200-channel maps are projected to it (1x1 conv + GN)
model = dict(
    auxiliary_head=None,  # Mask2Former's deep supervision (a loss after each decoder layer) replaces it
    decode_head=dict(
        _delete_=True,
        type='SlideSafeMask2FormerHead',
        in_channels=[3200, 3200, 3200, 3200],
        strides=[4, 8, 16, 32],
        feat_channels=decoder_dims,
        out_channels=decoder_dims,
        num_classes=num_classes,
        num_queries=200,
        num_transformer_feat_level=3,
        align_corners=False,
        pixel_decoder=dict(
            type='mmdet.MSDeformAttnPixelDecoder',
            num_outs=3,
            norm_cfg=dict(type='GN', num_groups=32),
            act_cfg=dict(type='ReLU'),
            encoder=dict(
                num_layers=6,
                layer_cfg=dict(
                    self_attn_cfg=dict(embed_dims=decoder_dims, num_heads=32, num_levels=3, num_points=4,
                                       im2col_step=64, dropout=0.0, batch_first=True, norm_cfg=None, init_cfg=None),
                    ffn_cfg=dict(embed_dims=decoder_dims, feedforward_channels=4 * decoder_dims, num_fcs=2,
                                 ffn_drop=0.0, act_cfg=dict(type='ReLU', inplace=True))),
                init_cfg=None),
            positional_encoding=dict(num_feats=decoder_dims // 2, normalize=True),
            init_cfg=None),
        enforce_decoder_input_project=False,
        positional_encoding=dict(num_feats=decoder_dims // 2, normalize=True),
        transformer_decoder=dict(
            return_intermediate=True,
            num_layers=9,
            layer_cfg=dict(
                self_attn_cfg=dict(embed_dims=decoder_dims, num_heads=32, attn_drop=0.0, proj_drop=0.0,
                                   dropout_layer=None, batch_first=True),
                cross_attn_cfg=dict(embed_dims=decoder_dims, num_heads=32, attn_drop=0.0, proj_drop=0.0,
                                    dropout_layer=None, batch_first=True),
                ffn_cfg=dict(embed_dims=decoder_dims, feedforward_channels=4 * decoder_dims, num_fcs=2,
                             act_cfg=dict(type='ReLU', inplace=True), ffn_drop=0.0, dropout_layer=None,
                             add_identity=True)),
            init_cfg=None),
        # class weight 0.1 for the last entry, "no object"
        loss_cls=dict(type='mmdet.CrossEntropyLoss', use_sigmoid=False, loss_weight=2.0, reduction='mean',
                      class_weight=[1.0] * num_classes + [0.1]),
        loss_mask=dict(type='mmdet.CrossEntropyLoss', use_sigmoid=True, reduction='mean', loss_weight=5.0),
        loss_dice=dict(type='mmdet.DiceLoss', use_sigmoid=True, activate=True, reduction='mean', naive_dice=True,
                       eps=1.0, loss_weight=5.0),
        train_cfg=dict(
            # the mask losses are computed on 12544 (= 112 x 112) points per mask, drawn where the prediction is
            # least certain (importance sampling), not on every pixel
            num_points=12544,
            oversample_ratio=3.0,
            importance_sample_ratio=0.75,
            assigner=dict(
                type='mmdet.HungarianAssigner',
                match_costs=[
                    dict(type='mmdet.ClassificationCost', weight=2.0),
                    dict(type='mmdet.CrossEntropyLossCost', weight=5.0, use_sigmoid=True),
                    dict(type='mmdet.DiceCost', weight=5.0, pred_act=True, eps=1.0)]),
            sampler=dict(type='mmdet.MaskPseudoSampler'))))
