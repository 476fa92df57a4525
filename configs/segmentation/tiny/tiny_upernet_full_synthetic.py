# internvit_6b_upernet_full_ade20k_504.py in small: the tiny InternViT trained with layer-wise lr decay.
_base_ = ['./tiny_upernet_frozen_synthetic.py']
model = dict(backbone=dict(frozen=False, drop_path_rate=0.1, with_cp=True))
optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=0.95))
