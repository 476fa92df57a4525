# InternVL's COCO detector (internvit_6b_sfp_mask-rcnn_fpn_frozen_1x_coco.py: frozen InternViT-6B, simple feature
# pyramid, FPN, Mask R-CNN, 16x16-token windows, 1x schedule, AdamW 1e-4) with peft LoRA adapters (fp32) in its
# bf16 backbone: the adapters, pyramid, FPN and heads train. Its optimizer unchanged, no layer-wise decay and
# drop path 0 (the blocks' weights do not train; see configs/segmentation/internvit_6b_upernet_lora_ade20k_504.py).
_base_ = ['./internvit_6b_sfp_mask-rcnn_fpn_frozen_1x_coco.py', '../_base_/lora/lora_r16.py']
model = dict(backbone=dict(frozen=False, with_cp=True, drop_path_rate=0.0, lora={{_base_.lora}}))
