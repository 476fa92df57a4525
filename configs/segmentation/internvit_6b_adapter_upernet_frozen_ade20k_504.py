# Frozen InternViT-6B + ViT-Adapter + UperNet + FCN aux head (InternVL's frozen-ViT adapter run logged 58.1 mIoU):
# the adapter and the heads train, the ViT's weights do not.
_base_ = ['../_base_/models/internvit_adapter_upernet.py', '../_base_/datasets/ade20k_504.py',
          '../_base_/default_runtime.py', '../_base_/schedules/schedule_80k.py']
# The frozen backbone is stored in bf16 (11 GB instead of 22 GB for the 6B; nothing updates it): its weights
# are filled from the checkpoint without an fp32 copy, norms compute in fp32, features reach the fp32 adapter in fp32.
model = dict(backbone=dict(vit=dict(dtype='bfloat16')))
# the level embedding is looked up, not multiplied, like pos_embed
optim_wrapper = dict(paramwise_cfg=dict(no_decay_names=['level_embed']))
