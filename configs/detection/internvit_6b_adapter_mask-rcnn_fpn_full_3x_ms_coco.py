# InternViT-6B + ViT-Adapter + Mask R-CNN, fully fine-tuned: ViT-Adapter's 3x multi-scale COCO recipe
# (36 epochs, DETR-style multi-scale crops, AdamW lr 1e-4, weight decay 0.05) with InternVL's full-tuning
# settings for the 6B (layer-wise lr decay 0.95, drop path 0.4).
_base_ = ['../_base_/models/internvit_mask-rcnn_fpn.py', '../_base_/datasets/coco_instance_ms.py',
          '../_base_/default_runtime_det.py', '../_base_/schedules/schedule_3x_det.py']
model = dict(backbone=dict(vit=dict(frozen=False, drop_path_rate=0.4)))
optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=0.95, no_decay_names=['level_embed']))
