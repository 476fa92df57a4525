# internvit_6b_adapter_mask2former_frozen_ade20k_896.py at InternVL's ADE20K crop and protocol (504, batch 2 x 8,
# slide 504 / 322: configs/_base_/datasets/ade20k_504.py), beside internvit_6b_adapter_upernet_frozen_ade20k_504.py.
_base_ = ['../_base_/models/internvit_adapter_mask2former.py', '../_base_/datasets/ade20k_504.py',
          '../_base_/default_runtime.py', '../_base_/schedules/schedule_80k.py']
model = dict(backbone=dict(vit=dict(dtype='bfloat16')))  # img_size 504 and slide 504 / 322: the model base's
optim_wrapper = dict(
    optimizer=dict(lr=2e-5),
    clip_grad=dict(_delete_=True, max_norm=0.01, norm_type=2),
    paramwise_cfg=dict(no_decay_names=['level_embed', 'query_embed', 'query_feat']))
