# internvit_6b_linear_lora_ade20k_504_1of*_*k.py in small: the tiny few-shot row with LoRA adapters instead of
# full tuning (no layer-wise decay, as the 6B LoRA rows).
_base_ = ['./tiny_linear_full_fewshot_synthetic.py']
model = dict(backbone=dict(lora=dict(rank=8, alpha=16, dropout=0.05)))
optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=1.0))
