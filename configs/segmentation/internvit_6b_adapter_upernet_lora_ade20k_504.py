# The ViT-Adapter UperNet (internvit_6b_adapter_upernet_frozen_ade20k_504.py, InternVL's frozen-ViT adapter run:
# 58.1 mIoU) with peft LoRA adapters in its bf16 InternViT-6B: the adapter, its LoRA and the heads train.
# Optimizer and schedule as the frozen adapter config (AdamW 4e-5, no layer decay: see
# internvit_6b_upernet_lora_ade20k_504.py); with_cp on the ViT blocks, whose backward already ran in the
# frozen-ViT adapter (the injector's gradients pass through them).
_base_ = ['./internvit_6b_adapter_upernet_frozen_ade20k_504.py', '../_base_/lora/lora_r16.py']
model = dict(backbone=dict(with_cp=True, vit=dict(frozen=False, drop_path_rate=0.0, lora={{_base_.lora}})))
