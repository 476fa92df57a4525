# internvit_6b_sfp_mask-rcnn_fpn_frozen_1x_coco.py in small, for CPUs and tests: a tiny InternViT at 16 px
# patches, simple feature pyramid + FPN + Mask R-CNN, on the synthetic COCO set (4 classes, <= 160 px).
# The ViT trains too (there is no pretrained tiny ViT to keep frozen), with layer-wise lr decay. Its
# 10x10-token grid is split into 4x4-token windows (padded to 12x12), block 3 global, so the tiny run
# goes through the windowed path the 6B runs take. Every width and sample count is cut to fit 2 cores.
# Trained from scratch, this plain ViT has not found the objects by the end of the tiny schedule (bbox AP
# 0.001 after 300 iterations): ViTDet's pyramid leans on a pre-trained ViT. The ViT-Adapter variant, with
# its stride-4 conv stem, learns in 100 (tiny_adapter_mask-rcnn_fpn_synthetic.py, bbox AP ~0.3).
_base_ = ['../../_base_/models/internvit_sfp_mask-rcnn_fpn.py', '../../_base_/models/tiny_internvit.py',
          '../../_base_/datasets/synthetic_coco.py', '../../_base_/default_runtime_det.py',
          '../../_base_/schedules/schedule_tiny_det.py']
num_classes = 4
fpn_channels = 64
model = dict(
    backbone=dict(arch={{_base_.tiny_arch}}, img_size=160, pretrain_size=160, out_indices=[3, 3, 3, 3],
                  frozen=False, window_size=4, global_blocks=[3], init_cfg=None),
    neck=[
        dict(type='Feature2Pyramid', embed_dim=96, rescales=[4, 2, 1, 0.5], norm_cfg=dict(type='LN2d')),
        dict(type='FPN', in_channels=[96, 96, 96, 96], out_channels=fpn_channels, num_outs=5),
    ],
    rpn_head=dict(in_channels=fpn_channels, feat_channels=fpn_channels),
    # RoIAlign's CPU backward dominates a tiny step: 2x2 samples per bin instead of adaptive ones
    roi_head=dict(
        bbox_roi_extractor=dict(roi_layer=dict(sampling_ratio=2), out_channels=fpn_channels),
        bbox_head=dict(in_channels=fpn_channels, fc_out_channels=256, num_classes=num_classes),
        mask_roi_extractor=dict(roi_layer=dict(sampling_ratio=2), out_channels=fpn_channels),
        mask_head=dict(num_convs=2, in_channels=fpn_channels, conv_out_channels=fpn_channels,
                       num_classes=num_classes)),
    train_cfg=dict(rpn=dict(sampler=dict(num=128)),
                   rpn_proposal=dict(nms_pre=500, max_per_img=200),
                   rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(rpn=dict(nms_pre=300, max_per_img=100)))
optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=0.9))
