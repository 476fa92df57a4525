# Head tuning (InternVL paper: 54.9 mIoU): frozen InternViT-6B, pyramid neck + UperNet + FCN aux head.
_base_ = ['../_base_/models/internvit_upernet.py', '../_base_/datasets/ade20k_504.py',
          '../_base_/default_runtime.py', '../_base_/schedules/schedule_80k.py']
