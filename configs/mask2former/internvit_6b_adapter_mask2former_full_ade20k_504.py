# internvit_6b_adapter_mask2former_full_ade20k_896.py at InternVL's ADE20K crop and protocol (504), beside
# internvit_6b_adapter_upernet_full_ade20k_504.py.
_base_ = ['./internvit_6b_adapter_mask2former_frozen_ade20k_504.py']
model = dict(backbone=dict(vit=dict(frozen=False, dtype='float32', drop_path_rate=0.4)))
optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=0.95))
