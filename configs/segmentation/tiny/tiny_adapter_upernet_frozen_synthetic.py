# internvit_6b_adapter_upernet_frozen_ade20k_504.py in small: a frozen tiny InternViT + ViT-Adapter + UperNet + aux.
_base_ = ['../../_base_/models/internvit_adapter_upernet.py', '../../_base_/models/tiny_internvit.py',
          '../../_base_/datasets/synthetic_ade20k.py', '../../_base_/default_runtime.py',
          '../../_base_/schedules/schedule_tiny.py']
model = dict(
    data_preprocessor=dict(size={{_base_.tiny_crop}}),
    backbone=dict(vit=dict(arch={{_base_.tiny_arch}}, img_size=112, pretrain_size=112, init_cfg=None),
                  interaction_indexes=[[0, 0], [1, 1], [2, 2], [3, 3]],
                  num_heads=3,  # value width 96 * 0.5 = 48 -> 16 per head
                  conv_inplanes=16, norm_cfg={{_base_.tiny_norm_cfg}}, with_cp=False),
    decode_head=dict(in_channels=[96] * 4, channels=64, norm_cfg={{_base_.tiny_norm_cfg}}),
    auxiliary_head=dict(in_channels=96, channels=32, norm_cfg={{_base_.tiny_norm_cfg}}),
    test_cfg={{_base_.tiny_test_cfg}})
optim_wrapper = dict(paramwise_cfg=dict(no_decay_names=['level_embed']))
