# internvit_6b_upernet_lora_ade20k_504.py in small: the tiny InternViT frozen, peft LoRA adapters on its four
# linears (rank 8 of width 96), trained with the pyramid neck, UperNet and aux head; drop path and activation
# checkpointing on, so the tiny run goes through both. Point init_cfg at a pretrained tiny backbone to get
# adapters-only checkpoints (without one, the checkpoints keep the random base weights too).
_base_ = ['./tiny_upernet_frozen_synthetic.py']
model = dict(backbone=dict(frozen=False, drop_path_rate=0.1, with_cp=True,
                           lora=dict(rank=8, alpha=16, dropout=0.05,
                                     targets=('attn.qkv', 'attn.proj', 'mlp.fc1', 'mlp.fc2'))))
