# schedule_depth_38k.py's shape (one cycle, best RMSE kept) shrunk for a CPU; seeded, so a tiny run is repeatable.
_base_ = ['./schedule_depth_38k.py']
optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = [dict(type='OneCycleLR', eta_max=1e-3, total_steps=300, pct_start=0.1, by_epoch=False)]
train_cfg = dict(max_iters=300, val_interval=300)
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=300, max_keep_ckpts=1))
randomness = dict(seed=0)
