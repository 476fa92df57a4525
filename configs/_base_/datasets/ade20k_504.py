# ADE20K (SceneParsing, 150 classes) at the InternVL crop of 504, 2 images per GPU.
# Put the data set at data/ade/ADEChallengeData2016 (images/ and annotations/ inside), or
# point data_root elsewhere with --cfg-options.
dataset_type = 'CheckedADE20KDataset'  # mmseg's ADE20KDataset + early checks
data_root = 'data/ade/ADEChallengeData2016'
crop_size = (504, 504)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='CheckSegMapSize'),
    dict(type='RandomResize', scale=(2016, 504), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
# InternVL's test protocol (its SETR_Resize + ResizeToMultiple): the short side to 504, the long side as the aspect
# ratio makes it (uncapped), both sides then to a multiple of 14 (bilinear); slide inference 504 / 322 (test_cfg).
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeShortestEdge', scale=504, max_size=2 ** 31 - 1),  # max_size: a number is required; no cap
    dict(type='ResizeToMultiple', size_divisor=14),
    # labels are loaded after the resize: metrics compare at the original resolution
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='CheckSegMapSize'),
    dict(type='PackSegInputs'),
]
# Multi-scale + flip testing (tools/test.py --tta), as ViT-Adapter and mmseg test ADE20K: the test scale
# times each ratio, each also flipped; mmseg's SegTTAModel averages the 12 softmax maps.
img_ratios = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='TestTimeAug', transforms=[
        [dict(type='Resize', scale=(int(2016 * r), int(504 * r)), keep_ratio=True) for r in img_ratios],
        [dict(type='RandomFlip', prob=0.0, direction='horizontal'),
         dict(type='RandomFlip', prob=1.0, direction='horizontal')],
        [dict(type='LoadAnnotations', reduce_zero_label=True)],
        [dict(type='CheckSegMapSize')],
        [dict(type='PackSegInputs')]])
]
train_dataloader = dict(
    batch_size=2,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type=dataset_type, data_root=data_root,
                 data_prefix=dict(img_path='images/training', seg_map_path='annotations/training'),
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root,
                 data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation'),
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
