# The 1x schedule's shape (warm-up, AdamW, lr x0.1 at 2/3 and 11/12 of the run) in 100 iterations of
# 4 images for a CPU, with evaluation and checkpoints every 50. Seeded, so a tiny run is repeatable.
_base_ = ['./schedule_1x_det.py']
optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=20),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=100, milestones=[67, 92], gamma=0.1),
]
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=100, val_interval=50)
default_hooks = dict(logger=dict(interval=10, log_metric_by_epoch=False),
                     checkpoint=dict(by_epoch=False, interval=50))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
