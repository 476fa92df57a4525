# DINOv3's NYU depth recipe (DINOv2's evaluation at the same length): AdamW 3e-4 with a one-cycle schedule over
# 38.4k iterations; the best RMSE is kept. Batch: 2 per GPU x 8 GPUs, as the segmentation configs.
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=3e-4, betas=(0.9, 0.999), weight_decay=1e-2),
    clip_grad=None)
param_scheduler = [
    dict(type='OneCycleLR', eta_max=3e-4, total_steps=38400, pct_start=0.05, by_epoch=False),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=38400, val_interval=1600)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=1600, max_keep_ckpts=3,
                    save_best='rmse', rule='less'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
