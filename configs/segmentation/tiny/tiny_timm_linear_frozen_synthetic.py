# timm_dinov2_vitl14_linear_frozen_ade20k_504.py in small: a frozen tiny-width timm DINOv2 ViT, BN + 1x1 conv.
_base_ = ['../../_base_/models/internvit_linear.py', '../../_base_/models/tiny_internvit.py',
          '../../_base_/datasets/synthetic_ade20k.py', '../../_base_/default_runtime.py',
          '../../_base_/schedules/schedule_tiny.py']
model = dict(
    data_preprocessor=dict(size={{_base_.tiny_crop}}),
    backbone=dict(_delete_=True, type='TimmEncoder', model_name='vit_large_patch14_dinov2', img_size=112,
                  out_indices=[3], frozen=True, model_kwargs=dict(embed_dim=96, depth=4, num_heads=4)),
    decode_head=dict(in_channels=96, channels=96, norm_cfg={{_base_.tiny_norm_cfg}}),
    test_cfg={{_base_.tiny_test_cfg}})
optim_wrapper = dict(optimizer=dict(weight_decay=0.0))
