# As internvit_6b_adapter_upernet_frozen_ade20k_504.py, from a 448px checkpoint (v1.0/v1.2/v1.5/v2.5),
# used with 45 blocks.
_base_ = ['./internvit_6b_adapter_upernet_frozen_ade20k_504.py']
model = dict(backbone=dict(vit=dict(arch='6b-448', init_cfg=dict(checkpoint='OpenGVLab/InternViT-6B-448px-V1-5')),
                           interaction_indexes=[[0, 11], [12, 22], [23, 33], [34, 44]]))
