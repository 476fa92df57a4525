# Cascade Mask R-CNN + FPN on InternViT-6B with a ViT-Adapter: the backbone, FPN and mask head of
# internvit_mask-rcnn_fpn.py; three box stages trained at IoU 0.5 / 0.6 / 0.7 with the box heads of
# ViT-Adapter's (and Swin's) cascade runs: 4 convs + 1 fc with SyncBN, GIoU loss on decoded boxes.
_base_ = ['./internvit_mask-rcnn_fpn.py']
stage_ious = [0.5, 0.6, 0.7]
# each stage sees better-localised proposals, so it regresses smaller, normalised offsets
stage_target_stds = [[0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1], [0.033, 0.033, 0.067, 0.067]]
model = dict(
    type='CascadeRCNN',
    rpn_head=dict(loss_bbox=dict(_delete_=True, type='SmoothL1Loss', beta=1.0 / 9.0, loss_weight=1.0)),
    # merged into the base's roi_head: its RoI extractors and mask head serve every stage unchanged
    roi_head=dict(
        type='CascadeRoIHead',
        num_stages=3,
        stage_loss_weights=[1, 0.5, 0.25],
        # a list replaces the base's single box head: one per stage
        bbox_head=[
            dict(type='ConvFCBBoxHead',
                 num_shared_convs=4,
                 num_shared_fcs=1,
                 in_channels=256,
                 conv_out_channels=256,
                 fc_out_channels=1024,
                 roi_feat_size=7,
                 num_classes=80,
                 bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0] * 4, target_stds=stds),
                 reg_class_agnostic=False,
                 reg_decoded_bbox=True,
                 norm_cfg={{_base_.norm_cfg}},
                 loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
                 loss_bbox=dict(type='GIoULoss', loss_weight=10.0))
            for stds in stage_target_stds
        ]),
    train_cfg=dict(
        rpn=dict(allowed_border=0),
        rpn_proposal=dict(max_per_img=2000),
        rcnn=[
            dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=iou, neg_iou_thr=iou, min_pos_iou=iou,
                               match_low_quality=False, ignore_iof_thr=-1),
                 sampler=dict(type='RandomSampler', num=512, pos_fraction=0.25, neg_pos_ub=-1,
                              add_gt_as_proposals=True),
                 mask_size=28,
                 pos_weight=-1,
                 debug=False)
            for iou in stage_ious
        ]))
