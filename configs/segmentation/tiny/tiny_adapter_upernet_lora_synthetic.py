# internvit_6b_adapter_upernet_lora_ade20k_504.py in small: frozen tiny InternViT with LoRA adapters + ViT-Adapter.
_base_ = ['./tiny_adapter_upernet_frozen_synthetic.py']
model = dict(backbone=dict(vit=dict(frozen=False, drop_path_rate=0.1, lora=dict(rank=8, alpha=16, dropout=0.05)),
                           with_cp=True))
