# COCO instance segmentation with ViT-Adapter's multi-scale training (from DETR / Sparse R-CNN): after
# the flip, either a short side of 480-800 (max 1333), or a short side of 400-600, a random crop of
# 384-600 px and then the 480-800 resize; finally crops of at most 1024x1024 bound the memory of a step.
_base_ = ['./coco_instance.py']
short_sides = [480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800]
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True, poly2mask=False),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomChoice',
         transforms=[
             [dict(type='RandomChoiceResize', scales=[(1333, s) for s in short_sides], keep_ratio=True)],
             [dict(type='RandomChoiceResize', scales=[(1333, 400), (1333, 500), (1333, 600)], keep_ratio=True),
              dict(type='RandomCrop', crop_type='absolute_range', crop_size=(384, 600), allow_negative_crop=True),
              dict(type='RandomChoiceResize', scales=[(1333, s) for s in short_sides], keep_ratio=True)],
         ]),
    dict(type='RandomCrop', crop_type='absolute_range', crop_size=(1024, 1024), allow_negative_crop=True),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
