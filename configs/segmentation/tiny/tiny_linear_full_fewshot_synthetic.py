# The few-shot rows (internvit_6b_linear_full_ade20k_504_1of*_*k.py) in small: the tiny InternViT fully
# fine-tuned (drop path, layer-wise lr decay 0.95, weight decay 0.05) with the BN + 1x1 conv head on its last
# block, on 1/4 of the synthetic training images (200 // 4 = 50) for a quarter of the tiny schedule, with
# the few-shot warm-up share (100 of 5000 iterations -> 2 of 75).
_base_ = ['./tiny_linear_frozen_synthetic.py']
model = dict(backbone=dict(out_indices=[3], frozen=False, drop_path_rate=0.1, with_cp=True))
optim_wrapper = dict(optimizer=dict(weight_decay=0.05), paramwise_cfg=dict(layer_decay_rate=0.95))
max_iters = 75
warmup_iters = 2
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=warmup_iters, end=max_iters),
]
train_cfg = dict(max_iters=max_iters, val_interval=25)
default_hooks = dict(checkpoint=dict(interval=25))
train_dataloader = dict(dataset=dict(subset_denominator=4))
