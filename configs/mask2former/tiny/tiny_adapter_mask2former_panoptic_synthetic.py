# internvit_6b_adapter_mask2former_frozen_panoptic_3x_coco.py in small: mmdet's Mask2Former for panoptic segmentation
# (panoptic_head + MaskFormerFusionHead, PQ through mmdet's CocoPanopticMetric, which needs panopticapi) on the tiny
# adapter and decoder of tiny_adapter_mask2former_instance_synthetic.py, on the synthetic COCO set's panoptic layout
# (tools/generate_synthetic_coco.py: 4 things, 3 stuff) and the tiny detection schedule. The data pipeline and
# evaluators are those of mmdet 3.x's configs/mask2former/mask2former_r50_8xb2-lsj-50e_coco-panoptic.py at 160 px,
# without its large-scale jittering (the synthetic images are all 128-160 px).
_base_ = ['./tiny_adapter_mask2former_instance_synthetic.py']
num_things_classes = 4
num_stuff_classes = 3
num_classes = num_things_classes + num_stuff_classes
data_root = 'data/synthetic_coco/'
metainfo = dict(classes=('ball', 'crate', 'cone', 'gem', 'sky', 'wall', 'floor'),
                thing_classes=('ball', 'crate', 'cone', 'gem'), stuff_classes=('sky', 'wall', 'floor'),
                palette=[(220, 20, 60), (30, 80, 220), (20, 160, 60), (230, 200, 20), (70, 130, 180),
                         (140, 140, 140), (150, 100, 60)])
model = dict(
    panoptic_head=dict(num_things_classes=num_things_classes, num_stuff_classes=num_stuff_classes,
                       loss_cls=dict(class_weight=[1.0] * num_classes + [0.1])),
    panoptic_fusion_head=dict(num_things_classes=num_things_classes, num_stuff_classes=num_stuff_classes),
    test_cfg=dict(panoptic_on=True))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadPanopticAnnotations', with_bbox=True, with_mask=True, with_seg=True),
    dict(type='Resize', scale=(160, 160), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(160, 160), keep_ratio=True),
    dict(type='LoadPanopticAnnotations', with_bbox=True, with_mask=True, with_seg=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    dataset=dict(_delete_=True, type='CocoPanopticDataset', data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/panoptic_train2017.json',
                 data_prefix=dict(img='train2017/', seg='annotations/panoptic_train2017/'),
                 filter_cfg=dict(filter_empty_gt=True, min_size=16), pipeline=train_pipeline))
val_dataloader = dict(
    dataset=dict(_delete_=True, type='CocoPanopticDataset', data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/panoptic_val2017.json',
                 data_prefix=dict(img='val2017/', seg='annotations/panoptic_val2017/'), test_mode=True,
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = [
    # nproc: processes for PQ when outfile_prefix is set (the per-image path of the default runs in the loop)
    dict(type='CocoPanopticMetric', ann_file=data_root + 'annotations/panoptic_val2017.json',
         seg_prefix=data_root + 'annotations/panoptic_val2017/', nproc=2),
    dict(type='CocoMetric', ann_file=data_root + 'annotations/instances_val2017.json', metric=['bbox', 'segm']),
]
test_evaluator = val_evaluator
default_hooks = dict(checkpoint=dict(save_best='coco_panoptic/PQ', rule='greater'))
