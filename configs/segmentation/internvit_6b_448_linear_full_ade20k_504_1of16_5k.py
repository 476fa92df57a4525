# As internvit_6b_linear_full_ade20k_504_1of16_5k.py, from a 448px checkpoint (v1.0/v1.2/v1.5/v2.5) used with 45 blocks:
# the head on the last of them (out_indices [44]).
_base_ = ['./internvit_6b_linear_full_ade20k_504_1of16_5k.py']
model = dict(backbone=dict(arch='6b-448', out_indices=[44],
                           init_cfg=dict(checkpoint='OpenGVLab/InternViT-6B-448px-V1-5')))
