# Frozen InternViT-6B + ViT-Adapter + mmdet's Mask2Former, COCO instance segmentation (80 things, no stuff): the
# decoder of ViT-Adapter's detection/configs/mask2former/mask2former_beitv2_adapter_large_16x1_3x_coco-panoptic.py
# (256 wide, 100 queries; AdamW 1e-4, weight decay 0.05, clip_grad 0.01, 3x) with mmdet 3.x's large-scale jittering
# at 1024 (configs/mask2former/mask2former_r50_8xb2-lsj-50e_coco.py: resize 0.1-2.0, crop 1024, FilterAnnotations).
_base_ = ['../_base_/models/internvit_adapter_mask2former_coco.py', '../_base_/datasets/coco_instance.py',
          '../_base_/default_runtime_det.py', '../_base_/schedules/schedule_3x_det.py']
num_things_classes = 80
image_size = (1024, 1024)
model = dict(
    data_preprocessor=dict(
        pad_seg=False,
        batch_augments=[dict(type='BatchFixedSizePad', size=image_size, img_pad_value=0, pad_mask=True,
                             mask_pad_value=0, pad_seg=False)]),
    # stored in bf16 (nothing updates it), norms in fp32, features leave in fp32
    backbone=dict(vit=dict(img_size=1024, dtype='bfloat16')),
    panoptic_head=dict(num_things_classes=num_things_classes, num_stuff_classes=0,
                       loss_cls=dict(class_weight=[1.0] * num_things_classes + [0.1])),
    panoptic_fusion_head=dict(num_things_classes=num_things_classes, num_stuff_classes=0),
    test_cfg=dict(panoptic_on=False))
train_pipeline = [
    dict(type='LoadImageFromFile', to_float32=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomResize', scale=image_size, ratio_range=(0.1, 2.0), resize_type='Resize', keep_ratio=True),
    dict(type='RandomCrop', crop_size=image_size, crop_type='absolute', recompute_bbox=True, allow_negative_crop=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-5, 1e-5), by_mask=True),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
optim_wrapper = dict(clip_grad=dict(_delete_=True, max_norm=0.01, norm_type=2),
                     paramwise_cfg=dict(no_decay_names=['level_embed', 'query_embed', 'query_feat']))
