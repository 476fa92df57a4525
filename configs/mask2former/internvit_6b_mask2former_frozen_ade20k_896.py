# Frozen InternViT-6B + plain pyramid + Mask2Former at 896 px: internvit_6b_adapter_mask2former_frozen_ade20k_896.py
# (ViT-Adapter's 896 recipe) without the adapter. The backbone runs under no_grad in bf16; the pyramid and the
# decoder train.
_base_ = ['../_base_/models/internvit_mask2former.py', '../_base_/datasets/ade20k_896.py',
          '../_base_/default_runtime.py', '../_base_/schedules/schedule_80k.py']
crop_size = (896, 896)
model = dict(
    data_preprocessor=dict(size=crop_size),
    # the position embedding held at the 896 crop's 64 x 64 grid (resampled once, when the checkpoint loads)
    backbone=dict(img_size=896, pretrain_size=896, dtype='bfloat16'),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(512, 512)))
optim_wrapper = dict(
    optimizer=dict(lr=2e-5),
    clip_grad=dict(_delete_=True, max_norm=0.01, norm_type=2),
    paramwise_cfg=dict(no_decay_names=['query_embed', 'query_feat', 'level_embed']))
