# The synthetic set of tools/generate_synthetic_nyu.py: NYU's layout and depth coding (16-bit millimetres),
# 120 x 160 images (NYU's 480 x 640 / 4). Training crop 112 x 154 = 8 x 11 patches of 14 px; test: the whole
# image resized to 126 x 168 (9 x 12 patches), Eigen's crop as fractions of the image, 1e-3 < gt < 10 m.
_base_ = ['./nyu_depth.py']
data_root = 'data/synthetic_nyu'
crop_size = (112, 154)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadDepthAnnotation', depth_rescale_factor=1e-3),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='PackSegInputs', meta_keys={{_base_.meta_keys}}),
]
train_dataloader = dict(batch_size=4, num_workers=2, persistent_workers=True,
                        dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(num_workers=1, persistent_workers=True, dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
