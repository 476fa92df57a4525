# Frozen InternViT-6B + ViT-Adapter + mmdet's Mask2Former, COCO panoptic segmentation (80 things + 53 stuff; PQ
# through mmdet's CocoPanopticMetric, which imports panopticapi: tools/setup_env.sh installs panopticapi-lite==0.2.0,
# cocodataset's git-only code on PyPI, with --no-deps because its metadata pins numpy<2; its code runs on numpy 2).
# ViT-Adapter's detection/configs/mask2former/mask2former_beitv2_adapter_large_16x1_3x_coco-panoptic.py (BEiTv2-L:
# PQ 58.4): decoder 256 wide, 100 queries, AdamW 1e-4, weight decay 0.05, clip_grad 0.01, 3x; the data pipeline
# and evaluators of mmdet 3.x's configs/mask2former/mask2former_r50_8xb2-lsj-50e_coco-panoptic.py.
_base_ = ['./internvit_6b_adapter_mask2former_frozen_instance_3x_coco.py']
num_things_classes = 80
num_stuff_classes = 53
num_classes = num_things_classes + num_stuff_classes
image_size = (1024, 1024)
data_root = 'data/coco/'
model = dict(
    data_preprocessor=dict(
        pad_seg=True, seg_pad_value=255,
        batch_augments=[dict(type='BatchFixedSizePad', size=image_size, img_pad_value=0, pad_mask=True,
                             mask_pad_value=0, pad_seg=True, seg_pad_value=255)]),
    panoptic_head=dict(num_things_classes=num_things_classes, num_stuff_classes=num_stuff_classes,
                       loss_cls=dict(class_weight=[1.0] * num_classes + [0.1])),
    panoptic_fusion_head=dict(num_things_classes=num_things_classes, num_stuff_classes=num_stuff_classes),
    test_cfg=dict(panoptic_on=True))
train_pipeline = [
    dict(type='LoadImageFromFile', to_float32=True),
    dict(type='LoadPanopticAnnotations', with_bbox=True, with_mask=True, with_seg=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomResize', scale=image_size, ratio_range=(0.1, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=image_size, crop_type='absolute', recompute_bbox=True, allow_negative_crop=True),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(1333, 800), keep_ratio=True),
    dict(type='LoadPanopticAnnotations', with_bbox=True, with_mask=True, with_seg=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    dataset=dict(_delete_=True, type='CocoPanopticDataset', data_root=data_root,
                 ann_file='annotations/panoptic_train2017.json',
                 data_prefix=dict(img='train2017/', seg='annotations/panoptic_train2017/'),
                 filter_cfg=dict(filter_empty_gt=True, min_size=32), pipeline=train_pipeline))
val_dataloader = dict(
    dataset=dict(_delete_=True, type='CocoPanopticDataset', data_root=data_root,
                 ann_file='annotations/panoptic_val2017.json',
                 data_prefix=dict(img='val2017/', seg='annotations/panoptic_val2017/'), test_mode=True,
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = [
    dict(type='CocoPanopticMetric', ann_file=data_root + 'annotations/panoptic_val2017.json',
         seg_prefix=data_root + 'annotations/panoptic_val2017/'),
    dict(type='CocoMetric', ann_file=data_root + 'annotations/instances_val2017.json', metric=['bbox', 'segm']),
]
test_evaluator = val_evaluator
default_hooks = dict(checkpoint=dict(save_best='coco_panoptic/PQ'))
