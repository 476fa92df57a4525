# Full tuning with the ViT-Adapter: InternViT-6B trained too (layer-wise lr decay 0.95, drop path 0.4, as in
# internvit_6b_upernet_full_ade20k_504.py), the adapter and heads at the base rate. InternVL reports no number
# for this combination; its full-tuning UperNet recipe is applied to the adapter model unchanged.
_base_ = ['./internvit_6b_adapter_upernet_frozen_ade20k_504.py']
# The ViT trains: its weights stay fp32 master weights (not the frozen config's bf16; DeepSpeed bf16 keeps its own
# bf16 copy for compute).
model = dict(backbone=dict(vit=dict(frozen=False, dtype='float32', drop_path_rate=0.4)))
optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=0.95))
