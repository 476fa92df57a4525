# ImageNet-1k for linear probing, as InternVL did it: RandomResizedCrop + flip for training,
# short edge resized to the crop size + centre crop for evaluation (bicubic), 224 px, 128 images per GPU.
# Layout under data_root: imagenet-1k/{train,val}/<wnid>/*.JPEG (or meta/{train,val}.txt), see
# internvit_dense/datasets/imagenet.py. Other variants: --cfg-options test_dataloader.dataset.variant=real|v2|a|r|sketch
# (the metric scores each by its rule: ReaL label sets, A/R restricted to their 200 classes).
data_root = 'data/imagenet'
img_size = 224
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', size=img_size, interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackClsInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeShortEdge', size=img_size, interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=img_size),
    dict(type='PackClsInputs'),
]
train_dataloader = dict(
    batch_size=128,
    num_workers=8,
    persistent_workers=True,
    pin_memory=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type='ImageNetFolder', data_root=data_root, variant='train', pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=128,
    num_workers=8,
    persistent_workers=True,
    pin_memory=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='ImageNetFolder', data_root=data_root, variant='in1k', pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='LinearProbeAccuracy', topk=(1, 5))
test_evaluator = val_evaluator
