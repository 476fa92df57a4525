# Head tuning (InternVL paper: 54.9 mIoU): frozen InternViT-6B, pyramid neck + UperNet + FCN aux head.
_base_ = ['../_base_/models/internvit_upernet.py', '../_base_/datasets/ade20k_504.py',
          '../_base_/default_runtime.py', '../_base_/schedules/schedule_80k.py']
# The frozen backbone is stored in bf16 (11 GB instead of 22 GB for the 6B; nothing updates it): its weights
# are filled from the checkpoint without an fp32 copy, norms compute in fp32, features reach the fp32 head in fp32.
model = dict(backbone=dict(dtype='bfloat16'))
