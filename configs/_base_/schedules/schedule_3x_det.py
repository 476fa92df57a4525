# COCO 3x (36 epochs, lr x0.1 after epochs 27 and 33), the schedule of ViT-Adapter's multi-scale runs.
_base_ = ['./schedule_1x_det.py']
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', by_epoch=True, begin=0, end=36, milestones=[27, 33], gamma=0.1),
]
train_cfg = dict(max_epochs=36)
