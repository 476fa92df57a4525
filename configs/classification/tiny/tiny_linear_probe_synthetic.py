# internvit_6b_linear_probe_in1k.py in small: a tiny random InternViT on the synthetic ImageNet-layout set
# (python tools/generate_synthetic_imagenet.py --root data/synthetic_imagenet), 56 px, fp32 on a CPU.
_base_ = ['../internvit_6b_linear_probe_in1k.py', '../../_base_/models/tiny_internvit.py']
data_root = 'data/synthetic_imagenet'
img_size = 56
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
model = dict(
    backbone=dict(arch={{_base_.tiny_arch}}, img_size=img_size, pretrain_size=img_size, init_cfg=None),
    num_classes=10)
train_dataloader = dict(batch_size=32, num_workers=2, pin_memory=False,
                        dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(batch_size=64, num_workers=1, pin_memory=False,
                      dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
optim_wrapper = dict(_delete_=True, type='OptimWrapper',
                     optimizer=dict(type='SGD', lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.0))
default_hooks = dict(logger=dict(interval=5))
env_cfg = dict(dist_cfg=dict(backend='gloo'))
