# Full tuning of internvit_6b_adapter_mask2former_frozen_ade20k_896.py: InternViT-6B trains too. ViT-Adapter's 896
# recipe decays the lr by 0.9 per block over BEiT-L's 24 (no separate backbone multiplier: the decay is it); over
# InternViT-6B's 48 blocks InternVL's 0.95 spans the same range (0.95 ** 49 = 0.08, 0.9 ** 25 = 0.07). Drop path
# 0.4, InternVL's for full tuning (ViT-Adapter: 0.3 for 24 blocks).
_base_ = ['./internvit_6b_adapter_mask2former_frozen_ade20k_896.py']
# fp32 master weights (DeepSpeed bf16 keeps its own bf16 copy for compute)
model = dict(backbone=dict(vit=dict(frozen=False, dtype='float32', drop_path_rate=0.4)))
optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=0.95))
