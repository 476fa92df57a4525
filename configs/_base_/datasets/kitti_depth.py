# KITTI depth, Eigen split (BTS / depth-toolbox split files: "<image> <depth or None> <focal>" per line), sparse
# lidar ground truth in 16-bit PNGs of metres x 256 (0: no point). Layout under data_root (data/kitti):
#   raw/2011_09_26/2011_09_26_drive_0002_sync/image_02/data/*.png          the raw RGB images
#   gt_depth/2011_09_26_drive_0002_sync/proj_depth/groundtruth/image_02/*.png  the annotated depth maps
#   kitti_eigen_train.txt, kitti_eigen_test.txt                             the split files
# Every image is first cut to the KITTI benchmark crop (352 x 1216, KBCrop). Training crop: DINOv2's 352 x 1216 at
# the nearest multiples of 14 that fit: 350 x 1204 = 25 x 86 patches. Test: slide inference with that window
# (2 x 2 windows cover 352 x 1216: every window a whole number of patches), Garg's crop, 1e-3 < gt < 80 m.
dataset_type = 'KITTIDepthDataset'
data_root = 'data/kitti'
crop_size = (350, 1204)
min_depth, max_depth = 1e-3, 80.0
meta_keys = ('img_path', 'depth_map_path', 'ori_shape', 'img_shape', 'pad_shape', 'scale_factor', 'flip',
             'flip_direction', 'category_id')
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadDepthAnnotation', depth_rescale_factor=1 / 256),
    dict(type='KBCrop', height=352, width=1216),
    dict(type='RandomRotate', prob=0.5, degree=1.0, pad_val=0, seg_pad_val=0),  # the toolbox's; 0 = no depth
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs', meta_keys=meta_keys),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadDepthAnnotation', depth_rescale_factor=1 / 256),
    dict(type='KBCrop', height=352, width=1216),
    dict(type='PackSegInputs', meta_keys=meta_keys),
]
# the KITTI configs set model.test_cfg to this (a top-level test_cfg is the test loop's)
kitti_test_cfg = dict(mode='slide', crop_size=crop_size, stride=(14, 14))
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='TestTimeAug', transforms=[
        [dict(type='LoadDepthAnnotation', depth_rescale_factor=1 / 256)],
        [dict(type='KBCrop', height=352, width=1216)],
        [dict(type='RandomFlip', prob=0.0, direction='horizontal'),
         dict(type='RandomFlip', prob=1.0, direction='horizontal')],
        [dict(type='PackSegInputs', meta_keys=meta_keys)]])
]
train_dataloader = dict(
    batch_size=2,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type=dataset_type, data_root=data_root, ann_file='kitti_eigen_train.txt',
                 data_prefix=dict(img_path='raw', depth_map_path='gt_depth'), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, ann_file='kitti_eigen_test.txt', test_mode=True,
                 data_prefix=dict(img_path='raw', depth_map_path='gt_depth'), pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='CheckedDepthMetric', min_depth_eval=min_depth, max_depth_eval=max_depth, crop_type='garg')
test_evaluator = val_evaluator
