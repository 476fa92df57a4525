# LoRA settings shared by the InternViT-6B LoRA configs (internvit_dense/models/backbones/lora.py, through peft).
# Targets: InternVL's own vision LoRA (wrap_backbone_lora: attn.qkv, attn.proj, mlp.fc1, mlp.fc2, dropout 0.05);
# rank 16 / alpha 32 instead of its r=128 / 256: 39M adapter parameters over 48 blocks of width 3200 (0.7% of
# the 5.9B), whose fp32 AdamW state is 0.6 GB. Leaves take it with {{_base_.lora}}.
lora = dict(rank=16, alpha=32, dropout=0.05, targets=('attn.qkv', 'attn.proj', 'mlp.fc1', 'mlp.fc2'), blocks=None)
