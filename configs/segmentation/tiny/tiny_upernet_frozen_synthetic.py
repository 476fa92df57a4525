# internvit_6b_upernet_frozen_ade20k_504.py in small: a frozen tiny InternViT, pyramid + UperNet + aux.
_base_ = ['../../_base_/models/internvit_upernet.py', '../../_base_/models/tiny_internvit.py',
          '../../_base_/datasets/synthetic_ade20k.py', '../../_base_/default_runtime.py',
          '../../_base_/schedules/schedule_tiny.py']
model = dict(
    data_preprocessor=dict(size={{_base_.tiny_crop}}),
    backbone=dict(arch={{_base_.tiny_arch}}, img_size=112, pretrain_size=112, out_indices=[0, 1, 2, 3],
                  init_cfg=None),
    neck=dict(embed_dim=96),
    decode_head=dict(in_channels=[96] * 4, channels=64, norm_cfg={{_base_.tiny_norm_cfg}}),
    auxiliary_head=dict(in_channels=96, channels=32, norm_cfg={{_base_.tiny_norm_cfg}}),
    test_cfg={{_base_.tiny_test_cfg}})
