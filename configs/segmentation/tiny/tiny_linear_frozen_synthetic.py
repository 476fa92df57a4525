# internvit_6b_linear_frozen_ade20k_504.py in small: a frozen tiny InternViT, BN + 1x1 conv head.
_base_ = ['../../_base_/models/internvit_linear.py', '../../_base_/models/tiny_internvit.py',
          '../../_base_/datasets/synthetic_ade20k.py', '../../_base_/default_runtime.py',
          '../../_base_/schedules/schedule_tiny.py']
model = dict(
    data_preprocessor=dict(size={{_base_.tiny_crop}}),
    backbone=dict(arch={{_base_.tiny_arch}}, img_size=112, pretrain_size=112, out_indices=[2], init_cfg=None),
    decode_head=dict(in_channels=96, channels=96, norm_cfg={{_base_.tiny_norm_cfg}}),
    test_cfg={{_base_.tiny_test_cfg}})
optim_wrapper = dict(optimizer=dict(weight_decay=0.0))
