# The 80k schedule's shape (warm-up then poly, periodic checkpoints and evaluation), shrunk for a CPU.
# Seeded, so a tiny run is repeatable.
_base_ = ['./schedule_80k.py']
optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=30),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=30, end=300),
]
train_cfg = dict(max_iters=300, val_interval=100)
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=100, max_keep_ckpts=2))
randomness = dict(seed=0)
