# Full tuning (InternVL paper: 58.9 mIoU): InternViT-6B trained with layer-wise lr decay 0.95.
_base_ = ['./internvit_6b_upernet_frozen_ade20k_504.py']
# The backbone trains: its weights stay fp32 master weights (not the frozen config's bf16; DeepSpeed bf16 keeps its
# own bf16 copy for compute).
model = dict(backbone=dict(frozen=False, dtype='float32', drop_path_rate=0.4, with_cp=True))
optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=0.95))
