# internvit_6b_adapter_cascade-mask-rcnn_fpn_full_3x_ms_coco.py in small: the tiny InternViT + ViT-Adapter of
# tiny_adapter_mask-rcnn_fpn_synthetic.py under Cascade Mask R-CNN, on the synthetic COCO set.
_base_ = ['../../_base_/models/internvit_cascade-mask-rcnn_fpn.py', '../../_base_/models/tiny_internvit.py',
          '../../_base_/datasets/synthetic_coco.py', '../../_base_/default_runtime_det.py',
          '../../_base_/schedules/schedule_tiny_det.py']
num_classes = 4
fpn_channels = 64
# as the cascade base's (a {{_base_.*}} reference cannot be iterated while the config is parsed)
stage_ious = [0.5, 0.6, 0.7]
stage_target_stds = [[0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1], [0.033, 0.033, 0.067, 0.067]]
model = dict(
    backbone=dict(
        vit=dict(arch={{_base_.tiny_arch}}, img_size=160, pretrain_size=160, frozen=False, window_size=4,
                 global_blocks=[3], init_cfg=None),
        interaction_indexes=[[0, 0], [1, 1], [2, 2], [3, 3]],
        num_heads=3,  # value width 96 * 0.5 = 48 -> 16 per head
        conv_inplanes=16,
        norm_cfg={{_base_.tiny_norm_cfg}},
        with_cp=False),
    neck=dict(in_channels=[96, 96, 96, 96], out_channels=fpn_channels),
    rpn_head=dict(in_channels=fpn_channels, feat_channels=fpn_channels),
    roi_head=dict(
        # RoIAlign's CPU backward dominates a tiny step: 2x2 samples per bin instead of adaptive ones
        bbox_roi_extractor=dict(roi_layer=dict(sampling_ratio=2), out_channels=fpn_channels),
        bbox_head=[
            dict(type='ConvFCBBoxHead', num_shared_convs=2, num_shared_fcs=1, in_channels=fpn_channels,
                 conv_out_channels=fpn_channels, fc_out_channels=256, roi_feat_size=7, num_classes=num_classes,
                 bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0] * 4, target_stds=stds),
                 reg_class_agnostic=False, reg_decoded_bbox=True, norm_cfg={{_base_.tiny_norm_cfg}},
                 loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
                 loss_bbox=dict(type='GIoULoss', loss_weight=10.0))
            for stds in stage_target_stds
        ],
        mask_roi_extractor=dict(roi_layer=dict(sampling_ratio=2), out_channels=fpn_channels),
        mask_head=dict(num_convs=2, in_channels=fpn_channels, conv_out_channels=fpn_channels,
                       num_classes=num_classes)),
    train_cfg=dict(
        rpn=dict(sampler=dict(num=128)),
        rpn_proposal=dict(nms_pre=500, max_per_img=200),
        rcnn=[
            dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=iou, neg_iou_thr=iou, min_pos_iou=iou,
                               match_low_quality=False, ignore_iof_thr=-1),
                 sampler=dict(type='RandomSampler', num=64, pos_fraction=0.25, neg_pos_ub=-1,
                              add_gt_as_proposals=True),
                 mask_size=28, pos_weight=-1, debug=False)
            for iou in stage_ious
        ]),
    test_cfg=dict(rpn=dict(nms_pre=300, max_per_img=100)))
optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=0.9, no_decay_names=['level_embed']))
