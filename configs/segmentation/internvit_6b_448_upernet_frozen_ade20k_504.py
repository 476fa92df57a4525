# As internvit_6b_upernet_frozen_ade20k_504.py, from a 448px checkpoint (v1.0/v1.2/v1.5/v2.5), used with 45 blocks.
_base_ = ['./internvit_6b_upernet_frozen_ade20k_504.py']
model = dict(backbone=dict(arch='6b-448', out_indices=[11, 22, 33, 44],
                           init_cfg=dict(checkpoint='OpenGVLab/InternViT-6B-448px-V1-5')))
