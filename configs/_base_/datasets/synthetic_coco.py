# The synthetic set of tools/generate_synthetic_coco.py: COCO's layout and JSON format, 4 classes,
# images of 128-160 px used at (up to) 160 px, so every size of coco_instance.py divided by 5-8.
_base_ = ['./coco_instance.py']
data_root = 'data/synthetic_coco/'
metainfo = dict(classes=('ball', 'crate', 'cone', 'gem'),
                palette=[(220, 20, 60), (30, 80, 220), (20, 160, 60), (230, 200, 20)])
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True, poly2mask=False),
    dict(type='Resize', scale=(160, 160), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(160, 160), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True, poly2mask=False),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(batch_size=4, num_workers=2,
                        dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=train_pipeline,
                                     filter_cfg=dict(filter_empty_gt=True, min_size=16)))
val_dataloader = dict(num_workers=1,
                      dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator
