# LoRA tuning, between head tuning (frozen, 54.9 mIoU) and full tuning (58.9) of the InternVL paper: InternViT-6B
# frozen in bf16 (memory-mapped from the pretrained file, as in the frozen config), peft LoRA adapters (fp32) on
# its four linears of every block, trained with the pyramid neck, UperNet and the auxiliary head.
# Checkpoints hold the adapters, neck and heads (~0.5 GB, not the 11 GB backbone) and the identity of the
# pretrained file; tools/test.py, tools/infer.py and init_model take them with this config's pretrained file;
# tools/convert_checkpoint.py --merge-lora writes a plain checkpoint of the frozen config.
# The recipe's optimizer unchanged (AdamW 4e-5, weight decay 0.05, 1500 warm-up then poly over 80k; the one lr
# both anchors trained at) and no layer-wise decay: decay guards pretrained weights from large updates in
# the lower blocks, here they are frozen and each adapter starts at zero (mmpretrain's LoRA recipe has none).
# Drop path 0 as in the frozen recipe: the blocks' weights do not train. with_cp: the backward runs through
# all 48 blocks now, whose activations checkpointing keeps to one block's (docs/lora.md: one 80 GB GPU).
_base_ = ['./internvit_6b_upernet_frozen_ade20k_504.py', '../_base_/lora/lora_r16.py']
model = dict(backbone=dict(frozen=False, with_cp=True, drop_path_rate=0.0, lora={{_base_.lora}}))
optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=1.0))
