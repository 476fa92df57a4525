# timm_dinov2_vitl14_upernet_frozen_ade20k_504.py in small: a frozen tiny-width timm DINOv2 ViT, pyramid + UperNet.
_base_ = ['../../_base_/models/internvit_upernet.py', '../../_base_/models/tiny_internvit.py',
          '../../_base_/datasets/synthetic_ade20k.py', '../../_base_/default_runtime.py',
          '../../_base_/schedules/schedule_tiny.py']
model = dict(
    data_preprocessor=dict(size={{_base_.tiny_crop}}),
    backbone=dict(_delete_=True, type='TimmEncoder', model_name='vit_large_patch14_dinov2', img_size=112,
                  out_indices=[0, 1, 2, 3], frozen=True, model_kwargs=dict(embed_dim=96, depth=4, num_heads=4)),
    neck=dict(embed_dim=96),
    decode_head=dict(in_channels=[96] * 4, channels=64, norm_cfg={{_base_.tiny_norm_cfg}}),
    auxiliary_head=dict(in_channels=96, channels=32, norm_cfg={{_base_.tiny_norm_cfg}}),
    test_cfg={{_base_.tiny_test_cfg}})
