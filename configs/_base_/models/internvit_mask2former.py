# InternViT-6B + the plain 4-scale pyramid (internvit_upernet.py's: mmseg's Feature2Pyramid on blocks 12/24/36/48)
# + the Mask2Former decoder of internvit_adapter_mask2former.py: no adapter, the cheapest strong recipe for a frozen
# 6B (its blocks run without a graph; only the pyramid and the decoder train). The pyramid's strides are 3.5, 7, 14,
# 28 px; the pixel decoder reads sizes off the maps, `strides` only names the levels.
_base_ = ['./internvit_adapter_mask2former.py']
model = dict(
    backbone=dict(
        _delete_=True,
        type='InternViT',
        arch='6b',
        img_size=504,
        pretrain_size=504,
        out_indices=[11, 23, 35, 47],
        drop_path_rate=0.0,
        frozen=True,
        with_cp=False,
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/intern_vit_6b_224px.pth')),
    neck=dict(_delete_=True, type='Feature2Pyramid', embed_dim=3200, rescales=[4, 2, 1, 0.5], norm_cfg=dict(type='LN2d', eps=1e-6)))
