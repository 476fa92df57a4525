# internvit_6b_adapter_mask-rcnn_fpn_full_3x_ms_coco.py with Cascade Mask R-CNN (three box stages at
# IoU 0.5 / 0.6 / 0.7, 4conv1fc box heads with GIoU loss), as ViT-Adapter's cascade runs.
_base_ = ['../_base_/models/internvit_cascade-mask-rcnn_fpn.py', '../_base_/datasets/coco_instance_ms.py',
          '../_base_/default_runtime_det.py', '../_base_/schedules/schedule_3x_det.py']
model = dict(backbone=dict(vit=dict(frozen=False, drop_path_rate=0.4)))
optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=0.95, no_decay_names=['level_embed']))
