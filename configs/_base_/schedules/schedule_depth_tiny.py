# schedule_depth_38k.py's shape (one cycle, best RMSE kept) shrunk for a CPU: 80 iterations of 4 images (1.6 passes
# over the 200 synthetic training images). Seeded, so a tiny run is repeatable.
_base_ = ['./schedule_depth_38k.py']
optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = [dict(type='OneCycleLR', eta_max=1e-3, total_steps=80, pct_start=0.1, by_epoch=False)]
train_cfg = dict(max_iters=80, val_interval=80)
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=80, max_keep_ckpts=1))
randomness = dict(seed=0)
