# Mask R-CNN + FPN on InternViT-6B with a ViT-Adapter (4 maps at strides 4/8/16/32, 3200 channels).
# The heads are mmdetection's standard Mask R-CNN ones (80 COCO classes).
#
# Detection runs InternViT at 16 px patches, as InternVL's detection code does: the 14 px patch kernel is
# resized to 16 when the checkpoint loads, so the token grid lands exactly on the strides 16 and 32 of
# the FPN, anchors and RoIAlign. pretrain_size=256 keeps the checkpoint's 16x16 position grid unresampled
# (224 / 14 = 256 / 16); it is interpolated to each input's grid.
#
# Window attention (ViTDet): a 1333x800 input is 84x50 tokens, so blocks attend within 16x16-token windows
# (the pre-training grid, as ViTDet's 14 = 224 / 16 for its ViTs; InternVL's detection uses 16 too), the
# grid padded to whole windows, except the four global blocks at the ends of the adapter's interactions,
# through which information crosses windows (ViTDet's 4 evenly spaced global blocks).
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    type='MaskRCNN',
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_mask=True,
        pad_size_divisor=32),
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
        # even a frozen ViT's blocks backpropagate here (into the injectors): checkpoint them
        with_cp=True),
    neck=dict(type='FPN', in_channels=[3200, 3200, 3200, 3200], out_channels=256, num_outs=5),
    rpn_head=dict(
        type='RPNHead',
        in_channels=256,
        feat_channels=256,
        anchor_generator=dict(type='AnchorGenerator', scales=[8], ratios=[0.5, 1.0, 2.0],
                              strides=[4, 8, 16, 32, 64]),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0] * 4, target_stds=[1.0] * 4),
        loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
    # Fp32RoIAlign and fp32_nms: mmcv's RoIAlign and nms, in fp32 for bf16 inputs (--amp, DeepSpeed bf16), which
    # their kernels do not take (internvit_dense/models/fp32_ops.py)
    roi_head=dict(
        type='StandardRoIHead',
        bbox_roi_extractor=dict(type='SingleRoIExtractor',
                                roi_layer=dict(type='Fp32RoIAlign', output_size=7, sampling_ratio=0),
                                out_channels=256, featmap_strides=[4, 8, 16, 32]),
        bbox_head=dict(
            type='Shared2FCBBoxHead',
            in_channels=256,
            fc_out_channels=1024,
            roi_feat_size=7,
            num_classes=80,
            bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0] * 4, target_stds=[0.1, 0.1, 0.2, 0.2]),
            reg_class_agnostic=False,
            loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
            loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
        mask_roi_extractor=dict(type='SingleRoIExtractor',
                                roi_layer=dict(type='Fp32RoIAlign', output_size=14, sampling_ratio=0),
                                out_channels=256, featmap_strides=[4, 8, 16, 32]),
        mask_head=dict(
            type='FCNMaskHead',
            num_convs=4,
            in_channels=256,
            conv_out_channels=256,
            num_classes=80,
            loss_mask=dict(type='CrossEntropyLoss', use_mask=True, loss_weight=1.0))),
    train_cfg=dict(
        rpn=dict(
            assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.7, neg_iou_thr=0.3, min_pos_iou=0.3,
                          match_low_quality=True, ignore_iof_thr=-1),
            sampler=dict(type='RandomSampler', num=256, pos_fraction=0.5, neg_pos_ub=-1,
                         add_gt_as_proposals=False),
            allowed_border=-1,
            pos_weight=-1,
            debug=False),
        rpn_proposal=dict(nms_pre=2000, max_per_img=1000, nms=dict(type='fp32_nms', iou_threshold=0.7),
                          min_bbox_size=0),
        rcnn=dict(
            assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.5,
                          match_low_quality=True, ignore_iof_thr=-1),
            sampler=dict(type='RandomSampler', num=512, pos_fraction=0.25, neg_pos_ub=-1, add_gt_as_proposals=True),
            mask_size=28,
            pos_weight=-1,
            debug=False)),
    test_cfg=dict(
        rpn=dict(nms_pre=1000, max_per_img=1000, nms=dict(type='fp32_nms', iou_threshold=0.7), min_bbox_size=0),
        rcnn=dict(score_thr=0.05, nms=dict(type='fp32_nms', iou_threshold=0.5), max_per_img=100,
                  mask_thr_binary=0.5)))
