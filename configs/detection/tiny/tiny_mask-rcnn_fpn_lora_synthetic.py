# internvit_6b_sfp_mask-rcnn_fpn_lora_1x_coco.py in small: the tiny windowed InternViT frozen with LoRA adapters,
# simple feature pyramid + FPN + Mask R-CNN (no layer-wise decay, as the 6B LoRA configs).
_base_ = ['./tiny_mask-rcnn_fpn_synthetic.py']
model = dict(backbone=dict(with_cp=True, lora=dict(rank=8, alpha=16, dropout=0.05)))
optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=1.0))
