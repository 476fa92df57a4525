# Few-shot row 1/8 of the training images (InternVL paper: 50.0 mIoU): 10k iterations, 200 of them
# warm-up; otherwise the 1/1 row's recipe (internvit_6b_linear_full_ade20k_504_1of1_80k.py).
# ADE20K: 20210 // 8 = 2526 training images.
_base_ = ['./internvit_6b_linear_full_ade20k_504_1of1_80k.py']
max_iters = 10000
warmup_iters = 200
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=warmup_iters, end=max_iters),
]
train_cfg = dict(max_iters=max_iters)
train_dataloader = dict(dataset=dict(subset_denominator=8))
