# NYU-Depth v2 in mmseg's NYUDataset layout: images/{train,test}/*.jpg, annotations/{train,test}/*.png (16-bit,
# millimetres). Put it at data/nyu or point data_root elsewhere with --cfg-options. Depth 1e-3..10 m.
# Training crop: DINOv3's 416 x 544 (DINOv2's NYU recipe) at the nearest multiples of 14 that fit in NYU's 480 x 640:
# 420 x 546 = 30 x 39 patches. Test: the whole 480 x 640 image resized to 490 x 644 (35 x 46 patches), the depth
# loaded after the resize (metrics at the original resolution), Eigen's crop, 1e-3 < gt < 10 m.
dataset_type = 'NYUDataset'
data_root = 'data/nyu'
crop_size = (420, 546)
min_depth, max_depth = 1e-3, 10.0
meta_keys = ('img_path', 'depth_map_path', 'ori_shape', 'img_shape', 'pad_shape', 'scale_factor', 'flip',
             'flip_direction', 'category_id')
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadDepthAnnotation', depth_rescale_factor=1e-3),
    # the depth toolbox's NYU rotation; corners rotated in get depth 0 (no depth), never mmseg's default 255
    dict(type='RandomRotate', prob=0.5, degree=2.5, pad_val=0, seg_pad_val=0),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs', meta_keys=meta_keys),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeToMultiple', size_divisor=14),
    dict(type='LoadDepthAnnotation', depth_rescale_factor=1e-3),
    dict(type='PackSegInputs', meta_keys=meta_keys),
]
# tools/test.py --tta: the image and its mirror, depth maps averaged (DepthTTAModel in default_runtime_depth.py)
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='TestTimeAug', transforms=[
        [dict(type='ResizeToMultiple', size_divisor=14)],
        [dict(type='RandomFlip', prob=0.0, direction='horizontal'),
         dict(type='RandomFlip', prob=1.0, direction='horizontal')],
        [dict(type='LoadDepthAnnotation', depth_rescale_factor=1e-3)],
        [dict(type='PackSegInputs', meta_keys=meta_keys)]])
]
train_dataloader = dict(
    batch_size=2,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type=dataset_type, data_root=data_root,
                 data_prefix=dict(img_path='images/train', depth_map_path='annotations/train'),
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, test_mode=True,
                 data_prefix=dict(img_path='images/test', depth_map_path='annotations/test'),
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='CheckedDepthMetric', min_depth_eval=min_depth, max_depth_eval=max_depth, crop_type='eigen')
test_evaluator = val_evaluator
